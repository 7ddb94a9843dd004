"""Loss weights from the training split's class counts (shared by every classification data module)."""

from __future__ import annotations

import numpy as np

from deepapps.core.errors import ConfigError


def class_weights(mode: str | None, train_counts: list[int] | np.ndarray) -> list[float] | None:
    """None, `balanced` (n / (K * count)), `sqrt` (its square root) or explicit weights `w0,w1,...`.

    Empty classes count as one row, so a class absent from train gets a large, finite weight.
    """
    if not mode:
        return None
    counts = np.maximum(np.asarray(train_counts, dtype=float), 1)
    if mode in ("balanced", "sqrt"):
        weights = counts.sum() / (len(counts) * counts)
        return (np.sqrt(weights) if mode == "sqrt" else weights).tolist()
    try:
        weights = [float(w) for w in mode.split(",")]
    except ValueError:
        weights = []
    if len(weights) != len(counts):
        raise ConfigError(f"--optim.class_weights {mode}: use null, balanced, sqrt or {len(counts)} "
                          "comma-separated numbers")
    return weights
