"""The fraud app's tables (torch-free): which column plays which role, and the train/val/test split.

Files are read by core.data.tables: lazily when scoring (streams files larger than memory), in
memory for training.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from deepapps.core.data.splits import stratified_split
from deepapps.core.errors import ConfigError, DataError

LABEL_NAMES = ("is_fraud", "fraud", "class", "label", "target", "y")
TIME_NAMES = ("timestamp", "time", "event_time", "datetime", "date", "ts")


@dataclass
class Columns:
    """The role of each column: label, time, ids, categorical and numeric features."""

    label: str | None
    time: str | None
    ids: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    numeric: list[str] = field(default_factory=list)

    @property
    def features(self) -> list[str]:
        return [*self.numeric, *self.categorical]


def detect_columns(
    schema: pl.Schema, source: str, label: str | None = "auto", time: str | None = "auto",
    ids: list[str] | None = None, categorical: list[str] | None = None,
    numeric: list[str] | None = None, exclude: list[str] | None = None,
) -> Columns:
    """Find each column's role; every argument overrides the detection of its role.

    Defaults: the label is the first of `is_fraud, fraud, class, label, target, y`
    (any case); the time the first of `timestamp, time, ...` or a Datetime column; ids end
    in `id`; text/bool columns are categorical, numbers numeric. `label=None` means no label
    (scoring), `time=None` means no time column.
    """
    names = list(schema.names())
    lower = {n.lower(): n for n in names}
    label = _pick(label, LABEL_NAMES, lower, names, source, "label")
    time = _pick(time, TIME_NAMES, lower, names, source, "time", schema)
    ids = _check(ids, names, source, "id") if ids is not None else [
        n for n in names if n.lower() == "id" or n.lower().endswith("_id")]
    taken = {label, time, *ids, *(exclude or [])}
    free = [n for n in names if n not in taken]
    if categorical is None:
        categorical = [n for n in free if schema[n] in (pl.String, pl.Categorical, pl.Boolean) or isinstance(schema[n], pl.Enum)]
    else:
        categorical = _check(categorical, names, source, "categorical")
    if numeric is None:
        numeric = [n for n in free if schema[n].is_numeric() and n not in categorical]
    else:
        numeric = _check(numeric, names, source, "numeric")
    if not numeric and not categorical:
        raise DataError(f"{source}: no feature columns (columns: {', '.join(names)})")
    return Columns(label=label, time=time, ids=ids, categorical=categorical, numeric=numeric)


def split_frame(
    df: pl.DataFrame, columns: Columns, mode: str, val_fraction: float, test_fraction: float, seed: int,
) -> dict[str, pl.DataFrame]:
    """train/val/test. `time`: earlier rows train, later validate, latest test (no leakage).
    `random`: stratified by label, seeded. Without a time column `time` falls back to `random`.
    """
    if mode not in ("time", "random"):
        raise ConfigError(f"--data.split {mode}: choose time or random")
    if not (0 < val_fraction < 1 and 0 < test_fraction < 1 and val_fraction + test_fraction < 1):
        raise ConfigError("--data.val_fraction and --data.test_fraction must be in (0, 1) and sum below 1")
    n = df.height
    if mode == "time" and columns.time is not None:
        order = np.argsort(df[columns.time].to_numpy(), kind="stable")
        n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
        cut1, cut2 = n - n_val - n_test, n - n_test
        parts = {"train": order[:cut1], "val": order[cut1:cut2], "test": order[cut2:]}
    else:
        labels = df[columns.label] if columns.label else pl.Series(np.zeros(n, np.int64))
        classes = labels.rank("dense").fill_null(0).to_numpy().astype(np.int64)  # any label type -> 0..K-1
        parts = stratified_split(classes, val_fraction, test_fraction, seed)
    return {k: df[np.asarray(v, dtype=np.int64)] for k, v in parts.items()}


def tidy_frame(frame: pl.DataFrame | pl.LazyFrame, missing: list[str] | tuple[str, ...] = ("?",),
               numbers: bool = True, notes: list[str] | None = None) -> pl.DataFrame | pl.LazyFrame:
    """A table as a new user's CSV export needs it: names and text values without surrounding
    spaces, `missing` values (e.g. `?`) and empty texts read as missing, and (`numbers`, eager
    frames only) text columns whose every value is a number read as numbers.

    Args:
        frame: a DataFrame (training, evaluate) or a LazyFrame (streaming predict; `numbers` is
            ignored there: the features step reads numbers written as text).
        missing: text values read as missing, compared after stripping.
        notes: what was changed is appended to it (one line each).

    Raises:
        DataError: two columns whose names are equal once stripped.
    """
    lazy = isinstance(frame, pl.LazyFrame)
    schema = frame.collect_schema() if lazy else frame.schema
    names = list(schema.names())
    stripped = [n.strip() for n in names]
    if len(set(stripped)) < len(stripped):
        twice = next(n for n in stripped if stripped.count(n) > 1)
        raise DataError(f"two columns are named {twice!r} once surrounding spaces are removed")
    frame = frame.rename({n: s for n, s in zip(names, stripped) if n != s})
    text = [s for n, s in zip(names, stripped) if schema[n] == pl.String]
    missing = [m.strip() for m in missing]
    if text:
        value = {c: pl.col(c).str.strip_chars() for c in text}
        frame = frame.with_columns(
            pl.when(value[c].is_in(missing) | (value[c] == "")).then(None).otherwise(value[c]).alias(c) for c in text)
    if notes is not None and any(n != s for n, s in zip(names, stripped)):
        notes.append("column names: surrounding spaces removed")
    if lazy:
        return frame
    if notes is not None and text and missing:
        read = {c: frame[c].null_count() for c in text if frame[c].null_count()}
        if read:
            notes.append(f"missing values ({', '.join(repr(m) for m in missing)} or empty): "
                         + ", ".join(f"{c} {n}" for c, n in read.items()))
    if numbers and text:
        cast = {}
        for c in text:
            for dtype in (pl.Int64, pl.Float64):
                converted = frame[c].cast(dtype, strict=False)
                if converted.null_count() == frame[c].null_count():
                    cast[c] = converted
                    break
        cast = {c: s for c, s in cast.items() if frame[c].null_count() < frame.height}  # not an all-empty column
        if cast:
            frame = frame.with_columns(list(cast.values()))
            if notes is not None:
                notes.append(f"numbers written as text read as numbers: {', '.join(cast)}")
    return frame


def _pick(value, candidates, lower, names, source, role, schema=None) -> str | None:
    if value is None or value == "none":
        return None
    if value != "auto":
        if value not in names:
            raise DataError(f"{source}: {role} column {value!r} not found (columns: {', '.join(names)})")
        return value
    for candidate in candidates:
        if candidate in lower:
            return lower[candidate]
    if schema is not None:
        dates = [n for n in names if schema[n] in (pl.Datetime, pl.Date) or isinstance(schema[n], pl.Datetime)]
        if dates:
            return dates[0]
    return None


def _check(wanted: list[str], names: list[str], source: str, role: str) -> list[str]:
    missing = [c for c in wanted if c not in names]
    if missing:
        raise DataError(f"{source}: {role} column(s) not found: {', '.join(missing)}")
    return list(wanted)
