"""Baselines on the same split and features: logistic regression and HistGradientBoosting."""

from __future__ import annotations

import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression

from deepapps.apps.finance.fraud.features import Encoded, FeatureSpec

NAMES = {"logistic_regression": "logistic regression", "hist_gradient_boosting": "HistGradientBoosting"}


def linear_features(enc: Encoded, spec: FeatureSpec) -> np.ndarray:
    """What the network's first layer sees: scaled numerics, missing flags, one-hot categories."""
    x = enc.numeric.astype(np.float64)
    missing = np.isnan(x)
    x = np.where(spec.log, np.sign(x) * np.log1p(np.abs(x)), x)
    x = np.where(missing, spec.center, x)
    x = np.clip((x - np.asarray(spec.center)) / np.asarray(spec.scale), -spec.clip, spec.clip)
    onehots = [np.eye(k)[enc.categorical[:, j]] for j, k in enumerate(spec.cardinalities)]
    return np.concatenate([x, missing.astype(float), *onehots], axis=1)


def baseline_scorers(train: Encoded, y_train: np.ndarray, spec: FeatureSpec, seed: int = 0) -> dict:
    """Both trained on `train`: {name: Encoded rows -> fraud scores} (what a streamed split is scored with)."""
    lr = LogisticRegression(max_iter=2000, class_weight="balanced", C=1.0)
    lr.fit(linear_features(train, spec), y_train)
    n_num = len(spec.numeric)
    hgb = HistGradientBoostingClassifier(
        max_iter=300, learning_rate=0.1, early_stopping=True, random_state=seed,
        categorical_features=[n_num + j for j in range(len(spec.categorical))] or None,
    )
    raw = lambda e: np.concatenate([e.numeric, e.categorical.astype(np.float32)], axis=1)
    hgb.fit(raw(train), y_train)
    return {"logistic_regression": lambda e: lr.predict_proba(linear_features(e, spec))[:, 1],
            "hist_gradient_boosting": lambda e: hgb.predict_proba(raw(e))[:, 1]}


def fit_baselines(encoded: dict[str, Encoded], y_train: np.ndarray, spec: FeatureSpec, seed: int = 0) -> dict[str, dict[str, np.ndarray]]:
    """Train both on `train`; return {name: {split: fraud scores}} for val and test."""
    scorers = baseline_scorers(encoded["train"], y_train, spec, seed)
    return {name: {s: score(encoded[s]) for s in ("val", "test")} for name, score in scorers.items()}
