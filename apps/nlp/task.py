"""ClassificationTask with the usual transformer optimiser: layer-wise LR decay, warm-up +
linear/cosine decay, no weight decay on biases and norms."""

from __future__ import annotations

import math

import torch

from deepapps.apps.nlp.model import layer_depth
from deepapps.core.tasks.classification import ClassificationTask


class TextClassificationTask(ClassificationTask):
    """Same training/metrics as ClassificationTask; only the optimiser groups and schedule differ."""

    def configure_optimizers(self) -> dict:
        o = self.optim
        if o.schedule not in ("linear", "cosine", "constant"):
            raise ValueError(f"--optim.schedule {o.schedule}: choose linear, cosine or constant")
        num_layers = getattr(self.net.backbone.config, "num_hidden_layers", 0)
        groups: dict[tuple[int, bool], list] = {}
        for name, p in self.net.named_parameters():
            depth = layer_depth(f"net.{name}", num_layers) if name.startswith("backbone.") else num_layers + 1
            groups.setdefault((depth, p.ndim > 1), []).append(p)
        params = []
        for (depth, decay), ps in sorted(groups.items()):
            scale = o.layer_decay ** (num_layers + 1 - depth)
            if depth <= num_layers:
                scale *= self.backbone_lr_ratio
            params.append({"params": ps, "lr": o.lr * scale, "weight_decay": o.weight_decay if decay else 0.0,
                           "backbone": depth <= num_layers})
        optimizer = torch.optim.AdamW(params, lr=o.lr)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        frozen = total * self.freeze_epochs // max(1, self.trainer.max_epochs)
        lambdas = [WarmupDecay(o.schedule, int(total * o.warmup_fraction), total, frozen if g["backbone"] else 0)
                   for g in params]
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


class WarmupDecay:
    """LR factor per step: 0 while frozen, linear warm-up, then linear or cosine decay to 0."""

    def __init__(self, kind: str, warmup: int, total: int, frozen: int = 0):
        self.kind, self.warmup, self.total, self.frozen = kind, warmup, total, frozen

    def __call__(self, step: int) -> float:
        if step < self.frozen:
            return 0.0
        if self.kind == "constant":
            return 1.0
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return 1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
