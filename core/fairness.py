"""Fairness by group of a binary classifier (fairlearn; torch-free, so evaluate and fit share it).

`group_fairness` takes the targets, the positive-class scores, the decision threshold and one
array of values per sensitive attribute (a column of the data, e.g. `sex`, `race`; reporting only)
and returns, per attribute, the figures of each group and the disparities between groups:

    per group   n, positives, base_rate (share of positives in the data), selection_rate (share
                decided positive), tpr, fpr, precision (at the threshold), auroc, auprc (of the
                scores; null where the group holds one class only)
    disparity   demographic_parity_difference / _ratio (selection rates), equalized_odds_difference
                (the larger of the TPR and FPR gaps), tpr_difference, fpr_difference and
                base_rate_difference (the gap already in the data's labels)

Everything is computed by fairlearn's MetricFrame and fairlearn.metrics; missing group values
form their own group, `(missing)`.

Fit-time glue shared by the apps: `fit_fairness` (metrics.json's `fairness` and
`fairness_thresholds` from the val and test evaluations and their group values) and
`served_fairness` (the same from an app's Serving: the ONNX model's val evaluation and
`Serving.group_values`; `run_fairness` of a fit's model.onnx), `check_group_columns` (a missing
column, one line).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from deepapps.core.errors import ConfigError, DataError
from deepapps.core.runtime.evaluation import ClassificationEvaluation, Evaluation

if TYPE_CHECKING:
    from deepapps.core.contract import Classification
    from deepapps.core.runtime.interface import Serving
    from deepapps.core.runtime.session import OnnxModel
    from deepapps.core.training.interface import FitRun

MISSING = "(missing)"
#: the per-group figures, in the order tables and plots show them
GROUP_METRICS = ("n", "positives", "base_rate", "selection_rate", "tpr", "fpr", "precision", "auroc", "auprc")
DISPARITIES = ("demographic_parity_difference", "demographic_parity_ratio", "equalized_odds_difference",
               "tpr_difference", "fpr_difference", "base_rate_difference")


def group_labels(values: np.ndarray | list) -> np.ndarray:
    """Group values as text (numbers and booleans as written), missing ones as `(missing)`."""
    out = np.empty(len(values), dtype=object)
    for i, v in enumerate(values):
        missing = v is None or (isinstance(v, float) and np.isnan(v))
        out[i] = MISSING if missing else str(v)
    return out


def group_fairness(targets: np.ndarray, scores: np.ndarray, threshold: float,
                   groups: Mapping[str, np.ndarray | list]) -> dict:
    """Per attribute: each group's figures and the disparities between its groups.

    Args:
        targets: (N,) 0/1 true labels.
        scores: (N,) positive-class probabilities; decided positive when `score >= threshold`.
        threshold: the model's decision threshold.
        groups: attribute name -> (N,) group values of the same rows.

    Returns:
        {"threshold", "n", "attributes": {name: {"groups": {value: {GROUP_METRICS}},
        "disparity": {DISPARITIES}}}}; undefined figures are None.

    Raises:
        DataError: an attribute whose length differs from the targets'.
    """
    import pandas as pd
    from fairlearn.metrics import (
        MetricFrame, count, demographic_parity_difference, demographic_parity_ratio, equalized_odds_difference,
        false_positive_rate, selection_rate, true_positive_rate,
    )
    from sklearn.metrics import precision_score

    y = np.asarray(targets).astype(np.int64).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    decided = (s >= threshold).astype(np.int64)
    at_threshold = {
        "n": count, "positives": lambda t, p: int(np.sum(t)), "base_rate": lambda t, p: float(np.mean(t)),
        "selection_rate": selection_rate, "tpr": _defined(true_positive_rate, positives=True),
        "fpr": _defined(false_positive_rate, negatives=True),
        "precision": lambda t, p: float(precision_score(t, p, zero_division=np.nan)),
    }
    ranking = {"auroc": _ranking("auroc"), "auprc": _ranking("auprc")}
    out = {"threshold": float(threshold), "n": int(len(y)), "attributes": {}}
    for name, values in groups.items():
        if len(values) != len(y):
            raise DataError(f"group column {name!r}: {len(values)} values for {len(y)} scored rows")
        sensitive = pd.Series(group_labels(values), name=name)
        decisions = MetricFrame(metrics=at_threshold, y_true=y, y_pred=decided, sensitive_features=sensitive)
        scored = MetricFrame(metrics=ranking, y_true=y, y_pred=s, sensitive_features=sensitive)
        table = decisions.by_group.join(scored.by_group)
        by_group = {str(g): {m: _number(table.loc[g, m], integer=m in ("n", "positives")) for m in GROUP_METRICS}
                    for g in table.index}
        gaps = decisions.difference(method="between_groups")
        disparity = {
            "demographic_parity_difference": demographic_parity_difference(y, decided, sensitive_features=sensitive),
            "demographic_parity_ratio": demographic_parity_ratio(y, decided, sensitive_features=sensitive),
            "equalized_odds_difference": equalized_odds_difference(y, decided, sensitive_features=sensitive),
            "tpr_difference": gaps["tpr"], "fpr_difference": gaps["fpr"], "base_rate_difference": gaps["base_rate"],
        }
        out["attributes"][name] = {"groups": by_group, "disparity": {k: _number(v) for k, v in disparity.items()}}
    return out


def evaluation_fairness(evaluation: Evaluation, kind: Classification, groups: Mapping[str, np.ndarray | list]) -> dict:
    """`group_fairness` of a binary model's evaluation at the model's threshold (0.5 without one).

    Raises:
        ConfigError: the model is not a binary classifier.
    """
    if not isinstance(evaluation, ClassificationEvaluation) or evaluation.problem != "binary":
        raise ConfigError("--group-columns: fairness by group needs a binary classifier (decisions are positive or not)")
    threshold = 0.5 if kind.threshold is None else float(kind.threshold)
    scores = evaluation.probs[:, kind.positive_index]
    targets = (np.asarray(evaluation.targets) == kind.positive_index).astype(np.int64)
    out = group_fairness(targets, scores, threshold, groups)
    return {"positive": kind.labels[kind.positive_index], **out}


def tpr_parity_thresholds(fit: tuple[np.ndarray, np.ndarray, np.ndarray | list],
                          check: tuple[np.ndarray, np.ndarray, np.ndarray | list], threshold: float,
                          seed: int = 0) -> dict:
    """Per-group thresholds that equalise the TPR (fairlearn ThresholdOptimizer, constraint
    `true_positive_rate_parity`, objective balanced accuracy), fitted on one split and judged on
    another: the metric cost against the disparity removed. Reporting only: the model keeps its one
    threshold.

    Args:
        fit: (targets, scores, group values) the thresholds are fitted on (validation).
        check: the same of the split they are judged on (test).
        threshold: the model's own threshold (the `before` figures).
        seed: the randomisation of ThresholdOptimizer's mixed thresholds.

    Returns:
        {"thresholds": {group: [{"p", "threshold"}, ...]}, "before": {...}, "after": {...}}, each of
        before/after with accuracy, balanced_accuracy, selection_rate, tpr_difference,
        equalized_odds_difference, demographic_parity_difference; {"skipped": why} when
        ThresholdOptimizer cannot fit (e.g. a group with one class only).
    """
    import pandas as pd
    from fairlearn.postprocessing import ThresholdOptimizer

    (y_fit, s_fit, g_fit), (y, s, g) = fit, check
    g_fit, g = group_labels(g_fit), group_labels(g)
    unseen = sorted(set(g) - set(g_fit))
    if unseen:
        return {"skipped": f"groups absent from the split the thresholds are fitted on: {', '.join(unseen)}"}
    optimizer = ThresholdOptimizer(estimator=_Scores().fit(None), constraints="true_positive_rate_parity",
                                   objective="balanced_accuracy_score", prefit=True, predict_method="predict")
    try:
        optimizer.fit(pd.DataFrame({"score": np.asarray(s_fit, np.float64)}), np.asarray(y_fit).astype(np.int64),
                      sensitive_features=g_fit)
        after = optimizer.predict(pd.DataFrame({"score": np.asarray(s, np.float64)}), sensitive_features=g,
                                  random_state=seed)
    except (ValueError, KeyError) as exc:  # degenerate labels in a group, or a group unseen in `fit`
        return {"skipped": str(exc).splitlines()[0] if str(exc) else type(exc).__name__}
    thresholds = {
        str(group): [{"p": float(rule[f"p{i}"]), "threshold": float(rule[f"operation{i}"].threshold)}
                     for i in (0, 1) if float(rule[f"p{i}"]) > 0]
        for group, rule in optimizer.interpolated_thresholder_.interpolation_dict.items()
    }
    y = np.asarray(y).astype(np.int64)
    before = (np.asarray(s, np.float64) >= threshold).astype(np.int64)
    return {"constraint": "true_positive_rate_parity", "objective": "balanced_accuracy_score", "seed": seed,
            "thresholds": thresholds, "before": _decision_summary(y, before, g), "after": _decision_summary(y, after, g)}


def equal_tpr_thresholds(targets: np.ndarray, scores: np.ndarray, groups: np.ndarray | list, threshold: float,
                         min_positives: int = 20) -> dict:
    """Deterministic per-group thresholds that give every group the model's overall TPR (fitted on
    validation; the thresholds a shipped model applies, unlike ThresholdOptimizer's randomised mix).

    Each group's threshold is the highest one at which at least the overall TPR at `threshold` of
    its positives is flagged: the k-th highest positive score, k = ceil(TPR x positives). A group
    with fewer than `min_positives` positives keeps `threshold` (its TPR is too noisy to equalise).

    Returns:
        {"target_tpr", "default" (= threshold), "thresholds": {group: t}, "kept": {group: why}}.
    """
    y, s, g = np.asarray(targets).astype(bool), np.asarray(scores, np.float64), group_labels(groups)
    positives = s[y]
    target = float((positives >= threshold).mean()) if len(positives) else 0.0
    out = {"target_tpr": target, "default": float(threshold), "thresholds": {}, "kept": {}}
    for group in sorted(set(g)):
        pos = np.sort(s[y & (g == group)])[::-1]
        if len(pos) < min_positives:
            out["kept"][group] = f"{len(pos)} positives (< {min_positives}): the model's threshold"
            continue
        k = max(1, int(np.ceil(target * len(pos) - 1e-9)))
        out["thresholds"][group] = float(pos[k - 1])
    return out


def thresholds_for(values: np.ndarray | list, rule: dict) -> np.ndarray:
    """The decision threshold of each row: its group's in `rule` (equal_tpr_thresholds), else the default."""
    table = rule.get("thresholds") or {}
    default = float(rule["default"])
    return np.array([table.get(v, default) for v in group_labels(values)], dtype=np.float64)


def check_group_columns(names: list[str], columns: list[str], source: str) -> None:
    """DataError (one line) naming the group columns that are not among `names`, the data's columns."""
    missing = [c for c in columns if c not in names]
    if missing:
        raise DataError(f"{source}: group column(s) not found: {', '.join(missing)} (columns: {', '.join(names)})")


def check_binary(labels: list[str], multilabel: bool = False, option: str = "--data.group_columns") -> None:
    """ConfigError (one line) unless the labels are two of one class each: fairness by group needs
    positive decisions."""
    if multilabel or len(labels) != 2:
        raise ConfigError(f"{option}: fairness by group needs a binary classifier (decisions are positive or not); "
                          f"this data has {len(labels)} labels{' (multi-label)' if multilabel else ''}")


def fit_fairness(kind: Classification, evaluations: Mapping[str, Evaluation],
                 groups: Mapping[str, Mapping[str, np.ndarray | list]], thresholds: bool = False,
                 seed: int = 0) -> dict:
    """metrics.json's fairness sections of a fit: `evaluation_fairness` of each split at the
    model's threshold, and with `thresholds` the TPR-parity thresholds of each attribute fitted on
    `val` and judged on `test` (`tpr_parity_thresholds`).

    Args:
        kind: the exported model's classification kind (labels, threshold, positive index).
        evaluations: split (`val`, `test`) -> the evaluation of that split's rows.
        groups: split -> attribute -> the group values of the same rows, in their order.
        thresholds: also fit the per-group thresholds (needs `val` and `test`).
        seed: ThresholdOptimizer's randomisation.

    Returns:
        {"fairness": {split: ...}} and, with `thresholds`, {"fairness_thresholds": {attribute: ...}}.
    """
    out = {"fairness": {split: evaluation_fairness(evaluation, kind, groups[split])
                        for split, evaluation in evaluations.items()}}
    if thresholds:
        def scored(split: str) -> tuple[np.ndarray, np.ndarray]:
            e = evaluations[split]
            return (np.asarray(e.targets) == kind.positive_index).astype(np.int64), e.probs[:, kind.positive_index]

        (y_val, s_val), (y_test, s_test) = scored("val"), scored("test")
        threshold = out["fairness"]["test"]["threshold"]
        out["fairness_thresholds"] = {
            c: tpr_parity_thresholds((y_val, s_val, groups["val"][c]), (y_test, s_test, groups["test"][c]), threshold,
                                     seed)
            for c in groups["test"]}
    return out


def served_fairness(serving: Serving, model: OnnxModel, data_path: str, test: Evaluation, columns: list[str],
                    thresholds: bool = False, seed: int = 0) -> dict:
    """`fit_fairness` of an exported model through its app's Serving: validation scored by the
    ONNX model (`Serving.evaluate`), test = `test` (fit's evaluation of the same model), the group
    values of both from `Serving.group_values`.

    Raises:
        ConfigError: the app's Serving reads no group columns; DataError: a column is missing.
    """
    evaluations = {"val": serving.evaluate(model, data_path, "val"), "test": test}
    groups = {split: serving.group_values(model, data_path, split, columns) for split in evaluations}
    return fit_fairness(model.contract.classification, evaluations, groups, thresholds, seed)


def run_fairness(run: FitRun, thresholds: bool = False) -> dict:
    """`served_fairness` of a fit's written model.onnx for the fit's `data.group_columns` ({} without
    them): what an app's `Training.artifacts` adds to metrics.json."""
    from deepapps.core.runtime.session import load_model

    columns = getattr(run.cfg.data, "group_columns", None)
    if not columns:
        return {}
    model = load_model(run.onnx_path, provider="cpu", app=run.app.name)
    return served_fairness(run.app.load_serving(), model, run.cfg.data.path, run.evaluation, columns, thresholds,
                           run.cfg.seed)


class _Scores(ClassifierMixin, BaseEstimator):
    """A fitted "estimator" whose prediction is its input column: the model's scores, for ThresholdOptimizer."""

    def fit(self, X, y=None):
        self.classes_ = np.array([0, 1])
        self.fitted_ = True
        return self

    def predict(self, X) -> np.ndarray:
        return np.asarray(X)[:, 0]


def _decision_summary(y: np.ndarray, decided: np.ndarray, groups: np.ndarray) -> dict:
    from fairlearn.metrics import (
        MetricFrame, demographic_parity_difference, equalized_odds_difference, true_positive_rate,
    )
    from sklearn.metrics import accuracy_score, balanced_accuracy_score

    tpr = MetricFrame(metrics=true_positive_rate, y_true=y, y_pred=decided, sensitive_features=groups)
    return {k: _number(v) for k, v in {
        "accuracy": accuracy_score(y, decided), "balanced_accuracy": balanced_accuracy_score(y, decided),
        "selection_rate": float(np.mean(decided)), "tpr_difference": tpr.difference(),
        "equalized_odds_difference": equalized_odds_difference(y, decided, sensitive_features=groups),
        "demographic_parity_difference": demographic_parity_difference(y, decided, sensitive_features=groups),
    }.items()}


def _defined(metric, positives: bool = False, negatives: bool = False):
    """`metric`, NaN where the group has no positives (TPR) or no negatives (FPR)."""
    def wrapped(t, p) -> float:
        if (positives and not np.any(t == 1)) or (negatives and not np.any(t == 0)):
            return float("nan")
        return float(metric(t, p))
    return wrapped


def _ranking(kind: str):
    """AUROC or AUPRC of the scores, NaN where the group holds one class only."""
    from sklearn.metrics import average_precision_score, roc_auc_score

    def wrapped(t, s) -> float:
        if len(np.unique(t)) < 2:
            return float("nan")
        return float(roc_auc_score(t, s) if kind == "auroc" else average_precision_score(t, s))
    return wrapped


def _number(value, integer: bool = False) -> float | int | None:
    """A plain JSON number; None for NaN (undefined)."""
    value = float(value)
    if not np.isfinite(value):
        return None
    return int(value) if integer else value
