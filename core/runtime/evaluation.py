"""What every app's `evaluate` returns (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Evaluation:
    """Metrics of a model on one split (printed by `evaluate`, stored in metrics.json)."""

    metrics: dict


@dataclass
class ClassificationEvaluation(Evaluation):
    """A classifier's metrics with the raw targets and outputs, for plots.

    Attributes:
        targets: (N,) class ids, or (N, L) multi-hot.
        probs: (N, K) probabilities.
        labels: class names.
        problem: `binary`, `multiclass` or `multilabel`.
    """

    targets: np.ndarray
    probs: np.ndarray
    labels: list[str]
    problem: str = "multiclass"

    @property
    def scores(self) -> np.ndarray:
        """(N,) positive-class probability of a binary problem."""
        return self.probs[:, 1]
