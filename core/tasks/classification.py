"""Classification LightningModule: any logits network, single- or multi-label, torchmetrics."""

from __future__ import annotations

import math

import pytorch_lightning as L
import torch
import torchmetrics as tm
from torch import nn
from torch.nn import functional as F

from core.config import OptimConfig


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
    """

    def __init__(
        self, net: nn.Module, labels: list[str], multilabel: bool, optim: OptimConfig,
        class_weights: list[float] | None = None, hparams: dict | None = None,
    ):
        super().__init__()
        self.save_hyperparameters({"run": hparams or {}, "labels": labels, "multilabel": multilabel})
        self.net = net
        self.labels = labels
        self.multilabel = multilabel
        self.optim = optim
        self.problem = problem_type(len(labels), multilabel)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_metrics = make_metrics(self.problem, len(labels)).clone(prefix="val/")
        self.test_metrics = make_metrics(self.problem, len(labels)).clone(prefix="test/")

    @property
    def backbone(self) -> nn.Module:
        """The pretrained part, frozen and unfrozen by Lightning's BackboneFinetuning."""
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
        decay, no_decay = [], []
        for p in self.parameters():
            if p.requires_grad:  # a frozen backbone joins later through BackboneFinetuning
                (decay if p.ndim > 1 else no_decay).append(p)
        optimizer = torch.optim.AdamW(
            [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.optim.lr, weight_decay=self.optim.weight_decay,
        )
        total = max(1, int(self.trainer.estimated_stepping_batches))
        if self.optim.schedule == "onecycle":
            scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=self.optim.lr, total_steps=total)
        elif self.optim.schedule == "cosine":
            warmup = int(total * self.optim.warmup_fraction)
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, _WarmupCosine(warmup, total))
        else:
            scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class _WarmupCosine:
    """Linear warm-up then cosine decay to zero (a class so checkpoints can pickle it)."""

    def __init__(self, warmup: int, total: int):
        self.warmup, self.total = warmup, total

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.total - self.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
