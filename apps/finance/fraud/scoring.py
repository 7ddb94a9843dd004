"""Fraud metrics and the cost-based threshold, on numpy scores (scikit-learn; no torch).

scikit-learn is imported inside the metric functions: predict imports this module and must
not pay for it (about a second of process start).
"""

from __future__ import annotations

import numpy as np


def fraud_metrics(y: np.ndarray, score: np.ndarray, fpr: float = 0.01, top_k: int = 100) -> dict:
    """AUPRC (primary), ROC-AUC (`auroc`), recall at `fpr` false-positive rate, precision at k.

    Args:
        y: (N,) 0/1 targets.
        score: (N,) fraud probabilities.
    """
    from sklearn.metrics import average_precision_score, roc_auc_score

    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=np.float64)
    both = len(np.unique(y)) == 2
    k = min(top_k, len(y))
    top = np.argsort(-score, kind="stable")[:k]
    out = {
        "n": int(len(y)),
        "frauds": int(y.sum()),
        "auprc": float(average_precision_score(y, score)) if y.any() else None,
        "auroc": float(roc_auc_score(y, score)) if both else None,
        f"recall_at_{_pct(fpr)}_fpr": recall_at_fpr(y, score, fpr) if both else None,
        f"precision_at_{top_k}": float(y[top].mean()) if k else None,
    }
    return out


def recall_at_fpr(y: np.ndarray, score: np.ndarray, fpr: float) -> float:
    """Largest recall whose false-positive rate is at most `fpr`."""
    from sklearn.metrics import roc_curve

    fprs, tprs, _ = roc_curve(y, score)
    return float(tprs[fprs <= fpr].max())


def decision_metrics(y: np.ndarray, score: np.ndarray, threshold: float, cost_missed: float, cost_review: float) -> dict:
    """Precision, recall, flagged share and cost of the decisions `score >= threshold` (one threshold,
    or one per row: per-group thresholds, reported as their mean)."""
    y, flag = np.asarray(y).astype(int), np.asarray(score) >= threshold
    tp, fp, fn = int((flag & (y == 1)).sum()), int((flag & (y == 0)).sum()), int((~flag & (y == 1)).sum())
    cost = cost_missed * fn + cost_review * (tp + fp)
    return {
        "threshold": float(np.mean(threshold)) if np.size(threshold) else None,
        "precision": tp / (tp + fp) if tp + fp else None,
        "recall": tp / (tp + fn) if tp + fn else None,
        "flagged_share": float(flag.mean()) if len(y) else None,
        "true_positives": tp, "false_positives": fp, "missed_frauds": fn,
        "cost": float(cost),
        "cost_per_1000": float(1000 * cost / len(y)) if len(y) else None,
    }


def cost_threshold(y: np.ndarray, score: np.ndarray, cost_missed: float, cost_review: float) -> float:
    """The threshold minimising cost_missed * missed frauds + cost_review * flagged rows.

    Candidates are the distinct scores (flag everything at or above), plus "flag nothing".
    """
    y, score = np.asarray(y).astype(int), np.asarray(score, dtype=np.float64)
    order = np.argsort(-score, kind="stable")
    s, t = score[order], y[order]
    flagged = np.arange(1, len(s) + 1)
    caught = np.cumsum(t)
    last = np.r_[s[1:] != s[:-1], True]  # cut only between distinct scores
    cost = cost_missed * (t.sum() - caught) + cost_review * flagged
    best = np.argmin(np.where(last, cost, np.inf))
    if cost[best] >= cost_missed * t.sum():  # flagging nothing is cheaper
        return float(np.nextafter(s[0], np.inf)) if len(s) else 1.0
    return float(s[best])


def _pct(fpr: float) -> str:
    return f"{fpr * 100:g}pct"
