"""The one stratified split every app uses (images, signals, texts, tables), torch-free.

Fit and evaluate call it with the same settings (they travel in the model), so evaluate scores
exactly the rows fit held out.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepapps.core.errors import ConfigError, DataError


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Both in [0, 1) and together below 1; else a one-line error."""
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError(f"--data.val_fraction {val_fraction} and --data.test_fraction {test_fraction}: "
                          "each must be in [0, 1) and together below 1")


def stratified_split(targets: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """train/val/test indices (sorted): `test_fraction` of each class, then `val_fraction` (of all)
    from the rest, seeded.

    Args:
        targets: (N,) class ids; multi-hot (N, L) targets are split unstratified.
    """
    check_fractions(val_fraction, test_fraction)
    rng = np.random.default_rng(seed)
    rest, test = carve(np.arange(len(targets)), targets, test_fraction, rng)
    train, val = carve(rest, targets, val_fraction / (1 - test_fraction), rng)
    return {"train": train, "val": val, "test": test}


def check_splits(splits: dict[str, np.ndarray], path: str | Path) -> None:
    """Every split must hold at least one item: fit validates and tests on them."""
    for name in ("train", "val", "test"):
        if len(splits[name]) == 0:
            raise DataError(f"{path}: the {name} split is empty; the dataset is too small")


def carve(indices: np.ndarray, targets: np.ndarray, fraction: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Split `indices` into (kept, held out) with about `fraction` of each class held out.

    A class of three or more members gives at least one to the held-out part, and always keeps
    one; a fraction of 0 holds nothing out.
    """
    keys = targets[indices] if targets.ndim == 1 else np.zeros(len(indices), dtype=np.int64)
    keep, held = [], []
    for value in np.unique(keys):
        members = rng.permutation(indices[keys == value])
        n_held = int(round(len(members) * fraction))
        if fraction > 0:
            n_held = min(max(n_held, 1 if len(members) >= 3 else 0), len(members) - 1)
        held.append(members[:n_held])
        keep.append(members[n_held:])
    if not keep:
        return indices[:0], indices[:0]
    return np.sort(np.concatenate(keep)).astype(np.int64), np.sort(np.concatenate(held)).astype(np.int64)
