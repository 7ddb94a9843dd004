"""Classification LightningModule: any logits network, single- or multi-label, torchmetrics."""

from __future__ import annotations

from collections.abc import Callable

import pytorch_lightning as L
import torch
import torchmetrics as tm
from torch import nn
from torch.nn import functional as F

from deepapps.core.contract import problem_type
from deepapps.core.training.optim import SCHEDULES, adamw

Loss = Callable[[torch.Tensor, torch.Tensor, torch.Tensor | None], torch.Tensor]


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


class ClassificationModule(L.LightningModule):
    """Trains `net` (inputs -> logits) with cross-entropy or BCE and AdamW.

    Args:
        net: the network.
        labels: class (or label) names.
        multilabel: sigmoid/BCE over independent labels instead of softmax/CE.
        optim: optimiser and schedule settings (`lr`, `weight_decay`, `schedule`,
            `warmup_fraction`, `label_smoothing`).
        class_weights: per-class loss weights, or None.
        backbone: name of the pretrained submodule of `net` (e.g. `backbone`): it sits out the
            first `freeze_epochs` (no gradients, lr 0) and trains at `backbone_lr_ratio` x the
            head's rate after; None when everything trains from the start.
        freeze_epochs: epochs during which only the rest of `net` learns.
        backbone_lr_ratio: backbone learning rate as a share of the head's.
        lr_scale: parameter name -> extra factor on its learning rate (layer-wise decay).
        loss: (logits, target, class_weights) -> loss, replacing cross-entropy (e.g. focal).
        schedules: the schedule names `optim.schedule` may take.
    """

    def __init__(
        self, net: nn.Module, labels: list[str], multilabel: bool, optim,
        class_weights: list[float] | None = None, backbone: str | None = None,
        freeze_epochs: int = 0, backbone_lr_ratio: float = 1.0,
        lr_scale: Callable[[str], float] | None = None, loss: Loss | None = None,
        schedules: tuple[str, ...] = SCHEDULES,
    ):
        super().__init__()
        self.net = net
        self.labels = labels
        self.multilabel = multilabel
        self.optim = optim
        self.backbone_name = backbone
        self.freeze_epochs = freeze_epochs if backbone is not None else 0
        self.backbone_lr_ratio = backbone_lr_ratio if backbone is not None else 1.0
        self.lr_scale, self.custom_loss, self.schedules = lr_scale, loss, schedules
        self.problem = problem_type(len(labels), multilabel)
        weights = torch.tensor(class_weights, dtype=torch.float32) if class_weights else None
        self.register_buffer("class_weights", weights, persistent=False)
        self.val_metrics = make_metrics(self.problem, len(labels)).clone(prefix="val/")
        self.test_metrics = make_metrics(self.problem, len(labels)).clone(prefix="test/")

    @property
    def backbone(self) -> nn.Module | None:
        """The pretrained part of `net`, or None."""
        return self.net.get_submodule(self.backbone_name) if self.backbone_name else None

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        return self.net(*inputs)

    def probabilities(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        logits = logits.float()
        if self.custom_loss is not None:
            return self.custom_loss(logits, target, self.class_weights)
        if self.multilabel:
            return F.binary_cross_entropy_with_logits(logits, target.float(), pos_weight=self.class_weights)
        return F.cross_entropy(logits, target, weight=self.class_weights, label_smoothing=self.optim.label_smoothing)

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        *inputs, target = batch
        loss = self.loss(self(*inputs), target)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(target))
        return loss

    def evaluate_batch(self, batch: tuple, metrics: tm.MetricCollection, prefix: str) -> None:
        *inputs, target = batch
        logits = self(*inputs)
        self.log(f"{prefix}/loss", self.loss(logits, target), batch_size=len(target), sync_dist=True)
        metrics.update(self.probabilities(logits.float()), target)

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self.evaluate_batch(batch, self.val_metrics, "val")

    def on_validation_epoch_end(self) -> None:
        self.log_dict(self.val_metrics.compute(), prog_bar=True, sync_dist=True)
        self.val_metrics.reset()

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self.evaluate_batch(batch, self.test_metrics, "test")

    def on_test_epoch_end(self) -> None:
        self.log_dict(self.test_metrics.compute(), sync_dist=True)
        self.test_metrics.reset()

    def on_train_epoch_start(self) -> None:
        if self.freeze_epochs:  # no backbone gradients while frozen: saves the compute, lr is 0 anyway
            self.backbone.requires_grad_(self.current_epoch >= self.freeze_epochs)

    def on_train_end(self) -> None:
        if self.freeze_epochs:
            self.backbone.requires_grad_(True)

    def configure_optimizers(self) -> dict:
        """AdamW; the backbone at `backbone_lr_ratio` x lr (0 while frozen), `lr_scale` per parameter."""
        in_backbone = {id(p) for p in self.backbone.parameters()} if self.backbone is not None else set()
        ids = {name: id(p) for name, p in self.named_parameters()}
        return adamw(self, self.optim, self.trainer, lr_scale=self.lr_scale, in_backbone=lambda n: ids[n] in in_backbone,
                     backbone_lr_ratio=self.backbone_lr_ratio, freeze_epochs=self.freeze_epochs, choices=self.schedules)
