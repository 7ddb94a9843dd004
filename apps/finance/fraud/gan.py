"""GAN oversampling of the fraud class (training only): a small WGAN-GP on the model's feature space.

The GAN learns the train frauds as the network sees them: robust-scaled numerics (clipped like
the graph), missing flags and one-hot categories. Generated rows are mapped back to raw
inputs (inverse scaling and log, NaN where the flag says missing, the argmax category) and
appended to the training tensors with label fraud; validation, test and the baselines never
see them. WGAN-GP: Gulrajani et al. 2017 (critic without batch norm, gradient penalty 10,
5 critic steps per generator step, Adam(1e-4, betas 0.5/0.9)).
"""

from __future__ import annotations

import numpy as np
import polars as pl
import torch
from torch import nn

from deepapps.apps.finance.fraud.features import Encoded, FeatureSpec

NOISE = 32


def to_feature_space(enc: Encoded, spec: FeatureSpec) -> np.ndarray:
    """(N, D) float32: scaled numerics, missing flags, one-hot codes (one block per categorical)."""
    x = enc.numeric.astype(np.float64)
    missing = np.isnan(x)
    x = np.where(spec.log, np.sign(x) * np.log1p(np.abs(x)), x)
    x = np.clip((np.where(missing, spec.center, x) - np.asarray(spec.center)) / np.asarray(spec.scale), -spec.clip, spec.clip)
    onehots = [np.eye(k)[np.clip(enc.categorical[:, j], 0, k - 1)] for j, k in enumerate(spec.cardinalities)]
    return np.concatenate([x, missing, *onehots], axis=1).astype(np.float32)


def from_feature_space(z: np.ndarray, spec: FeatureSpec,
                       rng: np.random.Generator | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of to_feature_space: (raw numerics (N, F) float32 with NaN, codes (N, C) int64).

    With `rng`, a missing flag is a probability and a one-hot block a distribution to sample
    from (a generator's 0.03 means "missing 3% of the time", not "never"); without, the flag is
    thresholded at 0.5 and the category is the argmax (exact inverse on real rows).
    """
    f = len(spec.numeric)
    x = z[:, :f].astype(np.float64) * np.asarray(spec.scale) + np.asarray(spec.center)
    x = np.where(spec.log, np.sign(x) * np.expm1(np.abs(x)), x)
    flags = z[:, f:2 * f]
    x = np.where(flags > (rng.random(flags.shape) if rng is not None else 0.5), np.nan, x)
    codes, start = [], 2 * f
    for k in spec.cardinalities:
        block = z[:, start:start + k].astype(np.float64)
        if rng is None:
            codes.append(block.argmax(1))
        else:
            cdf = np.cumsum(block / block.sum(1, keepdims=True), axis=1)
            codes.append(np.minimum((rng.random((len(z), 1)) > cdf).sum(1), k - 1))
        start += k
    categorical = np.stack(codes, 1) if codes else np.zeros((len(z), 0), np.int64)
    return x.astype(np.float32), categorical.astype(np.int64)


class Generator(nn.Module):
    """Noise -> a feature-space row: tanh-bounded numerics, sigmoid flags, a softmax per categorical."""

    def __init__(self, spec: FeatureSpec, width: int = 128):
        super().__init__()
        self.f, self.cards, self.clip = len(spec.numeric), spec.cardinalities, spec.clip
        self.net = nn.Sequential(nn.Linear(NOISE, width), nn.ReLU(), nn.Linear(width, width), nn.ReLU(),
                                 nn.Linear(width, 2 * self.f + sum(self.cards)))

    def forward(self, noise: torch.Tensor) -> torch.Tensor:
        h = self.net(noise)
        parts = [self.clip * torch.tanh(h[:, :self.f] / self.clip), torch.sigmoid(h[:, self.f:2 * self.f])]
        parts += [block.softmax(-1) for block in h[:, 2 * self.f:].split(self.cards, dim=1)] if self.cards else []
        return torch.cat(parts, dim=1)


def train_gan(real: np.ndarray, spec: FeatureSpec, steps: int = 1000, batch: int = 128, seed: int = 0) -> Generator:
    """WGAN-GP on the rows of `real` (N, D) (feature space); the caller's random state is left as it was."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return _train_gan(real, spec, steps, batch)


def _train_gan(real: np.ndarray, spec: FeatureSpec, steps: int, batch: int) -> Generator:
    data = torch.from_numpy(real)
    gen = Generator(spec)
    critic = nn.Sequential(nn.Linear(data.shape[1], 128), nn.LeakyReLU(0.2), nn.Linear(128, 128), nn.LeakyReLU(0.2),
                           nn.Linear(128, 1))
    opt_g = torch.optim.Adam(gen.parameters(), 1e-4, betas=(0.5, 0.9))
    opt_c = torch.optim.Adam(critic.parameters(), 1e-4, betas=(0.5, 0.9))
    for _ in range(steps):
        for _ in range(5):
            x = data[torch.randint(0, len(data), (batch,))]
            with torch.no_grad():
                fake = gen(torch.randn(batch, NOISE))
            mix = torch.rand(batch, 1)
            between = (mix * x + (1 - mix) * fake).requires_grad_(True)
            grad = torch.autograd.grad(critic(between).sum(), between, create_graph=True)[0]
            penalty = ((grad.norm(dim=1) - 1) ** 2).mean()
            loss_c = critic(fake).mean() - critic(x).mean() + 10 * penalty
            opt_c.zero_grad()
            loss_c.backward()
            opt_c.step()
        loss_g = -critic(gen(torch.randn(batch, NOISE))).mean()
        opt_g.zero_grad()
        loss_g.backward()
        opt_g.step()
    return gen.eval()


def oversample(enc: Encoded, spec: FeatureSpec, n_new: int, steps: int = 1000, seed: int = 0) -> Encoded:
    """`n_new` synthetic rows like the (fraud) rows of `enc`, as raw model inputs."""
    gen = train_gan(to_feature_space(enc, spec), spec, steps, seed=seed)
    with torch.no_grad():
        z = gen(torch.randn(n_new, NOISE, generator=torch.Generator().manual_seed(seed + 1))).numpy()
    numeric, categorical = from_feature_space(z, spec, np.random.default_rng(seed + 2))
    return Encoded(numeric, categorical, pl.Series([None] * n_new, dtype=pl.String), {})
