"""DLinear (Zeng et al., 2023): moving-average decomposition, one linear map for each part."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F


class DLinear(nn.Module):
    """Moving-average decomposition; one linear map L -> H*Q for trend, one for the remainder."""

    def __init__(self, look_back: int, horizon: int, n_quantiles: int, kernel_size: int = 25):
        super().__init__()
        self.kernel_size = kernel_size
        self.trend = nn.Linear(look_back, horizon * n_quantiles)
        self.seasonal = nn.Linear(look_back, horizon * n_quantiles)
        self.horizon, self.n_quantiles = horizon, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, L = x.shape
        pad = (self.kernel_size - 1) // 2
        padded = torch.cat([x[..., :1].expand(B, C, pad), x, x[..., -1:].expand(B, C, self.kernel_size - 1 - pad)], dim=-1)
        trend = F.avg_pool1d(padded, self.kernel_size, stride=1)  # (B, C, L)
        y = self.trend(trend) + self.seasonal(x - trend)  # (B, C, H*Q)
        return y.view(B, C, self.horizon, self.n_quantiles)  # (B, C, H, Q)
