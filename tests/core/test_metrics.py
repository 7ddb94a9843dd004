"""Tests for core.metrics.classification_metrics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from sklearn.metrics import average_precision_score, roc_auc_score

from deepapps.core.errors import ConfigError
from deepapps.core.metrics import classification_metrics


def _onehot(ids: list[int], k: int) -> np.ndarray:
    return np.eye(k)[ids]


def test_binary_perfect() -> None:
    targets = np.array([0, 1, 1, 0])
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.4, 0.6], [0.7, 0.3]])
    m = classification_metrics("binary", targets, probs, ["neg", "pos"])
    assert m["n"] == 4
    assert m["accuracy"] == 1.0
    assert m["macro_f1"] == 1.0
    assert m["auroc"] == 1.0
    assert m["auprc"] == 1.0
    assert m["confusion_matrix"] == [[2, 0], [0, 2]]
    assert m["per_class"]["pos"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2, "auroc": 1.0}


def test_binary_known_values() -> None:
    targets = np.array([0, 0, 0, 1, 1, 1])
    p1 = np.array([0.1, 0.6, 0.3, 0.8, 0.4, 0.9])
    probs = np.stack([1 - p1, p1], axis=1)
    m = classification_metrics("binary", targets, probs, ["neg", "pos"])
    # preds = [0, 1, 0, 1, 0, 1]: one false positive, one false negative.
    assert m["confusion_matrix"] == [[2, 1], [1, 2]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    assert m["macro_f1"] == pytest.approx(2 / 3)
    # Positive scores 0.8, 0.4, 0.9 vs negatives 0.1, 0.6, 0.3: 8 of 9 pairs ranked right.
    assert m["auroc"] == pytest.approx(8 / 9)
    assert m["auroc"] == pytest.approx(roc_auc_score(targets, p1))
    assert m["auprc"] == pytest.approx(average_precision_score(targets, p1))
    assert m["per_class"]["pos"]["precision"] == pytest.approx(2 / 3)
    assert m["per_class"]["neg"]["support"] == 3


def test_multiclass_known_confusion_matrix() -> None:
    targets = np.array([0, 0, 1, 1, 2, 2])
    preds = [0, 1, 1, 1, 2, 0]
    probs = 0.1 + 0.7 * _onehot(preds, 3)
    m = classification_metrics("multiclass", targets, probs, ["a", "b", "c"])
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]
    assert m["accuracy"] == pytest.approx(4 / 6)
    # F1: a = 0.5, b = 0.8, c = 2/3.
    assert m["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert m["per_class"]["b"]["recall"] == 1.0
    assert m["per_class"]["b"]["precision"] == pytest.approx(2 / 3)
    # One-vs-rest AUROC: a = 0.625, b = 0.875, c = 0.75.
    assert m["per_class"]["a"]["auroc"] == pytest.approx(0.625)
    assert m["auroc"] == pytest.approx(0.75)
    assert m["auroc"] == pytest.approx(roc_auc_score(targets, probs, multi_class="ovr", average="macro"))
    assert "auprc" not in m


def test_multiclass_perfect() -> None:
    targets = np.array([0, 1, 2, 2, 1])
    m = classification_metrics("multiclass", targets, _onehot(list(targets), 3) * 0.9 + 0.033, ["a", "b", "c"])
    assert (m["accuracy"], m["macro_f1"], m["auroc"]) == (1.0, 1.0, 1.0)


def test_multiclass_absent_class_auroc() -> None:
    targets = np.array([0, 0, 1, 1])  # class "c" never occurs
    probs = np.array([[0.8, 0.1, 0.1], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.3, 0.4, 0.3]])
    m = classification_metrics("multiclass", targets, probs, ["a", "b", "c"])
    assert m["auroc"] == 1.0  # mean over the present classes a and b
    assert m["per_class"]["c"]["auroc"] is None
    assert m["per_class"]["c"]["support"] == 0
    assert m["confusion_matrix"][2] == [0, 0, 0]
    # preds a, a, b, b: c is neither present nor predicted, so macro-F1 and balanced accuracy leave it out
    assert m["classes_scored"] == ["a", "b"] and m["macro_f1"] == 1.0 and m["balanced_accuracy"] == 1.0


def test_single_class_present_auroc_is_none() -> None:
    targets = np.array([1, 1, 1])
    probs = np.array([[0.2, 0.8], [0.6, 0.4], [0.1, 0.9]])
    m = classification_metrics("binary", targets, probs, ["neg", "pos"])
    assert m["auroc"] is None
    assert m["accuracy"] == pytest.approx(2 / 3)
    m3 = classification_metrics("multiclass", np.array([2, 2]), np.full((2, 3), 1 / 3), ["a", "b", "c"])
    assert m3["auroc"] is None


def test_multilabel_known_values() -> None:
    targets = np.array([[1, 0, 1], [0, 1, 0], [1, 1, 0], [0, 0, 1]])
    probs = np.array([[0.9, 0.2, 0.7], [0.1, 0.8, 0.4], [0.6, 0.3, 0.2], [0.4, 0.1, 0.6]])
    m = classification_metrics("multilabel", targets, probs, ["x", "y", "z"])
    # Predictions at 0.5: row 2 misses label y, others exact.
    assert m["accuracy"] == pytest.approx(3 / 4)
    # F1: x = 1, y = 2/3 (precision 1, recall 1/2), z = 1.
    assert m["macro_f1"] == pytest.approx((1 + 2 / 3 + 1) / 3)
    assert m["auroc"] == pytest.approx(roc_auc_score(targets, probs, average="macro"))
    assert m["auprc"] == pytest.approx(average_precision_score(targets, probs, average="macro"))
    assert m["per_class"]["y"]["support"] == 2
    assert "confusion_matrix" not in m


def test_multilabel_threshold_and_absent_label() -> None:
    targets = np.array([[1, 0], [0, 0], [1, 0]])  # label "b" never positive
    probs = np.array([[0.3, 0.1], [0.1, 0.2], [0.35, 0.4]])
    m = classification_metrics("multilabel", targets, probs, ["a", "b"], threshold=0.25)
    assert m["auroc"] == 1.0  # only label "a" is defined
    assert m["per_class"]["b"]["auroc"] is None
    assert m["accuracy"] == pytest.approx(2 / 3)  # row 3 predicts "b" too


def test_result_is_json_serialisable() -> None:
    targets = np.array([0, 1, 2])
    m = classification_metrics("multiclass", targets, _onehot([0, 1, 1], 3).astype(np.float32), ["a", "b", "c"])
    assert json.loads(json.dumps(m)) == m


def test_bad_inputs() -> None:
    with pytest.raises(ConfigError):
        classification_metrics("regression", np.array([0]), np.array([[1.0, 0.0]]), ["a", "b"])
    with pytest.raises(ValueError):
        classification_metrics("binary", np.array([0]), np.array([[1.0, 0.0, 0.0]]), ["a", "b"])
