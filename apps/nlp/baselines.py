"""The text baseline on the same split: TF-IDF (word 1-2-grams + char 2-5-grams) and logistic regression.

It is the strong simple baseline of text classification: a fine-tuned encoder that does not beat
it on the same test rows is not worth its cost. Fitted on the training rows, its C chosen on the
validation rows, scored on the test rows the ONNX model is scored on.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import hstack
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression

from deepapps.core.metrics import classification_metrics

NAME = "tfidf_logistic_regression"
C_GRID = (0.3, 1.0, 3.0, 10.0)


def tfidf_baseline(texts: np.ndarray, targets: np.ndarray, splits: dict[str, np.ndarray], labels: list[str],
                   problem: str, seed: int = 0) -> dict:
    """{"name", "C", "val": metrics, "test": metrics} of TF-IDF + logistic regression.

    Args:
        texts: every text of the table (a list or object array); `splits` index it.
        targets: (N,) class ids.
        splits: train/val/test row indices, as fit split them.
        labels, problem: the model's labels and problem type (the metrics are the model's).
    """
    texts = np.asarray(texts, dtype=object)
    words = TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True, max_features=200_000)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), min_df=2, sublinear_tf=True,
                            max_features=200_000)
    train = [str(t) for t in texts[splits["train"]]]
    x_train = hstack([words.fit_transform(train), chars.fit_transform(train)]).tocsr()

    def features(split: str):
        part = [str(t) for t in texts[splits[split]]]
        return hstack([words.transform(part), chars.transform(part)]).tocsr()

    x_val, x_test = features("val"), features("test")
    y_train, y_val = targets[splits["train"]], targets[splits["val"]]
    best = None
    for c in C_GRID:
        model = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(x_train, y_train)
        accuracy = float((model.predict(x_val) == y_val).mean()) if len(y_val) else 0.0
        if best is None or accuracy > best[0]:
            best = (accuracy, c, model)
    _, c, model = best
    out = {"name": "TF-IDF + logistic regression", "C": c}
    for split, x in (("val", x_val), ("test", x_test)):
        probs = _all_classes(model, x, len(labels))
        out[split] = classification_metrics(problem, targets[splits[split]], probs, labels)
    return out


def _all_classes(model: LogisticRegression, x, k: int) -> np.ndarray:
    """(N, K) probabilities, zero for classes the training rows lacked."""
    probs = np.zeros((x.shape[0], k), dtype=np.float64)
    probs[:, model.classes_] = model.predict_proba(x)
    return probs
