"""PatchTST (Nie et al., 2023): patches of each channel are the tokens of a transformer."""

from __future__ import annotations

import math

import torch
from torch import nn

from deepapps.core.errors import ConfigError


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
        B, C, L = x.shape
        seq = x.reshape(B * C, L)  # (B*C, L)
        seq = torch.cat([seq, seq[:, -1:].expand(B * C, self.stride)], dim=1)  # (B*C, L+S)
        patches = seq[:, self.patch_index]  # (B*C, P, patch_len); a gather, which ONNX can express
        z = self.drop(self.embed(patches) + self.pos)  # (B*C, P, D)
        z = self.ln(self.blocks(z))  # (B*C, P, D)
        y = self.head(self.drop(z.flatten(1)))  # (B*C, H*Q)
        return y.view(B, C, self.horizon, self.n_quantiles)  # (B, C, H, Q)
