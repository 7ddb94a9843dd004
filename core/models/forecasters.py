"""Forecasting networks: DLinear, an RNN with a direct multi-horizon head, and PatchTST.

Every backbone maps a z-scored window (B, L, C) to quantiles (B, H, C, Q); `Forecaster` wraps
one with RevIN (per-window instance normalisation) and monotone quantiles, and
`ServedForecaster` adds the train-statistics z-score so the exported graph takes raw values.
All three are channel-independent: one set of weights is applied to every channel.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from core.errors import ConfigError
from core.forecast_config import ForecastModelConfig


class RevIN(nn.Module):
    """Reversible instance normalisation (Kim et al., 2022) over the look-back of each channel."""

    def __init__(self, channels: int, affine: bool = True, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(channels)) if affine else None

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean = x.mean(dim=1, keepdim=True)  # (B, 1, C)
        std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + self.eps)  # (B, 1, C)
        x = (x - mean) / std
        if self.weight is not None:
            x = x * self.weight + self.bias
        return x, mean, std

    def denormalize(self, y: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
        """y (B, H, C, Q) back to the scale of the input window."""
        if self.weight is not None:
            y = (y - self.bias[:, None]) / (self.weight[:, None] + self.eps * self.eps)
        return y * std[..., None] + mean[..., None]


class DLinear(nn.Module):
    """Moving-average decomposition; one linear map L -> H*Q for trend, one for the remainder."""

    def __init__(self, look_back: int, horizon: int, n_quantiles: int, kernel_size: int = 25):
        super().__init__()
        self.kernel_size = kernel_size
        self.trend = nn.Linear(look_back, horizon * n_quantiles)
        self.seasonal = nn.Linear(look_back, horizon * n_quantiles)
        self.horizon, self.n_quantiles = horizon, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        x = x.transpose(1, 2)  # (B, C, L)
        pad = (self.kernel_size - 1) // 2
        padded = torch.cat([x[..., :1].expand(B, C, pad), x, x[..., -1:].expand(B, C, self.kernel_size - 1 - pad)], dim=-1)
        trend = F.avg_pool1d(padded, self.kernel_size, stride=1)  # (B, C, L)
        y = self.trend(trend) + self.seasonal(x - trend)  # (B, C, H*Q)
        return y.view(B, C, self.horizon, self.n_quantiles).transpose(1, 2)  # (B, H, C, Q)


class RNNForecaster(nn.Module):
    """GRU/LSTM over each channel's look-back; the last hidden state maps to all H*Q at once."""

    def __init__(self, horizon: int, n_quantiles: int, cell: str = "gru", hidden_size: int = 64,
                 num_layers: int = 2, dropout: float = 0.0):
        super().__init__()
        if cell not in ("gru", "lstm"):
            raise ConfigError(f"--model.cell {cell}: choose gru or lstm")
        rnn = nn.GRU if cell == "gru" else nn.LSTM
        self.rnn = rnn(1, hidden_size, num_layers, batch_first=True, dropout=dropout if num_layers > 1 else 0.0)
        self.head = nn.Linear(hidden_size, horizon * n_quantiles)
        self.horizon, self.n_quantiles = horizon, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        seq = x.transpose(1, 2).reshape(B * C, L, 1)  # (B*C, L, 1)
        out, _ = self.rnn(seq)  # (B*C, L, hidden)
        y = self.head(out[:, -1])  # (B*C, H*Q)
        return y.view(B, C, self.horizon, self.n_quantiles).transpose(1, 2)  # (B, H, C, Q)


class Block(nn.Module):
    """Pre-norm transformer block (nanoGPT style, no causal mask)."""

    def __init__(self, d_model: int, n_heads: int, d_ff: int, dropout: float):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = nn.LayerNorm(d_model), nn.LayerNorm(d_model)
        self.qkv = nn.Linear(d_model, 3 * d_model)
        self.proj = nn.Linear(d_model, d_model)
        self.mlp = nn.Sequential(nn.Linear(d_model, d_ff), nn.GELU(), nn.Dropout(dropout), nn.Linear(d_ff, d_model))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        N, P, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).split(D, dim=-1)  # 3 x (N, P, D)
        q, k, v = (t.view(N, P, self.n_heads, D // self.n_heads).transpose(1, 2) for t in (q, k, v))  # (N, h, P, d)
        att = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(D // self.n_heads), dim=-1)  # (N, h, P, P)
        y = (self.drop(att) @ v).transpose(1, 2).reshape(N, P, D)  # (N, P, D)
        x = x + self.drop(self.proj(y))
        return x + self.drop(self.mlp(self.ln2(x)))


class PatchTST(nn.Module):
    """Channel-independent patch transformer (Nie et al., 2023): patches of each channel are tokens."""

    def __init__(self, look_back: int, horizon: int, n_quantiles: int, patch_len: int = 16, stride: int = 8,
                 d_model: int = 128, n_heads: int = 16, depth: int = 3, d_ff: int = 256, dropout: float = 0.2):
        super().__init__()
        if d_model % n_heads:
            raise ConfigError(f"--model.d_model {d_model} must be divisible by --model.n_heads {n_heads}")
        self.patch_len, self.stride = patch_len, stride
        n_patches = (max(look_back, patch_len) - patch_len) // stride + 2  # +1 for the end padding
        starts = torch.arange(n_patches) * stride
        self.register_buffer("patch_index", starts[:, None] + torch.arange(patch_len), persistent=False)  # (P, len)
        self.embed = nn.Linear(patch_len, d_model)
        self.pos = nn.Parameter(torch.randn(1, n_patches, d_model) * 0.02)
        self.blocks = nn.Sequential(*[Block(d_model, n_heads, d_ff, dropout) for _ in range(depth)])
        self.ln = nn.LayerNorm(d_model)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(n_patches * d_model, horizon * n_quantiles)
        self.horizon, self.n_quantiles = horizon, n_quantiles

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, L, C = x.shape
        seq = x.transpose(1, 2).reshape(B * C, L)  # (B*C, L)
        seq = torch.cat([seq, seq[:, -1:].expand(B * C, self.stride)], dim=1)  # (B*C, L+S)
        patches = seq[:, self.patch_index]  # (B*C, P, patch_len); a gather, which ONNX can express
        z = self.drop(self.embed(patches) + self.pos)  # (B*C, P, D)
        z = self.ln(self.blocks(z))  # (B*C, P, D)
        y = self.head(self.drop(z.flatten(1)))  # (B*C, H*Q)
        return y.view(B, C, self.horizon, self.n_quantiles).transpose(1, 2)  # (B, H, C, Q)


class Forecaster(nn.Module):
    """z-scored window (B, L, C) -> sorted quantiles (B, H, C, Q) on the same scale, RevIN inside."""

    def __init__(self, backbone: nn.Module, channels: int, revin: bool = True,
                 mean: list[float] | None = None, std: list[float] | None = None):
        super().__init__()
        self.backbone = backbone
        self.revin = RevIN(channels) if revin else None
        # training statistics, kept in the checkpoint so that export needs no data
        self.register_buffer("mean", torch.tensor(mean or [0.0] * channels, dtype=torch.float32))  # (C,)
        self.register_buffer("std", torch.tensor(std or [1.0] * channels, dtype=torch.float32))  # (C,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.revin is None:
            return torch.sort(self.backbone(x), dim=-1).values
        x, mean, std = self.revin.normalize(x)
        y = self.backbone(x)  # (B, H, C, Q)
        return torch.sort(self.revin.denormalize(y, mean, std), dim=-1).values


class ServedForecaster(nn.Module):
    """The exported graph: raw history (B, L, C) -> raw-scale quantiles (B, H, C, Q)."""

    def __init__(self, net: Forecaster):
        super().__init__()
        self.net = net

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        mean, std = self.net.mean, self.net.std  # (C,)
        y = self.net((history - mean) / std)  # (B, H, C, Q)
        return y * std[:, None] + mean[:, None]


def create_forecaster(cfg: ForecastModelConfig, look_back: int, horizon: int, channels: int,
                      mean: list[float] | None = None, std: list[float] | None = None) -> Forecaster:
    """The network named by `cfg.name`, wrapped with RevIN and sorted quantiles."""
    q = len(cfg.quantiles)
    if cfg.name == "dlinear":
        backbone = DLinear(look_back, horizon, q, cfg.kernel_size)
    elif cfg.name == "rnn":
        backbone = RNNForecaster(horizon, q, cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.dropout)
    elif cfg.name == "patchtst":
        backbone = PatchTST(look_back, horizon, q, cfg.patch_len, cfg.patch_stride, cfg.d_model, cfg.n_heads,
                            cfg.depth, cfg.d_ff, cfg.dropout)
    else:
        raise ConfigError(f"--model.name {cfg.name}: choose dlinear, rnn or patchtst")
    return Forecaster(backbone, channels, cfg.revin, mean, std)
