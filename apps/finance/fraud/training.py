"""Fraud (torch side): network + data, the cost threshold and baselines after fit, the report."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch.nn import functional as F

from deepapps.apps.finance.fraud.config import FraudFitConfig
from deepapps.apps.finance.fraud.streaming import tabular_datamodule
from deepapps.apps.finance.fraud.features import LABELS, FeatureSpec
from deepapps.apps.finance.fraud.model import create_model, served_module
from deepapps.apps.finance.fraud.scoring import cost_threshold, decision_metrics, fraud_metrics
from deepapps.core.contract import PROBABILITIES, Classification, TensorSpec
from deepapps.core.errors import ConfigError
from deepapps.core.training.classifier import ClassificationModule
from deepapps.core.training.interface import Built, FitRun, PostFit, Saved, Served, Training
from deepapps.core.training.quantize import Int8Method

log = logging.getLogger("deepapps.fraud")
FAMILY = "tabular_classification"
IN_GRAPH = ("sign*log1p on `log` columns, NaN -> center, (x - center) / scale, clip to +-clip, missing indicators, "
            "embeddings (0 = unknown)")


FRAUD_INT8_REFUSAL = (
    "int8 is not offered for fraud models: measured on the MLP [128, 64] at 8192 rows, dynamic int8 took 3.1 ms "
    "vs 3.3 ms fp32 (1.04x, noise), static QDQ was faster but val AUPRC fell 0.819 -> 0.649")
"""Measured on a 2-epoch fit of the tiny config with the default MLP (20k synthetic rows), ORT CPU,
2 cores: benchmarks/run_all.py (dynamic) and a static QDQ copy (minmax calibration, 256 val rows)."""


class FocalLoss:
    """(1 - p_t)^gamma x class-weighted cross-entropy, normalised by the weights (Lin et al. 2017).

    A class rather than a closure so that it can sit on a module Lightning checkpoints."""

    def __init__(self, gamma: float):
        self.gamma = gamma

    def __call__(self, logits: torch.Tensor, target: torch.Tensor, weights: torch.Tensor | None) -> torch.Tensor:
        ce = F.cross_entropy(logits, target, weight=weights, reduction="none")  # (B,)
        p_t = logits.softmax(-1).gather(1, target[:, None]).squeeze(1)
        weight = weights[target] if weights is not None else torch.ones_like(ce)
        return ((1 - p_t) ** self.gamma * ce).sum() / weight.sum()


class AutoencoderModule(ClassificationModule):
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

    def evaluate_batch(self, batch: tuple, metrics, prefix: str) -> None:
        *inputs, target = batch
        self.log(f"{prefix}/loss", self.reconstruction_loss(inputs, target, True), batch_size=len(target), sync_dist=True)
        metrics.update(self.probabilities(self(*inputs).float()), target)


def encoded_inputs(enc, spec: FeatureSpec) -> tuple[torch.Tensor, ...]:
    """Graph inputs of encoded rows: (numeric,) or (numeric, categorical)."""
    return (torch.from_numpy(enc.numeric),) + ((torch.from_numpy(enc.categorical),) if spec.categorical else ())


@torch.no_grad()
def torch_scores(net: torch.nn.Module, inputs: tuple[torch.Tensor, ...], batch: int = 8192) -> np.ndarray:
    """Fraud probability per row from the torch network (eval mode)."""
    net.eval()
    n = len(inputs[0])
    out = [net(*(x[i:i + batch] for x in inputs)).float().softmax(-1)[:, 1] for i in range(0, n, batch)]
    return torch.cat(out).numpy() if out else np.zeros(0, np.float32)


class FraudTraining(Training):
    """Tabular networks that take raw columns (the fitted preprocessing is in the graph)."""

    def build(self, cfg: FraudFitConfig, saved: Saved | None = None, with_data: bool = True) -> Built:
        """Data first (the fitted feature statistics become graph constants), then the network;
        from a checkpoint the statistics are the checkpoint's, and the data is optional."""
        dm = tabular_datamodule(cfg.data) if with_data else None  # in memory, or streamed (--data.streaming)
        spec = FeatureSpec.from_meta(saved.preprocess) if saved is not None else dm.spec
        if (column := cfg.decision.group_thresholds) and saved is None:
            check_group_thresholds(column, spec, dm)
        net = create_model(spec, cfg.model)
        inputs = [TensorSpec("numeric", "float32", ["batch", len(spec.numeric)], details={
            "columns": spec.numeric, "note": "raw values; NaN = missing (filled and flagged in the graph)"})]
        if spec.categorical:
            inputs.append(TensorSpec("categorical", "int64", ["batch", len(spec.categorical)], details={
                "columns": spec.categorical, "note": "codes from preprocess.vocab (index + 1; 0 = unknown)"}))

        def dummy(n: int) -> tuple:
            x = (torch.randn(n, len(spec.numeric)),)
            return x + ((torch.randint(0, 3, (n, len(spec.categorical))),) if spec.categorical else ())

        return Built(
            net=net, datamodule=dm, kind=Classification(LABELS, "binary"), inputs=inputs, outputs=[PROBABILITIES],
            preprocess=spec.to_meta() | {"in_graph": IN_GRAPH}, weights=f"random init ({cfg.model.arch})",
            family=FAMILY, dummy_inputs=dummy, backbone=cfg.model.arch,
        )

    def module(self, built: Built, cfg: FraudFitConfig) -> ClassificationModule:
        """Weighted (optionally focal) cross-entropy; the autoencoder learns to reconstruct."""
        if cfg.model.arch == "autoencoder":
            return AutoencoderModule(built.net, built.labels, False, cfg.optim, train_on=cfg.model.ae_train_on)
        dm = built.datamodule
        weights = dm.class_weights(cfg.optim.class_weights) if dm is not None else None
        loss = FocalLoss(cfg.optim.focal_gamma) if cfg.optim.focal_gamma > 0 else None
        return ClassificationModule(built.net, built.labels, False, cfg.optim, weights, loss=loss)

    def post_fit(self, module, built: Built, cfg: FraudFitConfig) -> PostFit:
        """The cost threshold on validation (stored in the model), and the baselines on the same split."""
        dm, d = built.datamodule, cfg.decision
        net = module.net.cpu()
        network = {"network": lambda enc: torch_scores(net, encoded_inputs(enc, dm.spec))}
        baselines = {}
        if cfg.baselines:
            from deepapps.apps.finance.fraud.baselines import baseline_scorers

            baselines = baseline_scorers(dm.encoded["train"], dm.y["train"], dm.spec, cfg.seed)
        # one pass over each split (streamed when the DataModule streams): targets and scores only
        targets, scores = {}, {}
        targets["val"], scores["val"] = dm.split_scores(network | baselines, "val")
        if baselines:
            targets["test"], scores["test"] = dm.split_scores(baselines, "test")
        val_scores = scores["val"].pop("network")
        threshold = cost_threshold(targets["val"], val_scores, d.cost_missed, d.cost_review)
        state = {
            "threshold": threshold,
            "decision": {"cost_missed": d.cost_missed, "cost_review": d.cost_review, "fpr": d.fpr, "top_k": d.top_k,
                         "chosen_on": "val",
                         "val": decision_metrics(targets["val"], val_scores, threshold, d.cost_missed, d.cost_review)},
        }
        log.info("threshold %.4f chosen on validation (cost missed %g, review %g)", threshold, d.cost_missed, d.cost_review)
        if d.group_thresholds:
            from deepapps.apps.finance.fraud.features import category_values
            from deepapps.core.fairness import equal_tpr_thresholds

            groups = category_values(dm.encoded["val"], dm.spec, d.group_thresholds)
            state["group_thresholds"] = {"column": d.group_thresholds, "chosen_on": "val"} | equal_tpr_thresholds(
                targets["val"], val_scores, groups, threshold)
            log.info("per-group thresholds of %s at TPR %.3f: %s", d.group_thresholds,
                     state["group_thresholds"]["target_tpr"], state["group_thresholds"]["thresholds"])
        if not cfg.baselines:
            return PostFit(state)
        scores = {name: {split: scores[split][name] for split in ("val", "test")} for name in baselines}
        state["baselines"] = {}
        for name, by_split in scores.items():
            t = cost_threshold(targets["val"], by_split["val"], d.cost_missed, d.cost_review)
            state["baselines"][name] = {
                split: fraud_metrics(targets[split], s, d.fpr, d.top_k)
                | {"decision": decision_metrics(targets[split], s, t, d.cost_missed, d.cost_review)}
                for split, s in by_split.items()
            }
        return PostFit(state, {"baseline_scores": scores, "baseline_targets": targets})

    def served(self, built: Built, state: dict) -> Served:
        """Softmax over the batch-norm-folded network; the cost threshold and its costs in the contract."""
        kind = Classification(LABELS, "binary", state.get("threshold"), 1.0, 1)
        details = {"decision": state["decision"]} if "decision" in state else {}
        if "group_thresholds" in state:  # applied by predict, serve and evaluate (features.row_thresholds)
            details["group_thresholds"] = state["group_thresholds"]
        return Served(served_module(built.net), kind, details)

    def artifacts(self, run: FitRun) -> dict:
        """The model against its baselines on the test rows, and a global feature importance."""
        from deepapps.apps.finance.fraud.report import comparison, feature_importance

        out = {"comparison_test": comparison(run.metrics),
               "feature_importance": feature_importance(run.module.net, run.built.datamodule)}
        if run.cfg.data.group_columns:
            out |= self.fairness(run)
        if rule := run.post_fit.state.get("group_thresholds"):
            out["group_thresholds"] = group_threshold_effect(run, rule)
        return out

    def fairness(self, run: FitRun) -> dict:
        """`fairness`: by group (core.fairness) on validation (the torch network) and test (the ONNX
        model's evaluation), at the model's threshold; `fairness_thresholds`: per group column, the
        TPR-parity thresholds fitted on validation, judged on test (cfg.fairness_thresholds)."""
        from deepapps.core.fairness import fit_fairness
        from deepapps.core.runtime.evaluation import ClassificationEvaluation

        dm, columns = run.built.datamodule, run.cfg.data.group_columns
        val_scores = torch_scores(run.module.net.cpu(), dm.inputs("val"))
        val = ClassificationEvaluation({}, dm.y["val"], np.stack([1 - val_scores, val_scores], 1), LABELS, "binary")
        groups = {split: {c: dm.frames[split][c].to_list() for c in columns} for split in ("val", "test")}
        return fit_fairness(run.contract.classification, {"val": val, "test": run.evaluation}, groups,
                            run.cfg.fairness_thresholds)

    def int8_method(self, cfg: FraudFitConfig) -> Int8Method:
        """Not offered: measured on the tiny MLP, int8 does not pay (benchmarks/run_all.py)."""
        return Int8Method(None, FRAUD_INT8_REFUSAL)

    def report(self, run: FitRun) -> None:
        """Plots (PR, ROC, score distributions, training curves, importance) and the model card."""
        from deepapps.apps.finance.fraud.report import write_fraud_report

        write_fraud_report(run)


def check_group_thresholds(column: str, spec: FeatureSpec, dm) -> None:
    """One line unless `--decision.group_thresholds` names a categorical feature of an in-memory fit."""
    from deepapps.apps.finance.fraud.streaming import StreamingTabularDataModule

    if column not in spec.categorical:
        raise ConfigError(f"--decision.group_thresholds {column}: not a categorical feature of the model "
                          f"(features: {', '.join(spec.categorical) or 'none'}); add it to --data.categorical_columns")
    if isinstance(dm, StreamingTabularDataModule):
        raise ConfigError("--decision.group_thresholds needs the rows in memory: use --data.streaming false")


def group_threshold_effect(run: FitRun, rule: dict) -> dict:
    """The shipped per-group thresholds on the test rows (the ONNX model's scores): per group the TPR and
    the share flagged, the TPR gap, accuracy and cost, with the one cost threshold and with the rule."""
    from deepapps.apps.finance.fraud.features import category_values
    from deepapps.core.fairness import group_labels, thresholds_for

    dm, d = run.built.datamodule, run.cfg.decision
    y, s = np.asarray(run.evaluation.targets).astype(bool), np.asarray(run.evaluation.scores)  # positive-class scores
    groups = group_labels(category_values(dm.encoded["test"], dm.spec, rule["column"]))
    if len(groups) != len(y):
        raise ConfigError(f"group thresholds: {len(groups)} test rows in the data module, {len(y)} scored")
    out = {"column": rule["column"], "thresholds": rule["thresholds"], "kept": rule["kept"]}
    for name, threshold in (("before", np.full(len(y), rule["default"])), ("after", thresholds_for(groups, rule))):
        flag = s >= threshold
        by_group = {g: {"n": int((groups == g).sum()), "tpr": float(flag[y & (groups == g)].mean())
                        if (y & (groups == g)).any() else None, "selection_rate": float(flag[groups == g].mean())}
                    for g in sorted(set(groups))}
        tprs = [v["tpr"] for v in by_group.values() if v["tpr"] is not None]
        out[name] = {"accuracy": float((flag == y).mean()), "tpr_difference": max(tprs) - min(tprs) if tprs else None,
                     "decision": decision_metrics(y, s, threshold, d.cost_missed, d.cost_review), "groups": by_group}
    return out
