"""Labelled text tables, torch-free: read them, map labels to classes.

Shared by training (apps.nlp.data) and `evaluate` (apps.nlp.runtime), which split them with
core.data.splits and the same settings, so both see the same test rows.
"""

from __future__ import annotations

import logging
import sys
from dataclasses import dataclass

import numpy as np
import polars as pl

from deepapps.core.data.tables import read_table
from deepapps.core.errors import DataError

log = logging.getLogger("deepapps.nlp")
BUILTIN = "builtin:reviews"
AUTO = "auto"
# names that settle a tie between candidate columns (any case)
TEXT_NAMES = ("text", "sentence", "review", "review_text", "content", "body", "comment", "document", "message")
LABEL_NAMES = ("label", "labels", "class", "target", "sentiment", "category", "y")


@dataclass
class TextTable:
    """Texts, integer targets (-1 = label not among `labels`) and label names.

    `text_column` and `label_column` are the columns read (resolved when `auto` was asked for).
    """

    texts: list[str]
    targets: np.ndarray  # (N,) int64
    labels: list[str]
    source: str
    notes: list[str]
    text_column: str = "text"
    label_column: str = "label"
    rows: np.ndarray | None = None  # (N,) the file's row of each text (rows with an empty text are dropped)


def read_frame(path: str, columns: list[str] | None = None, notes: list[str] | None = None) -> pl.DataFrame:
    """A CSV/TSV/Parquet/JSONL file (core.data.tables), or the builtin reviews.

    `notes`: the CSV/TSV dialect read is appended to it."""
    if path == BUILTIN:
        return builtin_reviews()
    return read_table(path, columns, notes=notes)


def resolve_columns(frame: pl.DataFrame, path: str, text_column: str = AUTO,
                    label_column: str = AUTO) -> tuple[str, str, list[str]]:
    """(text column, label column, one line per `auto` choice) of a table.

    `auto` text: the one string column of text (most values hold a space, or they average 20
    characters); of several, the one with more distinct values than a label may have. `auto`
    label: the one other column of 2 to max(2, min(100, rows / 2)) distinct values (strings,
    booleans or integers). A tie left is settled by a usual name (`text`, `sentence`, ... /
    `label`, `class`, ...), else it is an error naming the candidates and the option to set.

    Raises:
        DataError: no candidate, or several (one line).
    """
    names = frame.columns
    most = max(2, min(100, frame.height // 2))
    chosen = []
    if text_column == AUTO:
        found = [c for c in names if c != label_column and _texty(frame[c])]
        varied = [c for c in found if frame[c].n_unique() > most]
        if len(found) > 1 and len(varied) == 1:
            text_column, why = varied[0], f"of the text columns {', '.join(found)}, the only one of varied values"
        else:
            text_column, why = _pick(found, TEXT_NAMES, path, names, "--data.text_column", "text", "holds text")
        chosen.append(f"--data.text_column {text_column} ({why})")
    if label_column == AUTO:
        found = [c for c in names if c != text_column and _labelish(frame[c], most)]
        label_column, why = _pick(found, LABEL_NAMES, path, names, "--data.label_column", "label",
                                  f"has 2 to {most} distinct values")
        chosen.append(f"--data.label_column {label_column} ({why})")
    return text_column, label_column, chosen


def _texty(column: pl.Series) -> bool:
    if column.dtype != pl.String:
        return False
    values = column.drop_nulls()
    if values.len() == 0:
        return False
    spaced = float(values.str.contains(r"\s").mean() or 0.0)
    return spaced >= 0.5 or float(values.str.len_chars().mean() or 0.0) >= 20


def _labelish(column: pl.Series, most: int) -> bool:
    values = column.drop_nulls()
    if values.len() == 0 or not (column.dtype in (pl.String, pl.Boolean, pl.Categorical) or column.dtype.is_integer()
                                 or column.dtype.is_float() and bool((values == values.round()).all())):
        return False
    return 2 <= values.n_unique() <= most


def _pick(found: list[str], usual: tuple[str, ...], path: str, names: list[str], option: str, role: str,
          test: str) -> tuple[str, str]:
    if len(found) == 1:
        return found[0], f"the only {role} column"
    named = [c for c in found if c.lower() in usual]
    if len(named) == 1:
        return named[0], f"of the {role} columns {', '.join(found)}, the one named like a {role} column"
    if not found:
        raise DataError(f"{path}: no column {test} (columns: {', '.join(names)}); set {option}")
    raise DataError(f"{path}: cannot tell the {role} column: {', '.join(found)} each {test}; set {option}")


def say_choices(choices: list[str]) -> list[str]:
    """Print each `auto` choice once (stderr, one line each); returns them as notes."""
    for line in choices:
        print(f"deepapps: auto: {line}", file=sys.stderr)
    return [f"auto: {line}" for line in choices]


def read_labelled(path: str, text_column: str, label_column: str, label_names: list[str] | None = None,
                  labels: list[str] | None = None) -> TextTable:
    """Texts and labels of a file; rows with an empty text are dropped (with a note).

    Args:
        text_column, label_column: the columns, or `auto` (`resolve_columns`: the choice is
            printed once and noted).
        labels: the model's label names (evaluate): rows with another label are an error.
            None (fit) derives them from the data: `label_names` for integer labels, else the
            sorted distinct values.

    Raises:
        DataError: missing column, missing (null/NaN) labels, unknown labels, no rows, no or
            several candidates for an `auto` column.
    """
    notes: list[str] = []
    auto = AUTO in (text_column, label_column)
    frame = read_frame(path, None if auto else [text_column, label_column], notes)
    if auto:
        text_column, label_column, chosen = resolve_columns(frame, path, text_column, label_column)
        missing = [c for c in (text_column, label_column) if c not in frame.columns]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r}; columns are {frame.columns}")
        notes += say_choices(chosen)
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
    notes = [f"read from {path} (columns {text_column!r}, {label_column!r})", *notes]
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
    return TextTable(texts, targets, labels, path, notes, text_column, label_column, np.asarray(keep, np.int64))


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
