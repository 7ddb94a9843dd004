"""RLinear (Li et al., 2023): RevIN + one linear map shared by every channel."""

from __future__ import annotations

import torch
from torch import nn


class RLinear(nn.Module):
    """One linear map L -> H*Q shared by every channel (Li et al., 2023: RevIN + Linear)."""

    def __init__(self, look_back: int, horizon: int, n_quantiles: int, dropout: float = 0.0):
        super().__init__()
        self.drop = nn.Dropout(dropout)
        self.linear = nn.Linear(look_back, horizon * n_quantiles)
        self.horizon, self.n_quantiles = horizon, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, L = x.shape
        y = self.linear(self.drop(x))  # (B, C, H*Q)
        return y.view(B, C, self.horizon, self.n_quantiles)  # (B, C, H, Q)
