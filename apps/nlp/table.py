"""Labelled text tables, torch-free: read them, map labels to classes.

Shared by training (apps.nlp.data) and `evaluate` (apps.nlp.runtime), which split them with
core.data.splits and the same settings, so both see the same test rows.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
import polars as pl

from deepapps.core.data.tables import read_table
from deepapps.core.errors import DataError

log = logging.getLogger("deepapps.nlp")
BUILTIN = "builtin:reviews"


@dataclass
class TextTable:
    """Texts, integer targets (-1 = label not among `labels`) and label names."""

    texts: list[str]
    targets: np.ndarray  # (N,) int64
    labels: list[str]
    source: str
    notes: list[str]


def read_frame(path: str, columns: list[str] | None = None) -> pl.DataFrame:
    """A CSV/TSV/Parquet/JSONL file (core.data.tables), or the builtin reviews."""
    if path == BUILTIN:
        return builtin_reviews()
    return read_table(path, columns)


def read_labelled(path: str, text_column: str, label_column: str, label_names: list[str] | None = None,
                  labels: list[str] | None = None) -> TextTable:
    """Texts and labels of a file; rows with an empty text are dropped (with a note).

    Args:
        labels: the model's label names (evaluate): rows with another label are an error.
            None (fit) derives them from the data: `label_names` for integer labels, else the
            sorted distinct values.

    Raises:
        DataError: missing column, missing (null/NaN) labels, unknown labels, no rows.
    """
    frame = read_frame(path, [text_column, label_column])
    y = frame[label_column]
    bad = y.is_null() | (y.is_nan() if y.dtype.is_float() else pl.repeat(False, len(y), eager=True))
    if bad.any():
        row = int(bad.arg_true()[0])
        raise DataError(f"{path}: {int(bad.sum())} rows have no {label_column!r} (first: row {row + 1})")
    if y.dtype.is_float():
        if not (y == y.round()).all():
            raise DataError(f"{path}: column {label_column!r} holds non-integer numbers; labels must be names or ints")
        y = y.cast(pl.Int64)
    if y.dtype.is_integer() and label_names:
        values = y.to_numpy()
        if values.min() < 0 or values.max() >= len(label_names):
            raise DataError(f"{path}: label {int(values.max())} has no name in --data.label_names {label_names}")
        names = [label_names[v] for v in values]
    else:
        names = [str(v) for v in y.to_list()]
    texts = frame[text_column].cast(pl.String).fill_null("").to_list()
    keep = [i for i, t in enumerate(texts) if t.strip()]
    notes = [f"read from {path} (columns {text_column!r}, {label_column!r})"]
    if len(keep) < len(texts):
        notes.append(f"{len(texts) - len(keep)} rows with an empty text were dropped")
        log.warning("%s: %d rows with an empty text dropped", path, len(texts) - len(keep))
    texts, names = [texts[i] for i in keep], [names[i] for i in keep]
    if not texts:
        raise DataError(f"{path}: no rows with a text in column {text_column!r}")
    if labels is None:
        labels = list(label_names) if label_names and y.dtype.is_integer() else sorted(set(names))
        if len(labels) < 2:
            raise DataError(f"{path}: column {label_column!r} has one label ({labels[0]!r}); need two or more")
    else:
        unknown = sorted(set(names) - set(labels))
        if unknown:
            raise DataError(f"{path}: label {unknown[0]!r} is not one of the model's labels {labels}")
    index = {name: i for i, name in enumerate(labels)}
    targets = np.array([index[n] for n in names], dtype=np.int64)
    return TextTable(texts, targets, labels, path, notes)


_GOOD = ["great", "excellent", "wonderful", "sturdy", "reliable", "comfortable", "fantastic", "perfect", "lovely", "superb"]
_BAD = ["terrible", "awful", "flimsy", "useless", "broken", "disappointing", "cheap", "horrible", "faulty", "poor"]
_THINGS = ["headphones", "blender", "jacket", "phone case", "kettle", "backpack", "lamp", "keyboard", "chair", "charger"]
_GOOD_TAIL = ["would buy again", "five stars", "highly recommended", "works as described", "my family loves it"]
_BAD_TAIL = ["returned it", "one star", "do not buy", "stopped working after a week", "waste of money"]


def builtin_reviews(n: int = 600, seed: int = 0) -> pl.DataFrame:
    """`builtin:reviews`: short generated product reviews, half positive, half negative."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        good = i % 2 == 0
        adj, tail = (_GOOD, _GOOD_TAIL) if good else (_BAD, _BAD_TAIL)
        text = f"the {rng.choice(_THINGS)} is {rng.choice(adj)}, {rng.choice(tail)}"
        rows.append({"text": text, "label": "positive" if good else "negative"})
    return pl.DataFrame(rows)
