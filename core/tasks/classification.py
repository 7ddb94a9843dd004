"""Classification LightningModule: any logits network, single- or multi-label, torchmetrics."""

from __future__ import annotations

import math

import pytorch_lightning as L
import torch
import torchmetrics as tm
from torch import nn
from torch.nn import functional as F

from deepapps.core.config import OptimConfig


def problem_type(num_labels: int, multilabel: bool) -> str:
    """`binary`, `multiclass` or `multilabel`, as stored in the ONNX metadata."""
    if multilabel:
        return "multilabel"
    return "binary" if num_labels == 2 else "multiclass"


def make_metrics(problem: str, num_labels: int) -> tm.MetricCollection:
    """accuracy, macro_f1, auroc (+ auprc for binary and multi-label) on probabilities."""
    if problem == "multilabel":
        kw = {"task": "multilabel", "num_labels": num_labels}
        return tm.MetricCollection({
            "accuracy": tm.Accuracy(**kw, average="micro"),
            "macro_f1": tm.F1Score(**kw, average="macro"),
            "auroc": tm.AUROC(**kw, average="macro"),
            "auprc": tm.AveragePrecision(**kw, average="macro"),
        })
    kw = {"task": "multiclass", "num_classes": num_labels}
    metrics = {
        "accuracy": tm.Accuracy(**kw, average="micro"),
        "macro_f1": tm.F1Score(**kw, average="macro"),
        "auroc": tm.AUROC(**kw, average="macro"),
    }
    if problem == "binary":
        metrics["auprc"] = _PositiveClass(tm.AveragePrecision(task="binary"))
    return tm.MetricCollection(metrics)


class _PositiveClass(tm.Metric):
    """Feeds a binary metric the positive-class column of (B, 2) probabilities."""

    def __init__(self, metric: tm.Metric):
        super().__init__()
        self.metric = metric

    def update(self, probs: torch.Tensor, target: torch.Tensor) -> None:
        self.metric.update(probs[:, 1], target)

    def compute(self) -> torch.Tensor:
        return self.metric.compute()

    def reset(self) -> None:
        super().reset()
        self.metric.reset()


class ClassificationTask(L.LightningModule):
    """Trains `net` (inputs -> logits) with cross-entropy or BCE and AdamW.

    Args:
        net: the network; must expose `.backbone` for freeze-then-unfreeze.
        labels: class (or label) names.
        multilabel: sigmoid/BCE over independent labels instead of softmax/CE.
        optim: optimiser and schedule settings.
        class_weights: per-class loss weights, or None.
        hparams: JSON-able run description saved in checkpoints (config, data spec),
            enough to rebuild the network and data for validate/test/export.
        freeze_epochs: epochs during which only the head learns.
        backbone_lr_ratio: backbone learning rate as a share of the head's.
    """

    def __init__(
        self, net: nn.Module, labels: list[str], multilabel: bool, optim: OptimConfig,
        class_weights: list[float] | None = None, hparams: dict | None = None,
        freeze_epochs: int = 0, backbone_lr_ratio: float = 1.0,
    ):
        super().__init__()
        self.save_hyperparameters({"run": hparams or {}, "labels": labels, "multilabel": multilabel})
        self.net = net
        self.labels = labels
        self.multilabel = multilabel
        self.optim = optim
        self.freeze_epochs, self.backbone_lr_ratio = freeze_epochs, backbone_lr_ratio
        self.problem = problem_type(len(labels), multilabel)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_metrics = make_metrics(self.problem, len(labels)).clone(prefix="val/")
        self.test_metrics = make_metrics(self.problem, len(labels)).clone(prefix="test/")

    @property
    def backbone(self) -> nn.Module:
        """The pretrained part (frozen for the first `freeze_epochs`)."""
        return self.net.backbone

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(
                logits, target.float(), pos_weight=self.class_weights
            )
        return F.cross_entropy(
            logits, target, weight=self.class_weights, label_smoothing=self.optim.label_smoothing
        )

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        *inputs, target = batch
        loss = self.loss(self(*inputs), target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(target))
        return loss

    def _evaluate(self, batch: tuple, metrics: tm.MetricCollection, prefix: str) -> None:
        *inputs, target = batch
        logits = self(*inputs)
        self.log(f"{prefix}/loss", self.loss(logits, target), batch_size=len(target), sync_dist=True)
        metrics.update(self.probabilities(logits.float()), target)

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._evaluate(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._evaluate(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def configure_optimizers(self) -> dict:
        """AdamW over four groups: (backbone, head) x (decay, no decay for biases and norms).

        The backbone's learning rate is 0 for the first `freeze_epochs` (FreezeBackbone also
        stops its gradients, to save the compute) and `backbone_lr_ratio` x the head's after.
        """
        backbone_ids = {id(p) for p in self.backbone.parameters()}
        groups = {(b, d): [] for b in (True, False) for d in (True, False)}
        for p in self.parameters():
            groups[(id(p) in backbone_ids, p.ndim > 1)].append(p)
        keys = [k for k, params in groups.items() if params]
        optimizer = torch.optim.AdamW(
            [{"params": groups[k], "weight_decay": self.optim.weight_decay if k[1] else 0.0} for k in keys],
            lr=self.optim.lr,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = int(total * self.optim.warmup_fraction) if self.optim.schedule == "cosine" else 0
        frozen_steps = total * self.freeze_epochs // max(1, self.trainer.max_epochs)
        lambdas = [
            _Schedule(self.optim.schedule, warmup, total, frozen_steps if is_backbone else 0,
                      self.backbone_lr_ratio if is_backbone else 1.0)
            for is_backbone, _ in keys
        ]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _Schedule:
    """Learning-rate factor per step: `cosine` (linear warm-up, cosine decay), `onecycle`
    (30% rise, cosine fall) or `constant`; 0 while frozen, times `scale` after.

    A class rather than a lambda so that checkpoints can pickle it.
    """

    def __init__(self, kind: str, warmup: int, total: int, frozen: int = 0, scale: float = 1.0):
        if kind not in ("cosine", "onecycle", "constant"):
            raise ValueError(f"--optim.schedule {kind}: choose cosine, onecycle or constant")
        self.kind, self.warmup, self.total, self.frozen, self.scale = kind, warmup, total, frozen, scale

    def __call__(self, step: int) -> float:
        if step < self.frozen:
            return 0.0
        if self.kind == "constant":
            return self.scale
        warmup = self.warmup if self.kind == "cosine" else int(0.3 * self.total)
        if step < warmup:
            return self.scale * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total - warmup))
        return self.scale * 0.5 * (1.0 + math.cos(math.pi * progress))
