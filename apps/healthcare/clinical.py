"""Operating thresholds, sensitivity/specificity and temperature scaling, on numpy arrays (no torch;
scipy only for fitting the temperature).

Used at fit time (on the validation split, to choose what goes into the model) and at
evaluate time (on the test split, to report what the shipped model does).
"""

from __future__ import annotations

import re

import numpy as np

from deepapps.core.errors import ConfigError

_FLOOR = re.compile(r"^(sensitivity|specificity)\s*>=\s*([0-9.]+)$")


def check_rule(rule: str) -> str:
    """`youden`, `sensitivity>=X`, `specificity>=X` or a probability in [0, 1]; else ConfigError."""
    text = rule.strip().lower().replace(" ", "")
    if text == "youden" or _FLOOR.match(text) and 0 < float(_FLOOR.match(text).group(2)) <= 1:
        return text
    try:
        if 0.0 <= float(text) <= 1.0:
            return text
    except ValueError:
        pass
    raise ConfigError(
        f"--clinical.threshold {rule}: choose youden, sensitivity>=X, specificity>=X (0 < X <= 1) or a probability"
    )


def choose_threshold(positive: np.ndarray, scores: np.ndarray, rule: str) -> float:
    """The probability threshold (predict positive when score >= threshold) that `rule` picks.

    `youden` maximises sensitivity + specificity - 1; `sensitivity>=X` takes the highest
    threshold whose sensitivity is at least X (so the best specificity at that floor);
    `specificity>=X` the lowest threshold whose specificity is at least X.
    """
    rule = check_rule(rule)
    positive = np.asarray(positive).astype(bool)
    scores = np.asarray(scores, dtype=np.float64)
    if not rule[0].isalpha():
        return float(rule)
    if positive.all() or not positive.any():
        return 0.5  # one outcome only: no curve to choose on
    candidates = np.unique(np.concatenate([scores, [1.0 + 1e-9]]))  # score >= t, every distinct cut
    sens = np.array([(scores[positive] >= t).mean() for t in candidates])
    spec = np.array([(scores[~positive] < t).mean() for t in candidates])
    if rule == "youden":
        best = int(np.argmax(sens + spec - 1))
    else:
        kind, floor = _FLOOR.match(rule).groups()
        ok = (sens if kind == "sensitivity" else spec) >= float(floor) - 1e-12
        best = int(np.flatnonzero(ok)[-1] if kind == "sensitivity" else np.flatnonzero(ok)[0])
    return float(candidates[best])


def operating_point(positive: np.ndarray, scores: np.ndarray, threshold: float) -> dict:
    """Sensitivity, specificity, PPV, NPV, accuracy and the 2x2 counts at `threshold`."""
    positive = np.asarray(positive).astype(bool)
    predicted = np.asarray(scores) >= threshold
    tp, fn = int((predicted & positive).sum()), int((~predicted & positive).sum())
    tn, fp = int((~predicted & ~positive).sum()), int((predicted & ~positive).sum())
    return {
        "threshold": float(threshold),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
        "ppv": _ratio(tp, tp + fp),
        "npv": _ratio(tn, tn + fn),
        "accuracy": _ratio(tp + tn, len(positive)),
        "tp": tp, "fn": fn, "tn": tn, "fp": fp,
    }


def per_class_specificity(targets: np.ndarray, preds: np.ndarray, n_classes: int) -> list[float | None]:
    """One-vs-rest specificity of each class for single-label predictions."""
    return [_ratio(int(((preds != k) & (targets != k)).sum()), int((targets != k).sum())) for k in range(n_classes)]


def fit_temperature(logits: np.ndarray, targets: np.ndarray, multilabel: bool = False) -> float:
    """The T > 0 minimising the negative log-likelihood of softmax(logits / T) (sigmoid for multilabel)."""
    from scipy.optimize import minimize_scalar  # fit side only: serving needs no scipy

    logits = np.asarray(logits, dtype=np.float64)
    targets = np.asarray(targets)
    if len(logits) == 0:
        return 1.0
    result = minimize_scalar(lambda log_t: nll(logits / np.exp(log_t), targets, multilabel),
                             bounds=(np.log(0.05), np.log(20.0)), method="bounded")
    return float(np.exp(result.x))


def nll(logits: np.ndarray, targets: np.ndarray, multilabel: bool = False) -> float:
    """Mean negative log-likelihood of the targets under softmax (or sigmoid) logits."""
    from scipy.special import expit, log_softmax

    if multilabel:
        p = np.clip(expit(logits), 1e-12, 1 - 1e-12)
        return float(-np.mean(targets * np.log(p) + (1 - targets) * np.log(1 - p)))
    return float(-np.mean(log_softmax(logits, axis=1)[np.arange(len(targets)), targets.astype(int).reshape(-1)]))


def _ratio(a: int, b: int) -> float | None:
    return float(a / b) if b else None
