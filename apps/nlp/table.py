"""Labelled text tables, torch-free: read (polars), map labels, carve the stratified splits.

Shared by training (apps.nlp.data) and `evaluate` (apps.nlp.runtime), so both see the same
test rows for the same file and split settings.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

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
    """A CSV/TSV/Parquet/JSONL file as a polars frame; TSV is read with quoting off (SST-2)."""
    if path == BUILTIN:
        return builtin_reviews()
    file = Path(path)
    if not file.is_file():
        raise DataError(f"{path}: no such file")
    suffix = file.suffix.lower()
    try:
        if suffix == ".tsv":
            frame = pl.read_csv(file, separator="\t", quote_char=None, infer_schema_length=10000)
        elif suffix in (".csv", ".txt"):
            frame = pl.read_csv(file, infer_schema_length=10000)
        elif suffix == ".parquet":
            frame = pl.read_parquet(file)
        elif suffix in (".jsonl", ".ndjson", ".json"):
            frame = pl.read_ndjson(file)
        else:
            raise DataError(f"{path}: unsupported table type {suffix!r}; use .csv, .tsv, .parquet or .jsonl")
    except DataError:
        raise
    except Exception as exc:  # polars raises several types (ComputeError for bad UTF-8, ...)
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DataError(f"{path}: cannot read ({first[:160]})") from None
    missing = [c for c in columns or [] if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; columns are {frame.columns}")
    return frame


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


def stratified_split(targets: np.ndarray, val_fraction: float, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Train/val/test row indices, the same share of every class in each (sorted, reproducible)."""
    if val_fraction < 0 or test_fraction < 0 or val_fraction + test_fraction >= 1:
        raise DataError(f"val_fraction {val_fraction} + test_fraction {test_fraction} must lie in [0, 1)")
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for k in np.unique(targets):
        rows = rng.permutation(np.flatnonzero(targets == k))
        n_test, n_val = round(len(rows) * test_fraction), round(len(rows) * val_fraction)
        parts["test"].append(rows[:n_test])
        parts["val"].append(rows[n_test : n_test + n_val])
        parts["train"].append(rows[n_test + n_val :])
    return {name: np.sort(np.concatenate(p)).astype(np.int64) for name, p in parts.items()}


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
