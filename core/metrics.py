"""Classification metrics on numpy arrays (scikit-learn; no torch).

One entry point, `classification_metrics`, covers binary, multiclass and
multilabel problems and returns plain Python numbers, ready for JSON.
"""

from __future__ import annotations

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    average_precision_score,
    balanced_accuracy_score,
    confusion_matrix,
    f1_score,
    precision_recall_fscore_support,
    roc_auc_score,
)

from deepapps.core.errors import ConfigError

PROBLEMS = ("binary", "multiclass", "multilabel")


def classification_metrics(
    problem: str,
    targets: np.ndarray,
    probs: np.ndarray,
    labels: list[str],
    threshold: float = 0.5,
) -> dict:
    """Compute accuracy, macro F1, AUROC (and AUPRC) plus per-class numbers.

    Args:
        problem: "binary", "multiclass" or "multilabel".
        targets: (N,) int class ids, or (N, L) 0/1 for multilabel.
        probs: (N, K) softmax probabilities, or (N, L) sigmoid outputs for multilabel.
        labels: class names, one per column of `probs`.
        threshold: decision threshold for multilabel predictions.

    Returns:
        A JSON-serialisable dict with `n`, `accuracy`, `macro_f1`, `auroc`,
        `auprc` (binary/multilabel), `per_class` and, for single-label problems,
        `balanced_accuracy`, `classes_scored` (the classes present or predicted, which macro-F1
        averages) and `confusion_matrix` (rows = true, cols = predicted). Undefined scores are None.
    """
    if problem not in PROBLEMS:
        raise ConfigError(f"unknown problem {problem!r}; expected one of {', '.join(PROBLEMS)}")
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim != 2 or probs.shape[1] != len(labels):
        raise ValueError(f"probs must be (N, {len(labels)}), got shape {probs.shape}")
    if problem == "multilabel":
        return _multilabel(np.asarray(targets).astype(int), probs, labels, threshold)
    return _single_label(problem, np.asarray(targets).astype(int).reshape(-1), probs, labels)


def _single_label(problem: str, targets: np.ndarray, probs: np.ndarray, labels: list[str]) -> dict:
    """Metrics for binary and multiclass problems (predictions = argmax)."""
    classes = list(range(len(labels)))
    preds = probs.argmax(axis=1)
    per_class_auroc = [_binary_auroc(targets == k, probs[:, k]) for k in classes]
    # a class absent from the split and never predicted has no F1 (torchmetrics leaves it out too,
    # so the validation monitor and the ONNX evaluation agree); AUROC likewise averages present classes
    scored = sorted(set(targets.tolist()) | set(preds.tolist()))
    out: dict = {
        "n": int(len(targets)),
        "accuracy": _float(accuracy_score(targets, preds)) if len(targets) else None,
        "macro_f1": _macro_f1(targets, preds, scored),
        "balanced_accuracy": _float(balanced_accuracy_score(targets, preds)) if len(targets) else None,
        "classes_scored": [labels[k] for k in scored],
    }
    if problem == "binary":
        out["auroc"] = per_class_auroc[1] if len(classes) > 1 else None
        out["auprc"] = _binary_auprc(targets == 1, probs[:, 1]) if len(classes) > 1 else None
    else:
        out["auroc"] = _multiclass_auroc(targets, probs, classes)
    out["per_class"] = _per_class(targets, preds, labels, classes, per_class_auroc)
    out["confusion_matrix"] = confusion_matrix(targets, preds, labels=classes).tolist()
    return out


def _multilabel(targets: np.ndarray, probs: np.ndarray, labels: list[str], threshold: float) -> dict:
    """Metrics for multilabel problems (predictions = probs >= threshold)."""
    preds = (probs >= threshold).astype(int)
    aurocs = [_binary_auroc(targets[:, j] == 1, probs[:, j]) for j in range(len(labels))]
    auprcs = [_binary_auprc(targets[:, j] == 1, probs[:, j]) for j in range(len(labels))]
    return {
        "n": int(len(targets)),
        "accuracy": _float(accuracy_score(targets, preds)) if len(targets) else None,
        "macro_f1": _macro_f1(targets, preds, None),
        "auroc": _mean_defined(aurocs),
        "auprc": _mean_defined(auprcs),
        "per_class": _per_class(targets, preds, labels, None, aurocs),
    }


def _per_class(
    targets: np.ndarray,
    preds: np.ndarray,
    labels: list[str],
    classes: list[int] | None,
    aurocs: list[float | None],
) -> dict:
    """Precision, recall, F1, support and one-vs-rest AUROC for each label."""
    precision, recall, f1, support = precision_recall_fscore_support(
        targets, preds, labels=classes, average=None, zero_division=0
    )
    return {
        name: {
            "precision": _float(precision[i]),
            "recall": _float(recall[i]),
            "f1": _float(f1[i]),
            "support": int(support[i]),
            "auroc": aurocs[i],
        }
        for i, name in enumerate(labels)
    }


def _macro_f1(targets: np.ndarray, preds: np.ndarray, classes: list[int] | None) -> float | None:
    """Macro F1 over `classes` (all labels for multilabel)."""
    if len(targets) == 0:
        return None
    return _float(f1_score(targets, preds, labels=classes, average="macro", zero_division=0))


def _multiclass_auroc(targets: np.ndarray, probs: np.ndarray, classes: list[int]) -> float | None:
    """One-vs-rest macro AUROC over the classes present in `targets`.

    Equal to sklearn's `roc_auc_score(multi_class="ovr", average="macro")` when every
    class is present, without its check that rows sum to exactly 1.
    """
    present = [k for k in classes if np.any(targets == k)]
    if len(present) < 2:
        return None
    return _mean_defined([_binary_auroc(targets == k, probs[:, k]) for k in present])


def _binary_auroc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC of one positive class, or None when only one outcome occurs."""
    if len(np.unique(positive)) < 2:
        return None
    return _float(roc_auc_score(positive.astype(int), scores))


def _binary_auprc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """Average precision of one positive class, or None when it never occurs."""
    if not np.any(positive):
        return None
    return _float(average_precision_score(positive.astype(int), scores))


def _mean_defined(values: list[float | None]) -> float | None:
    """Mean of the values that are not None (None if there are none)."""
    defined = [v for v in values if v is not None]
    return _float(np.mean(defined)) if defined else None


def _float(value: float | np.floating) -> float:
    return float(value)


def calibration_metrics(problem: str, targets: np.ndarray, probs: np.ndarray, bins: int = 15) -> dict:
    """Expected calibration error, Brier score and the reliability-diagram bins.

    Single-label problems use the top-label confidence (Guo et al. 2017: equal-width bins over
    max probability, |accuracy - confidence| weighted by bin size); multilabel problems pool
    every (item, label) probability against its 0/1 target.

    Returns:
        `ece`, `brier` and `bins`: a list of {lower, upper, count, confidence, accuracy}.
    """
    probs = np.asarray(probs, dtype=np.float64)
    targets = np.asarray(targets).astype(int)
    if problem == "multilabel":
        confidence, correct = probs.reshape(-1), targets.reshape(-1).astype(float)
        brier = float(np.mean((probs - targets) ** 2)) if probs.size else None
    else:
        targets = targets.reshape(-1)
        confidence, correct = probs.max(axis=1), (probs.argmax(axis=1) == targets).astype(float)
        onehot = np.eye(probs.shape[1])[targets] if len(targets) else probs
        brier = float(np.mean(np.sum((probs - onehot) ** 2, axis=1))) if len(targets) else None
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    table, ece = [], 0.0
    for b in range(bins):
        members = which == b
        n = int(members.sum())
        conf = float(confidence[members].mean()) if n else None
        acc = float(correct[members].mean()) if n else None
        if n:
            ece += n / len(confidence) * abs(acc - conf)
        table.append({"lower": float(edges[b]), "upper": float(edges[b + 1]), "count": n,
                      "confidence": conf, "accuracy": acc})
    return {"ece": float(ece) if len(confidence) else None, "brier": brier, "bins": table}
