"""What every app's runtime `evaluate` returns (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Evaluation:
    """Metrics of a model on one split, with the raw targets and outputs for plots.

    Attributes:
        metrics: JSON-able metrics (printed by `evaluate`, stored in metrics.json).
        targets: (N,) class ids, or (N, L) multi-hot.
        probs: (N, K) probabilities.
        labels: class names.
        problem: `binary`, `multiclass` or `multilabel`.
    """

    metrics: dict
    targets: np.ndarray
    probs: np.ndarray
    labels: list[str]
    problem: str = "multiclass"

    @property
    def scores(self) -> np.ndarray:
        """(N,) positive-class probability of a binary problem."""
        return self.probs[:, 1]
