"""AdamW parameter groups and the learning-rate schedule every app trains with."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
from torch import nn

from deepapps.core.errors import ConfigError

SCHEDULES = ("cosine", "onecycle", "constant")  # the default choices (OptimConfig)


class LrSchedule:
    """Learning-rate factor per step: 0 while frozen, then

    `cosine` linear warm-up then cosine decay to 0; `linear` warm-up then linear decay to 0;
    `onecycle` 30% rise then cosine fall; `constant` 1.

    A class rather than a lambda so that checkpoints can store it.

    Args:
        kind: one of `choices`.
        warmup: warm-up steps (cosine, linear).
        total: steps of the whole run.
        frozen: steps at factor 0 first (the backbone's, while only the head trains).
        scale: multiplies the factor.
        choices: the schedules the calling config offers.
    """

    def __init__(self, kind: str, warmup: int, total: int, frozen: int = 0, scale: float = 1.0,
                 choices: tuple[str, ...] = SCHEDULES):
        if kind not in choices:
            raise ConfigError(f"--optim.schedule {kind}: choose {', '.join(choices)}")
        self.kind, self.warmup, self.total, self.frozen, self.scale = kind, warmup, total, frozen, scale

    def __call__(self, step: int) -> float:
        if step < self.frozen:
            return 0.0
        if self.kind == "constant":
            return self.scale
        warmup = int(0.3 * self.total) if self.kind == "onecycle" else self.warmup
        if step < warmup:
            return self.scale * (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total - warmup))
        shape = 1.0 - progress if self.kind == "linear" else 0.5 * (1.0 + math.cos(math.pi * progress))
        return self.scale * shape


def adamw(
    module: nn.Module, optim, trainer, lr_scale: Callable[[str], float] | None = None,
    in_backbone: Callable[[str], bool] | None = None, backbone_lr_ratio: float = 1.0, freeze_epochs: int = 0,
    choices: tuple[str, ...] = SCHEDULES,
) -> dict:
    """AdamW with a per-step LambdaLR, as `configure_optimizers` returns them.

    Parameters are grouped by (learning-rate scale, in the backbone, decay): weight decay on
    weights (ndim > 1) only, never on biases and norms; groups come in the order of the
    parameters (which is the order the clipped gradient norm sums them in).

    Args:
        module: the LightningModule (its named parameters).
        optim: the config's `lr`, `weight_decay`, `schedule` and `warmup_fraction`.
        trainer: the Trainer (total steps, epochs).
        lr_scale: parameter name -> factor on its group's `lr` (layer-wise decay).
        in_backbone: parameter name -> whether it belongs to the pretrained backbone, whose
            schedule is 0 for the first `freeze_epochs` and `backbone_lr_ratio` x after.
        choices: the schedules the config offers.
    """
    groups: dict[tuple[float, bool, bool], list[nn.Parameter]] = {}
    for name, p in module.named_parameters():
        key = (lr_scale(name) if lr_scale else 1.0, bool(in_backbone and in_backbone(name)), p.ndim > 1)
        groups.setdefault(key, []).append(p)
    keys = list(groups)
    optimizer = torch.optim.AdamW(
        [{"params": groups[k], "lr": optim.lr * k[0], "weight_decay": optim.weight_decay if k[2] else 0.0}
         for k in keys],
        lr=optim.lr,
    )
    total = max(1, int(trainer.estimated_stepping_batches))
    warmup = int(total * optim.warmup_fraction)
    frozen_steps = total * freeze_epochs // max(1, trainer.max_epochs)
    lambdas = [LrSchedule(optim.schedule, warmup, total, frozen_steps if backbone else 0,
                          backbone_lr_ratio if backbone else 1.0, choices)
               for _, backbone, _ in keys]
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambdas)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}
