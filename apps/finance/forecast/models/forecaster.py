"""What every forecasting backbone is wrapped in: RevIN, the exogenous head, sorted quantiles, the served graph.

Every backbone (dlinear.py, rlinear.py, rnn.py, patchtst.py) maps a channel-major window (B, C, L)
to channel-major quantiles (B, C, H, Q); `Forecaster` wraps one with RevIN (per-window instance normalisation) and sorted quantiles
(B, H, C, Q), and `ServedForecaster` adds the train-statistics z-score so the exported graph takes
raw values. All are channel-independent: one set of weights is applied to every channel.

The window is transposed to channel-major once, on the way in, and the quantiles stay
channel-major until the way out, with every per-window or per-channel rescaling of the output
folded into one multiply-add: ONNX Runtime broadcasts slowly over a small innermost axis (C or Q)
and its TopK over Q values cost more than the linear map itself at 256 windows, so a small sorting
network of min/max replaces it.
"""

from __future__ import annotations

import torch
from torch import nn


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., 2022) over the look-back of each channel."""

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """x (B, C, L) -> normalised x, mean (B, C, 1), std (B, C, 1)."""
        mean = x.mean(dim=-1, keepdim=True)  # (B, C, 1)
        std = torch.sqrt(x.var(dim=-1, keepdim=True, unbiased=False) + self.eps)  # (B, C, 1)
        x = (x - mean) / std
        if self.weight is not None:
            x = x * self.weight[:, None] + self.bias[:, None]
        return x, mean, std

    def inverse(self, mean: torch.Tensor, std: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(scale, shift), each (B, C): `y * scale + shift` undoes `normalize` for the window."""
        mean, std = mean[..., 0], std[..., 0]  # (B, C)
        if self.weight is None:
            return std, mean
        scale = std / (self.weight + self.eps * self.eps)
        return scale, mean - self.bias * scale


def sort_quantiles(quantiles: list[torch.Tensor]) -> list[torch.Tensor]:
    """Elementwise sort of Q same-shaped tensors (odd-even transposition network of min/max).

    Exports to Min/Max nodes, which ONNX Runtime runs far faster than TopK over a size-3 axis.
    """
    q = list(quantiles)
    if len(q) > 9:  # the network grows as Q^2
        return list(torch.sort(torch.stack(q, dim=-1), dim=-1).values.unbind(-1))
    for round_ in range(len(q)):
        for i in range(round_ % 2, len(q) - 1, 2):
            q[i], q[i + 1] = torch.minimum(q[i], q[i + 1]), torch.maximum(q[i], q[i + 1])
    return q


class Exogenous(nn.Module):
    """Additive effect (B, C, H, Q) of known-future calendar features and past-observed covariates.

    Calendar: each future step's K features -> a small MLP -> one value per channel and quantile.
    Covariates: normalised per window, one linear map L -> H over time shared by the P covariates
    (channel-independent, like the backbones), then P -> C*Q. Output layers start at zero, so an untrained head leaves
    the backbone's forecast unchanged.
    """

    def __init__(self, look_back: int, horizon: int, channels: int, n_quantiles: int,
                 n_calendar: int = 0, n_covariates: int = 0, hidden: int = 32):
        super().__init__()
        self.look_back, self.horizon, self.channels, self.n_quantiles = look_back, horizon, channels, n_quantiles
        out = channels * n_quantiles
        self.calendar = nn.Sequential(nn.Linear(n_calendar, hidden), nn.GELU(), nn.Linear(hidden, out)) if n_calendar else None
        self.time = nn.Linear(look_back, horizon) if n_covariates else None
        self.mix = nn.Linear(n_covariates, out) if n_covariates else None
        for last in (self.calendar[-1] if self.calendar else None, self.mix):
            if last is not None:
                nn.init.zeros_(last.weight)
                nn.init.zeros_(last.bias)

    def forward(self, calendar: torch.Tensor | None, covariates: torch.Tensor | None) -> torch.Tensor:
        """calendar (B, L+H, K), covariates (B, L, P) z-scored -> (B, C, H, Q)."""
        shape = (-1, self.horizon, self.channels, self.n_quantiles)
        y = 0.0
        if self.calendar is not None:
            y = y + self.calendar(calendar[:, self.look_back :]).view(shape)  # future steps only
        if self.mix is not None:
            # each window's covariates on their own scale, like the targets under RevIN
            mean = covariates.mean(dim=1, keepdim=True)
            std = torch.sqrt(covariates.var(dim=1, keepdim=True, unbiased=False) + 1e-5)
            over_time = self.time(((covariates - mean) / std).transpose(1, 2)).transpose(1, 2)  # (B, H, P)
            y = y + self.mix(over_time).view(shape)
        return y.transpose(1, 2)  # (B, C, H, Q), like the backbones


class Forecaster(nn.Module):
    """z-scored window (B, L, C) -> sorted quantiles (B, H, C, Q) on the same scale, RevIN inside."""

    def __init__(self, backbone: nn.Module, channels: int, revin: bool = True,
                 mean: list[float] | None = None, std: list[float] | None = None,
                 exogenous: Exogenous | None = None,
                 covariate_mean: list[float] | None = None, covariate_std: list[float] | None = None):
        super().__init__()
        self.backbone = backbone
        self.revin = RevIN(channels) if revin else None
        self.exogenous = exogenous
        # training statistics, kept in the checkpoint so that export needs no data
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels, dtype=torch.float32))  # (C,)
        self.register_buffer("std", torch.tensor(std or [1.0] * channels, dtype=torch.float32))  # (C,)
        n_cov = exogenous.mix.in_features if exogenous is not None and exogenous.mix is not None else 0
        if n_cov:  # only then, so that checkpoints without covariates keep their keys
            self.register_buffer("covariate_mean", torch.tensor(covariate_mean or [0.0] * n_cov, dtype=torch.float32))
            self.register_buffer("covariate_std", torch.tensor(covariate_std or [1.0] * n_cov, dtype=torch.float32))

    def forward(self, x: torch.Tensor, calendar: torch.Tensor | None = None,
                covariates: torch.Tensor | None = None, sort: bool = True) -> torch.Tensor:
        """x (B, L, C), calendar (B, L+H, K), covariates (B, L, P), all but calendar z-scored -> (B, H, C, Q).

        `sort=False` (training) keeps each quantile on its own output, so that crossings early
        in training do not route the outer quantiles' gradients into the median.
        """
        y = self.channel_major(x, calendar, covariates)  # (B, C, H, Q)
        if sort:
            y = torch.stack(sort_quantiles(list(y.unbind(-1))), dim=-1)
        return y.transpose(1, 2)

    def channel_major(self, x: torch.Tensor, calendar: torch.Tensor | None = None,
                      covariates: torch.Tensor | None = None, raw: bool = False) -> torch.Tensor:
        """Unsorted quantiles (B, C, H, Q) of x (B, L, C).

        With `raw`, x and the output are on the raw scale (the training z-score applied on the way
        in and undone on the way out, folded into RevIN's inverse); else both are z-scored.
        """
        x = x.transpose(1, 2)  # (B, C, L)
        if raw:
            x = (x - self.mean[:, None]) / self.std[:, None]
        if self.revin is not None:
            x, mean, std = self.revin.normalize(x)
        y = self.backbone(x)  # (B, C, H, Q)
        if self.exogenous is not None:
            y = y + self.exogenous(calendar, covariates)  # on the RevIN scale of each window
        if self.revin is not None:
            scale, shift = self.revin.inverse(mean, std)  # (B, C)
            if raw:
                scale, shift = scale * self.std, shift * self.std + self.mean
        elif raw:
            scale, shift = self.std[None], self.mean[None]  # (1, C)
        else:
            return y
        return y * scale[..., None, None] + shift[..., None, None]


class ServedForecaster(nn.Module):
    """The exported graph: raw history (B, L, C) [, calendar (B, L+H, K)] [, raw covariates (B, L, P)]
    -> raw-scale quantiles (B, H, C, Q).

    Args:
        net: the trained forecaster.
        extra_inputs: the optional inputs the graph takes, in order (`calendar`, `covariates`).
        interval_scale: (H, Q) calibration factors on each quantile's distance to the median
            (1 for the median); None leaves the quantiles as trained.
        median_index: position of the 0.5 quantile.
    """

    def __init__(self, net: Forecaster, extra_inputs: tuple[str, ...] = (),
                 interval_scale: list[list[float]] | None = None, median_index: int = 0):
        super().__init__()
        self.net, self.extra_inputs, self.median_index = net, tuple(extra_inputs), median_index
        scale = torch.tensor(interval_scale, dtype=torch.float32) if interval_scale is not None else None
        self.register_buffer("interval_scale", scale, persistent=False)  # (H, Q) or None

    def forward(self, history: torch.Tensor, *extra: torch.Tensor) -> torch.Tensor:
        given = dict(zip(self.extra_inputs, extra))
        covariates = given.get("covariates")
        if covariates is not None:
            covariates = (covariates - self.net.covariate_mean) / self.net.covariate_std
        y = self.net.channel_major(history, given.get("calendar"), covariates, raw=True)  # (B, C, H, Q)
        quantiles = sort_quantiles(list(y.unbind(-1)))  # Q x (B, C, H)
        if self.interval_scale is not None:
            median = quantiles[self.median_index]  # (B, C, H)
            quantiles = [q if k == self.median_index else median + (q - median) * self.interval_scale[:, k]
                         for k, q in enumerate(quantiles)]
            quantiles = sort_quantiles(quantiles)
        return torch.stack(quantiles, dim=-1).transpose(1, 2)  # (B, H, C, Q)
