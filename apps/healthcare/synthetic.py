"""Synthetic MedMNIST-style chest X-rays, generated (numpy only) so `fit` works with no data.

`builtin:synthetic-xray` is a binary task shaped like PneumoniaMNIST: 28x28 grey images of a
torso (two dark lung fields, a bright mediastinum) where class 1 (`pneumonia`) adds one to
three soft opacities inside the lungs. Opacity contrast varies from faint to obvious, and
every image gets its own exposure, shift and noise, so the task is learnable but not
trivial. Classes are imbalanced like PneumoniaMNIST (about 74% pneumonia in train). These
are drawings, not radiographs: use them to try the app, never to judge a model.

`builtin:synthetic-ecg` (`synthetic_ecg`) is the same idea for the ECG task: 140-sample
heartbeats in three imbalanced classes, z-normalised per beat like the UCR files.

    python -m deepapps.apps.healthcare.synthetic out.npz [--size 28] [--seed 0]   # write it as a .npz
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepapps.core.runtime.io import atomic_write

NAME = "builtin:synthetic-xray"
LABELS = ("normal", "pneumonia")
SPLIT_SIZES = {"train": 800, "val": 200, "test": 300}
POSITIVE_SHARE = {"train": 0.74, "val": 0.74, "test": 0.62}  # PneumoniaMNIST's test is less skewed


def synthetic_xray_arrays(size: int = 28, seed: int = 0, sizes: dict[str, int] | None = None) -> dict[str, np.ndarray]:
    """MedMNIST-format arrays: {split}_images (N, size, size) uint8, {split}_labels (N, 1), label_names."""
    rng = np.random.default_rng(seed)
    arrays: dict[str, np.ndarray] = {"label_names": np.asarray(LABELS)}
    for split, n in (sizes or SPLIT_SIZES).items():
        labels = (rng.random(n) < POSITIVE_SHARE.get(split, 0.7)).astype(np.uint8)
        arrays[f"{split}_images"] = np.stack([_xray(rng, size, bool(y)) for y in labels])
        arrays[f"{split}_labels"] = labels.reshape(n, 1)
    return arrays


def _xray(rng: np.random.Generator, size: int, sick: bool) -> np.ndarray:
    y, x = np.mgrid[0:size, 0:size] / (size - 1) * 2 - 1  # (H, W) in [-1, 1]
    x = x + rng.normal(0, 0.05)
    y = y + rng.normal(0, 0.05)
    torso = _ellipse(x, y, 0, 0.1, 0.95, 1.1, soft=0.15)
    lungs = sum(_ellipse(x, y, side * 0.42, -0.05, 0.3, 0.6, soft=0.12) for side in (-1, 1))
    heart = _ellipse(x, y, 0.08, 0.25, 0.25, 0.35, soft=0.1)
    ribs = 0.06 * np.sin(y * 18 + rng.uniform(0, 6.3)) * lungs
    image = 0.25 + 0.5 * torso - 0.38 * lungs + 0.3 * heart + ribs
    if sick:
        for _ in range(rng.integers(1, 4)):
            side = rng.choice((-1, 1))
            cx, cy = side * 0.42 + rng.normal(0, 0.1), rng.uniform(-0.5, 0.4)
            radius = rng.uniform(0.1, 0.25)
            image = image + rng.uniform(0.08, 0.35) * _ellipse(x, y, cx, cy, radius, radius * rng.uniform(0.7, 1.4), soft=radius)
    else:  # vessels and overlap that a reader must not take for opacity
        for _ in range(rng.integers(0, 3)):
            cx, cy = rng.choice((-1, 1)) * 0.3 + rng.normal(0, 0.1), rng.uniform(-0.4, 0.3)
            image = image + rng.uniform(0.03, 0.12) * _ellipse(x, y, cx, cy, 0.06, 0.12, soft=0.06)
    image = image * rng.uniform(0.8, 1.2) + rng.uniform(-0.08, 0.08)  # exposure
    image = image + rng.normal(0, 0.04, image.shape)
    return np.clip(image * 255, 0, 255).astype(np.uint8)


def _ellipse(x, y, cx, cy, rx, ry, soft: float) -> np.ndarray:
    """1 inside the ellipse, falling smoothly to 0 over `soft` outside it."""
    r = np.sqrt(((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2)
    return np.clip((1 + soft - r) / soft, 0, 1) if soft > 0 else (r <= 1).astype(float)



# --- heartbeats: builtin:synthetic-ecg ---------------------------------------------------------

ECG_NAME = "builtin:synthetic-ecg"
ECG_LABELS = ("normal", "pvc", "flat_t")
ECG_SHARES = (0.7, 0.2, 0.1)  # imbalanced like ECG5000


def synthetic_ecg(n: int = 600, length: int = 140, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Single-lead heartbeats drawn as sums of Gaussians (P, Q, R, S, T waves), z-normalised per beat
    like the UCR files. `normal`: all waves; `pvc`: no P wave, a wide tall QRS and an inverted T;
    `flat_t`: a normal beat whose T wave is flat or inverted. Every beat gets its own timing jitter,
    amplitudes, baseline drift and noise. Drawings, not recordings: for tests and trying the app.

    Returns:
        signals (n, length) float32 and class ids (n,) int64 into ECG_LABELS.
    """
    rng = np.random.default_rng(seed)
    targets = rng.choice(len(ECG_LABELS), size=n, p=ECG_SHARES)
    t = np.linspace(0.0, 1.0, length)
    signals = np.stack([_beat(rng, t, int(k)) for k in targets]).astype(np.float32)
    return signals, targets.astype(np.int64)


def _beat(rng: np.random.Generator, t: np.ndarray, kind: int) -> np.ndarray:
    shift = rng.normal(0, 0.02)
    waves = {  # name: (centre, width, amplitude)
        "p": (0.2, 0.03, 0.15), "q": (0.33, 0.012, -0.15), "r": (0.36, 0.015, 1.0),
        "s": (0.39, 0.012, -0.25), "t": (0.62, 0.06, 0.3),
    }
    if kind == 1:  # premature ventricular contraction
        waves |= {"p": (0.2, 0.03, 0.0), "q": (0.3, 0.03, -0.2), "r": (0.36, 0.04, 1.3), "s": (0.44, 0.04, -0.5),
                  "t": (0.64, 0.07, -0.35)}
    elif kind == 2:
        waves["t"] = (0.62, 0.06, rng.uniform(-0.15, 0.05))
    beat = sum(a * rng.uniform(0.8, 1.2) * np.exp(-((t - c - shift) / w) ** 2)
               for c, w, a in waves.values())
    beat = beat + rng.uniform(-0.05, 0.05) * t + rng.normal(0, 0.03, t.shape)  # drift and noise
    return (beat - beat.mean()) / (beat.std() + 1e-8)


def _savez(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as f:
        np.savez_compressed(f, **arrays)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="write the synthetic chest X-rays as a MedMNIST-style .npz")
    parser.add_argument("out")
    parser.add_argument("--size", type=int, default=28)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    arrays = synthetic_xray_arrays(args.size, args.seed)
    atomic_write(args.out, lambda tmp: _savez(tmp, arrays))  # a file object: savez would append .npz to tmp
    print(args.out)


if __name__ == "__main__":
    main()
