"""Tabular networks taking RAW columns: the fitted preprocessing is part of the graph.

inputs: numeric (B, F) float32 with NaN for missing, categorical (B, C) int64 codes (0 = unknown)
-> RawFeatures: log (selected columns), fill, robust scaling, clip, missing indicators
-> MLP, FT-Transformer or autoencoder -> logits (B, 2)

Every network splits into `embed(numeric, categorical) -> (x, missing, vectors)` (the
continuous inputs integrated gradients work on: scaled numerics (B, F), missing flags (B, F),
one vector per categorical (B, C, E)) and `head(x, missing, vectors) -> logits`.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn
from torch.nn import functional as F

from deepapps.apps.finance.fraud.features import FeatureSpec


def _drop_v1_alias(module: nn.Module) -> None:
    """deepapps 0.1 also stored each network's layers under a `backbone` alias: drop those keys."""
    def hook(state, prefix, *_):
        for key in [k for k in state if k.startswith(prefix + "backbone.")]:
            del state[key]

    module._register_load_state_dict_pre_hook(hook)


class RawFeatures(nn.Module):
    """Numeric preprocessing fitted on train: sign*log1p, NaN -> median, (x - median) / IQR, clip."""

    def __init__(self, spec: FeatureSpec):
        super().__init__()
        self.register_buffer("center", torch.tensor(spec.center, dtype=torch.float32))
        self.register_buffer("scale", torch.tensor(spec.scale, dtype=torch.float32))
        self.register_buffer("log_mask", torch.tensor(spec.log, dtype=torch.bool))
        self.register_buffer("cardinality", torch.tensor(spec.cardinalities, dtype=torch.int64))
        offsets = [0, *torch.tensor(spec.cardinalities).cumsum(0).tolist()[:-1]] if spec.categorical else []
        self.register_buffer("offsets", torch.tensor(offsets, dtype=torch.int64))
        self.clip = spec.clip

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor | None = None):
        missing = torch.isnan(numeric)  # (B, F)
        x = torch.where(self.log_mask, torch.sign(numeric) * torch.log1p(torch.abs(numeric)), numeric)
        x = torch.where(missing, self.center, x)
        x = ((x - self.center) / self.scale).clamp(-self.clip, self.clip)  # (B, F)
        codes = None
        if categorical is not None:
            known = (categorical >= 0) & (categorical < self.cardinality)
            codes = torch.where(known, categorical, torch.zeros_like(categorical)) + self.offsets  # (B, C)
        return x, missing.to(x.dtype), codes


class TabularMLP(nn.Module):
    """[scaled numerics, missing flags, embeddings] -> (Linear, BatchNorm, ReLU, Dropout) x n -> 2 logits."""

    def __init__(self, spec: FeatureSpec, hidden: list[int], dropout: float, embedding_dim: int):
        super().__init__()
        self.features = RawFeatures(spec)
        n_cat = len(spec.categorical)
        self.embedding = nn.Embedding(sum(spec.cardinalities), embedding_dim) if n_cat else None
        width, blocks = 2 * len(spec.numeric) + n_cat * embedding_dim, []
        for h in hidden:
            blocks += [nn.Linear(width, h), nn.BatchNorm1d(h), nn.ReLU(), nn.Dropout(dropout)]
            width = h
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(width, 2)
        _drop_v1_alias(self)

    def embed(self, numeric: torch.Tensor, categorical: torch.Tensor | None = None) -> tuple:
        x, missing, codes = self.features(numeric, categorical)
        return x, missing, self.embedding(codes) if self.embedding is not None else None  # vectors (B, C, E)

    def head_from(self, x: torch.Tensor, missing: torch.Tensor, vectors: torch.Tensor | None) -> torch.Tensor:
        parts = [x, missing] + ([vectors.flatten(1)] if vectors is not None else [])  # (B, 2F + C * E)
        return self.head(self.body(torch.cat(parts, dim=1)))  # (B, 2)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_from(*self.embed(numeric, categorical))


class Attention(nn.Module):
    """Multi-head self-attention written out (exports to plain ONNX MatMul/Softmax)."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.qkv, self.proj, self.drop = heads, nn.Linear(d, 3 * d), nn.Linear(d, d), nn.Dropout(dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, T, D = x.shape
        q, k, v = self.qkv(x).view(B, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, T, d)
        att = self.drop((q @ k.transpose(-2, -1) / math.sqrt(D // self.heads)).softmax(-1))  # (B, H, T, T)
        return self.proj((att @ v).transpose(1, 2).reshape(B, T, D))


class Block(nn.Module):
    """Pre-norm transformer layer."""

    def __init__(self, d: int, heads: int, dropout: float):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(d), Attention(d, heads, dropout)
        self.norm2 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, 2 * d), nn.GELU(), nn.Dropout(dropout), nn.Linear(2 * d, d))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class FTTransformer(nn.Module):
    """FT-Transformer-like (Gorishniy et al. 2021): a token per feature + [CLS], self-attention."""

    def __init__(self, spec: FeatureSpec, d_token: int, n_layers: int, n_heads: int, dropout: float):
        super().__init__()
        if d_token % n_heads:
            raise ValueError(f"--model.d_token {d_token} must be a multiple of --model.n_heads {n_heads}")
        n_num = len(spec.numeric)
        self.features = RawFeatures(spec)
        self.num_weight = nn.Parameter(torch.randn(n_num, d_token) / math.sqrt(d_token))
        self.num_bias = nn.Parameter(torch.zeros(n_num, d_token))
        self.missing = nn.Parameter(torch.zeros(n_num, d_token))  # added where the value was missing
        self.embedding = nn.Embedding(sum(spec.cardinalities), d_token) if spec.categorical else None
        self.cls = nn.Parameter(torch.zeros(1, 1, d_token))
        self.blocks = nn.Sequential(*[Block(d_token, n_heads, dropout) for _ in range(n_layers)])
        self.norm, self.head = nn.LayerNorm(d_token), nn.Linear(d_token, 2)
        _drop_v1_alias(self)

    def embed(self, numeric: torch.Tensor, categorical: torch.Tensor | None = None) -> tuple:
        x, missing, codes = self.features(numeric, categorical)
        return x, missing, self.embedding(codes) if self.embedding is not None else None  # vectors (B, C, D)

    def head_from(self, x: torch.Tensor, missing: torch.Tensor, vectors: torch.Tensor | None) -> torch.Tensor:
        tokens = x.unsqueeze(-1) * self.num_weight + self.num_bias + missing.unsqueeze(-1) * self.missing  # (B, F, D)
        parts = [self.cls.expand(len(x), -1, -1), tokens] + ([vectors] if vectors is not None else [])
        h = self.blocks(torch.cat(parts, dim=1))  # (B, 1 + F + C, D)
        return self.head(F.relu(self.norm(h[:, 0])))  # (B, 2)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_from(*self.embed(numeric, categorical))


class TabularAutoencoder(nn.Module):
    """Anomaly score for scarce labels: reconstruct [scaled numerics, missing flags, one-hot
    categories]; the mean squared reconstruction error e is the score.

    To keep the app's contract (softmax over two logits, column 1 = fraud) the logits are
    [0, log e], so the fraud "probability" is e / (1 + e): monotone in e, in [0, 1).
    """

    def __init__(self, spec: FeatureSpec, hidden: list[int], dropout: float):
        super().__init__()
        self.features = RawFeatures(spec)
        self.n_codes = total = sum(spec.cardinalities) if spec.categorical else 0
        # older checkpoints stored a (K, K) identity here; one_hot needs no table (K^2 floats in the graph)
        self._register_load_state_dict_pre_hook(lambda state, prefix, *_: state.pop(prefix + "onehot", None))
        width = 2 * len(spec.numeric) + total
        widths = [width, *hidden]
        encoder, decoder = [], []
        for a, b in zip(widths[:-1], widths[1:]):
            encoder += [nn.Linear(a, b), nn.ReLU(), nn.Dropout(dropout)]
        for a, b in zip(widths[::-1][:-1], widths[::-1][1:]):
            decoder += [nn.Linear(a, b), nn.ReLU()]
        self.encoder = nn.Sequential(*encoder[:-2])  # linear bottleneck
        self.decoder = nn.Sequential(*decoder[:-1])  # linear output
        _drop_v1_alias(self)

    def embed(self, numeric: torch.Tensor, categorical: torch.Tensor | None = None) -> tuple:
        x, missing, codes = self.features(numeric, categorical)
        return x, missing, F.one_hot(codes, self.n_codes).float() if self.n_codes else None  # vectors (B, C, K)

    def reconstruction_error(self, x: torch.Tensor, missing: torch.Tensor, vectors: torch.Tensor | None) -> torch.Tensor:
        """(B,) mean squared error over the D reconstructed values."""
        target = torch.cat([x, missing] + ([vectors.sum(1)] if vectors is not None else []), dim=1)  # (B, D)
        return (self.decoder(self.encoder(target)) - target).pow(2).mean(1)

    def head_from(self, x: torch.Tensor, missing: torch.Tensor, vectors: torch.Tensor | None) -> torch.Tensor:
        error = self.reconstruction_error(x, missing, vectors)
        return torch.stack([torch.zeros_like(error), torch.log(error + 1e-12)], dim=1)  # (B, 2)

    def forward(self, numeric: torch.Tensor, categorical: torch.Tensor | None = None) -> torch.Tensor:
        return self.head_from(*self.embed(numeric, categorical))


def fold_batch_norm(net: nn.Module) -> nn.Module:
    """A copy of `net` (eval mode) where each Linear -> BatchNorm1d pair is one Linear.

    Same outputs (up to float rounding) and a shorter ONNX graph: ONNX Runtime does not fold
    BatchNormalization into Gemm, and without it Gemm + Relu fuse into one kernel.
    """
    from torch.nn.utils.fusion import fuse_linear_bn_eval

    net = copy.deepcopy(net).eval()
    for module in list(net.modules()):
        if not isinstance(module, nn.Sequential):
            continue
        for i in range(len(module) - 1):
            linear, norm = module[i], module[i + 1]
            if isinstance(linear, nn.Linear) and isinstance(norm, nn.BatchNorm1d) and norm.track_running_stats:
                module[i], module[i + 1] = fuse_linear_bn_eval(linear, norm), nn.Identity()
    return net


def served_module(net: nn.Module, temperature: float = 1.0) -> nn.Module:
    """What fit exports: the network with batch norm folded, then softmax (B, 2).

    (Folding the embeddings into the first layer as gathered rows was tried: ORT ran it 1.5x
    slower than the one Gemm over the concatenated inputs.)
    """
    from deepapps.core.training.heads import WithProbabilities

    return WithProbabilities(fold_batch_norm(net), False, temperature)


def create_model(spec: FeatureSpec, cfg) -> nn.Module:
    """`cfg.arch`: `mlp`, `ft_transformer` or `autoencoder` (cfg = TabularModelConfig)."""
    if cfg.arch == "mlp":
        return TabularMLP(spec, cfg.hidden, cfg.dropout, cfg.embedding_dim)
    if cfg.arch in ("ft_transformer", "ft-transformer", "ftt"):
        return FTTransformer(spec, cfg.d_token, cfg.n_layers, cfg.n_heads, cfg.dropout)
    if cfg.arch == "autoencoder":
        if not cfg.ae_hidden:
            from deepapps.core.errors import ConfigError

            raise ConfigError("--model.ae_hidden: give at least one width (the bottleneck)")
        return TabularAutoencoder(spec, cfg.ae_hidden, cfg.dropout)
    from deepapps.core.errors import ConfigError

    raise ConfigError(f"--model.arch {cfg.arch}: choose mlp, ft_transformer or autoencoder")
