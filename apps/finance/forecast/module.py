"""Forecasting LightningModule: pinball loss over quantiles, the median as the point forecast."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as L
import torch
from torch import nn

from deepapps.core.config import OptimConfig
from deepapps.core.training.optim import adamw


def pinball_loss(pred: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor) -> torch.Tensor:
    """Mean quantile (pinball) loss; pred (B, H, C, Q), target (B, H, C), quantiles (Q,)."""
    error = target[..., None] - pred  # (B, H, C, Q)
    return torch.maximum(quantiles * error, (quantiles - 1) * error).mean()


class ForecastModule(L.LightningModule):
    """Trains a z-scored window -> quantiles network; logs MSE/MAE of the median on the z-scale.

    Args:
        net: a Forecaster, (B, L, C) -> (B, H, C, Q).
        quantiles: the Q quantile levels, 0.5 among them.
        optim: optimiser and schedule settings.
        mse_weight: weight of an extra MSE term on the median.
    """

    def __init__(self, net: nn.Module, quantiles: list[float], optim: OptimConfig, mse_weight: float = 0.0):
        super().__init__()
        self.net, self.optim, self.mse_weight = net, optim, mse_weight
        self.register_buffer("quantiles", torch.tensor(quantiles, dtype=torch.float32), persistent=False)
        self.median = quantiles.index(0.5)
        self.lo, self.hi = 0, len(quantiles) - 1

    def forward(self, x: torch.Tensor, *extra: torch.Tensor, sort: bool = True) -> torch.Tensor:
        """x (B, L, C) and the optional calendar / covariate windows, in the dataset's order."""
        return self.net(x, *self._extra(extra), sort=sort)

    def _extra(self, extra: tuple) -> tuple:
        """(calendar, covariates) from what the batch carries (either may be absent)."""
        exo = self.net.exogenous
        if exo is None:
            return ()
        extra = list(extra)
        calendar = extra.pop(0) if exo.calendar is not None else None
        covariates = extra.pop(0) if exo.mix is not None else None
        return calendar, covariates

    def loss(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = pinball_loss(pred.float(), target, self.quantiles)
        if self.mse_weight:
            loss = loss + self.mse_weight * torch.mean((pred[..., self.median].float() - target) ** 2)
        return loss

    def training_step(self, batch: tuple, batch_idx: int) -> torch.Tensor:
        *inputs, y = batch  # (B, L, C) [, calendar, covariates], (B, H, C)
        loss = self.loss(self(*inputs, sort=False), y)
        self.log("train/loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=len(y))
        return loss

    def _evaluate(self, batch: tuple, prefix: str) -> None:
        *inputs, y = batch
        x = inputs[0]
        pred = self(*inputs).float()  # (B, H, C, Q)
        median = pred[..., self.median]
        inside = (y >= pred[..., self.lo]) & (y <= pred[..., self.hi])
        values = {
            "loss": self.loss(pred, y),
            "mse": torch.mean((median - y) ** 2),
            "mae": torch.mean(torch.abs(median - y)),
            "coverage": inside.float().mean(),
        }
        for name, value in values.items():
            self.log(f"{prefix}/{name}", value, batch_size=len(x), sync_dist=True, prog_bar=name == "mse")

    def validation_step(self, batch: tuple, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: tuple, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> dict:
        """AdamW (no decay on biases and norms) with the shared warm-up/cosine schedule."""
        return adamw(self, self.optim, self.trainer)


def fit_interval_scale(pred: np.ndarray, y: np.ndarray, quantiles: list[float], per_step_min: int = 200) -> np.ndarray:
    """Calibration factors (H, Q) on each quantile's distance to the median, fitted on held-out windows.

    For a level tau above 0.5 the factor s makes `median + s * (q_tau - median)` exceeded by a
    share 1 - tau of the held-out targets (below 0.5, symmetrically): the empirical quantile of
    the normalised residual (y - median) / (q_tau - median), split-conformal style. Per horizon
    step when each step has at least `per_step_min` values, else one factor for all steps.

    Args:
        pred: sorted quantiles (N, H, C, Q).
        y: targets (N, H, C).
        quantiles: the Q levels, 0.5 among them.
    """
    m = quantiles.index(0.5)
    median = pred[..., m]
    N, H, C, Q = pred.shape
    scale = np.ones((H, Q))
    for k, tau in enumerate(quantiles):
        if k == m:
            continue
        dist = np.abs(pred[..., k] - median)  # (N, H, C)
        signed = (y - median) if tau > 0.5 else (median - y)
        ratio = signed / np.maximum(dist, 1e-6)
        level = tau if tau > 0.5 else 1 - tau
        if N * C >= per_step_min:
            scale[:, k] = np.quantile(ratio.transpose(1, 0, 2).reshape(H, -1), level, axis=1)
        else:
            scale[:, k] = np.quantile(ratio, level)
    return np.clip(scale, 0.0, None)


def apply_interval_scale(pred: np.ndarray, scale: np.ndarray, median_index: int) -> np.ndarray:
    """What the exported graph does with `scale`: (N, H, C, Q) -> rescaled, sorted quantiles."""
    median = pred[..., median_index : median_index + 1]
    return np.sort(median + (pred - median) * scale[:, None, :], axis=-1)
