"""Fraud family (torch side): build the network + data, pick the cost threshold, write the report."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import torch
from torch.nn import functional as F

from deepapps.apps.finance.fraud.data import TabularDataModule
from deepapps.apps.finance.fraud.features import LABELS
from deepapps.apps.finance.fraud.model import create_model, served_module
from deepapps.apps.finance.fraud.scoring import cost_threshold, decision_metrics, fraud_metrics
from deepapps.core.errors import ConfigError
from deepapps.core.pipelines import Built
from deepapps.core.tasks.classification import ClassificationTask

log = logging.getLogger("deepapps.fraud")


class FraudTask(ClassificationTask):
    """ClassificationTask whose loss can be focal: (1 - p_t)^gamma * weighted cross-entropy."""

    def __init__(self, *args, focal_gamma: float = 0.0, **kwargs):
        super().__init__(*args, **kwargs)
        self.focal_gamma = focal_gamma

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.focal_gamma <= 0:
            return super().loss(logits, target)
        logits = logits.float()  # (B, 2)
        ce = F.cross_entropy(logits, target, weight=self.class_weights, reduction="none")  # (B,)
        p_t = logits.softmax(-1).gather(1, target[:, None]).squeeze(1)
        weight = self.class_weights[target] if self.class_weights is not None else torch.ones_like(ce)
        return ((1 - p_t) ** self.focal_gamma * ce).sum() / weight.sum()


class AutoencoderTask(ClassificationTask):
    """Trains TabularAutoencoder on reconstruction error: of normal rows only (`train_on="normal"`)
    or of every row, labels unused (`"all"`). Validation ranks rows by the error (val/auprc)."""

    def __init__(self, *args, train_on: str = "normal", **kwargs):
        super().__init__(*args, **kwargs)
        if train_on not in ("normal", "all"):
            raise ConfigError(f"--model.ae_train_on {train_on}: choose normal or all")
        self.train_on = train_on

    def reconstruction_loss(self, inputs: tuple, target: torch.Tensor, normal_only: bool) -> torch.Tensor:
        error = self.net.reconstruction_error(*self.net.embed(*inputs))  # (B,)
        if normal_only:
            error = error[target == 0]
        return error.mean() if error.numel() else error.sum()

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        *inputs, target = batch
        loss = self.reconstruction_loss(inputs, target, self.train_on == "normal")
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(target))
        return loss

    def _evaluate(self, batch: tuple, metrics, prefix: str) -> None:
        *inputs, target = batch
        self.log(f"{prefix}/loss", self.reconstruction_loss(inputs, target, True), batch_size=len(target), sync_dist=True)
        metrics.update(self.probabilities(self(*inputs).float()), target)


def _task(built: Built, cfg, config: dict, class_weights: list[float] | None) -> ClassificationTask:
    hparams = {"config": config, "inputs": built.inputs, "preprocess": built.preprocess, "weights": built.weights}
    if cfg.model.arch == "autoencoder":
        return AutoencoderTask(built.net, built.labels, False, cfg.optim, None, hparams, train_on=cfg.model.ae_train_on)
    return FraudTask(built.net, built.labels, False, cfg.optim, class_weights, hparams, focal_gamma=cfg.optim.focal_gamma)


def build(cfg, pretrained: str | None = None, labels: list[str] | None = None, multilabel: bool = False,
          with_data: bool = True) -> Built:
    """Data first (the fitted feature statistics become graph constants), then the network."""
    if not with_data:
        raise ConfigError("the fraud model's feature statistics come from its training data; it must be readable")
    dm = TabularDataModule(cfg.data)
    spec = dm.spec
    net = create_model(spec, cfg.model)
    inputs = [{"name": "numeric", "dtype": "float32", "shape": ["batch", len(spec.numeric)], "columns": spec.numeric,
               "note": "raw values; NaN = missing (filled and flagged in the graph)"}]
    if spec.categorical:
        inputs.append({"name": "categorical", "dtype": "int64", "shape": ["batch", len(spec.categorical)],
                       "columns": spec.categorical, "note": "codes from preprocess.vocab (index + 1; 0 = unknown)"})

    def dummy(n: int) -> tuple:
        x = (torch.randn(n, len(spec.numeric)),)
        return x + ((torch.randint(0, 3, (n, len(spec.categorical))),) if spec.categorical else ())

    return Built(
        net=net, labels=LABELS, multilabel=False, datamodule=dm, inputs=inputs,
        preprocess=spec.to_meta() | {"in_graph": "sign*log1p on `log` columns, NaN -> center, (x - center) / scale, "
                                     "clip to +-clip, missing indicators, embeddings (0 = unknown)"},
        weights=f"random init ({cfg.model.arch})", dummy_inputs=dummy, task_factory=_task,
        export_wrapper=served_module,
    )


@torch.no_grad()
def torch_scores(net: torch.nn.Module, inputs: tuple[torch.Tensor, ...], batch: int = 8192) -> np.ndarray:
    """Fraud probability per row from the torch network (eval mode)."""
    net.eval()
    n = len(inputs[0])
    out = [net(*(x[i:i + batch] for x in inputs)).float().softmax(-1)[:, 1] for i in range(0, n, batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


def post_fit(task, built: Built, cfg) -> dict:
    """Cost threshold on validation (stored in the model) and the baselines on the same split."""
    dm, d = built.datamodule, cfg.decision
    val_scores = torch_scores(task.net.cpu(), dm.inputs("val"))
    threshold = cost_threshold(dm.y["val"], val_scores, d.cost_missed, d.cost_review)
    extra = {
        "threshold": threshold,
        "decision": {"cost_missed": d.cost_missed, "cost_review": d.cost_review, "fpr": d.fpr, "top_k": d.top_k,
                     "chosen_on": "val",
                     "val": decision_metrics(dm.y["val"], val_scores, threshold, d.cost_missed, d.cost_review)},
    }
    log.info("threshold %.4f chosen on validation (cost missed %g, review %g)", threshold, d.cost_missed, d.cost_review)
    if cfg.baselines:
        from deepapps.apps.finance.fraud.baselines import fit_baselines

        scores = fit_baselines(dm.encoded, dm.y["train"], dm.spec, cfg.seed)
        dm.baseline_scores = scores
        extra["baselines"] = {}
        for name, by_split in scores.items():
            t = cost_threshold(dm.y["val"], by_split["val"], d.cost_missed, d.cost_review)
            extra["baselines"][name] = {
                split: fraud_metrics(dm.y[split], s, d.fpr, d.top_k)
                | {"decision": decision_metrics(dm.y[split], s, t, d.cost_missed, d.cost_review)}
                for split, s in by_split.items()
            }
    return extra


def write_report(run_dir: Path, app, built: Built, cfg, config_yaml: str, metrics: dict, evaluation) -> Path:
    """Plots (PR, ROC, score distributions, training curves), the side-by-side comparison in
    metrics.json, and the model card."""
    from deepapps.apps.finance.fraud.report import write_fraud_report

    return write_fraud_report(run_dir, app, built, cfg, config_yaml, metrics, evaluation)
