"""Raw columns -> model inputs, shared by fit and serving (numpy + polars, no torch).

What the graph cannot take (text categories) is mapped here to integer codes with the
vocabulary stored in the ONNX metadata; everything numeric (log, fill, robust scaling,
missing indicators) happens inside the graph, from the statistics fitted on train.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields

import numpy as np
import polars as pl

from deepapps.apps.finance.fraud.tables import Columns, detect_columns, tidy_frame
from deepapps.core.data.tables import read_table, table_schema
from deepapps.core.errors import DataError

BUILTIN = "builtin:transactions"
LABELS = ["normal", "fraud"]
CLIP = 10.0  # scaled numerics are clipped to [-CLIP, CLIP] in the graph


def load_source(path: str, data, notes: list[str] | None = None) -> pl.DataFrame:
    """The training table: a CSV/Parquet file or the built-in generator (`data` = data config).

    `notes`: a CSV's dialect is appended to it (one line)."""
    if path == BUILTIN:
        from deepapps.apps.finance.fraud.synth import generate

        return generate(data.synth_rows, data.synth_fraud_rate, data.synth_seed)
    if path.startswith("builtin:"):
        raise DataError(f"{path}: unknown builtin dataset; the fraud app has {BUILTIN}")
    return tidy_frame(read_table(path, notes=notes), data.missing_values, notes=notes)


def find_columns(df: pl.DataFrame, source: str, data, with_label: bool = True) -> Columns:
    """Column roles from the data config (`data`), with the detection defaults of tables.py."""
    columns = detect_columns(
        df.schema if isinstance(df, pl.DataFrame) else table_schema(source, df), source,
        label=data.label_column if with_label else None, time=data.time_column, ids=data.id_columns,
        categorical=data.categorical_columns, numeric=data.numeric_columns,
        exclude=[*data.exclude_columns, *(data.group_columns or [])],  # group columns: reporting only
    )
    if data.group_columns:
        from deepapps.core.fairness import check_group_columns

        check_group_columns(df.columns if isinstance(df, pl.DataFrame) else table_schema(source, df).names(),
                            data.group_columns, source)
    if with_label and columns.label is None:
        raise DataError(f"{source}: no label column found; set --data.label_column (columns: {', '.join(df.columns)})")
    if data.use_time_as_feature and columns.time and columns.time not in columns.numeric:
        columns.numeric.append(columns.time)
    return columns


def targets(df: pl.DataFrame, label: str, source: str, positive: object = None,
            notes: list[str] | None = None) -> tuple[np.ndarray, object]:
    """(0/1 int64 targets, the value meaning fraud). Fraud is 1/True, else the rarer value.

    With the model's `positive` given and text labels that lack it, a trailing `.` is stripped from
    every label when that makes `positive` one of at most two values (UCI Adult's official test file
    writes `>50K.` for the training file's `>50K`); the mapping is appended to `notes`.
    """
    column = df[label]
    if column.null_count():
        raise DataError(f"{source}: label column {label!r} has {column.null_count()} empty values")
    values = column.unique().to_list()
    if isinstance(positive, str) and column.dtype == pl.String and positive not in values:
        stripped = column.str.strip_suffix(".")
        if positive in (kept := stripped.unique().to_list()) and len(kept) <= 2:
            dotted = sorted(v for v in values if v.endswith("."))
            if notes is not None:
                notes.append(f"label column {label!r}: the trailing '.' of {', '.join(map(repr, dotted))} was "
                             f"stripped to match the model's label {positive!r}")
            column, values = stripped, kept
    if positive is None:
        if len(values) != 2:
            raise DataError(f"{source}: label column {label!r} must have two classes, found {len(values)}: {values[:5]}")
        if set(values) <= {0, 1, True, False}:
            positive = 1
        else:
            counts = column.value_counts()
            positive = counts.sort("count")[label][0]
    elif len(values) > 2 or (len(values) == 2 and positive not in values):  # e.g. `>50K.` where fit saw `>50K`
        raise DataError(f"{source}: label column {label!r} holds {', '.join(sorted(map(repr, values))[:5])}; "
                        f"the model's positive value {positive!r} is not one of them")
    return (column == positive).cast(pl.Int64).to_numpy().copy(), positive


@dataclass
class FeatureSpec:
    """Per-column statistics fitted on train; travels in the ONNX metadata as `preprocess`."""

    numeric: list[str]
    categorical: list[str]
    log: list[bool]
    center: list[float]
    scale: list[float]
    vocab: dict[str, list[str]]
    ids: list[str] = field(default_factory=list)
    time: str | None = None
    label: str | None = None
    positive: object = 1
    clip: float = CLIP

    @classmethod
    def fit(cls, train: pl.DataFrame, columns: Columns, positive: object, log_columns: list[str] | None,
            min_count: int = 5) -> FeatureSpec:
        """Robust statistics of each numeric (after the log where asked) and category vocabularies."""
        log_columns = [c for c in columns.numeric if "amount" in c.lower()] if log_columns is None else log_columns
        spec = cls(numeric=list(columns.numeric), categorical=list(columns.categorical),
                   log=[c in log_columns for c in columns.numeric], center=[], scale=[], vocab={},
                   ids=list(columns.ids), time=columns.time, label=columns.label, positive=positive)
        numeric, _ = numeric_matrix(train, spec)
        x = np.where(spec.log, np.sign(numeric) * np.log1p(np.abs(numeric)), numeric)
        for j, name in enumerate(spec.numeric):
            col = x[:, j][np.isfinite(x[:, j])]
            if col.size == 0:
                raise DataError(f"train split: numeric column {name!r} has no values")
            q25, median, q75 = np.percentile(col, [25, 50, 75])
            scale = (q75 - q25) or col.std() or 1.0
            spec.center.append(float(median))
            spec.scale.append(float(scale))
        for name in spec.categorical:
            counts = train[name].cast(pl.String).drop_nulls().value_counts(sort=True)
            spec.vocab[name] = [str(v) for v, n in zip(counts[name], counts["count"]) if n >= min_count]
        return spec

    @property
    def cardinalities(self) -> list[int]:
        """Embedding rows per categorical: vocabulary + 1 (code 0 = unknown or missing)."""
        return [len(self.vocab[c]) + 1 for c in self.categorical]

    def to_meta(self) -> dict:
        return asdict(self)

    @classmethod
    def from_meta(cls, meta: dict) -> FeatureSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in meta.items() if k in known})


@dataclass
class Encoded:
    """Model inputs for a table of raw rows, plus what was wrong with each row."""

    numeric: np.ndarray  # (N, F) float32, NaN = missing
    categorical: np.ndarray  # (N, C) int64, 0 = unknown
    errors: pl.Series  # (N,) String: null, or why the row cannot be scored
    unknown: dict[str, int]  # unseen categories per column

    @property
    def bad(self) -> np.ndarray:
        return self.errors.is_not_null().to_numpy()

    @property
    def first_error(self) -> str | None:
        errors = self.errors.drop_nulls()
        return errors[0] if len(errors) else None


def check_columns(names: list[str], spec: FeatureSpec, source: str) -> list[str]:
    """Raise naming the missing feature columns; return the extra ones (ignored)."""
    needed = [*spec.numeric, *spec.categorical]
    missing = [c for c in needed if c not in names]
    if missing:
        raise DataError(f"{source}: missing required column(s): {', '.join(missing)}")
    return [c for c in names if c not in needed and c not in spec.ids and c not in (spec.label, spec.time)]


def numeric_matrix(df: pl.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, pl.Series]:
    """((N, F) float32 with NaN for missing, (N,) errors: text that is not a number, or inf)."""
    values, errors = [], []
    for name in spec.numeric:
        dtype, col = df.schema[name], pl.col(name)
        if dtype.is_numeric() or dtype == pl.Boolean:
            value = col.cast(pl.Float64)
            errors.append(pl.when(value.is_infinite()).then(pl.lit(f"{name}: infinite value")))
        elif dtype.is_temporal():
            value = col.dt.epoch("s").cast(pl.Float64)
        else:
            value = col.cast(pl.String).str.strip_chars().cast(pl.Float64, strict=False)
            errors.append(pl.when(col.is_not_null() & value.is_null()).then(pl.lit(f"{name}: not a number")))
            errors.append(pl.when(value.is_infinite()).then(pl.lit(f"{name}: infinite value")))
        values.append(value.cast(pl.Float32).alias(name))
    error = pl.coalesce(errors) if errors else pl.lit(None, pl.String)
    out = df.select(*values, error.alias("__error__"))
    matrix = np.ascontiguousarray(out.select(spec.numeric).to_numpy(), dtype=np.float32) if spec.numeric else np.zeros((df.height, 0), np.float32)
    return matrix, out["__error__"].cast(pl.String)


def category_codes(df: pl.DataFrame, spec: FeatureSpec) -> tuple[np.ndarray, dict[str, int]]:
    """((N, C) int64 codes: vocabulary index + 1, 0 = unknown or missing; unseen values per column).

    One vectorised polars pass: each column is cast to an Enum of its vocabulary (values outside
    it become null), whose physical code + 1 is the model's code.
    """
    if not spec.categorical:
        return np.zeros((df.height, 0), np.int64), {}
    codes = df.select([
        (pl.col(name).cast(pl.String).cast(pl.Enum(spec.vocab[name]), strict=False)
         .to_physical().cast(pl.Int64).fill_null(-1) + 1).alias(name)
        for name in spec.categorical
    ])
    zeros = codes.select((pl.col(name) == 0).sum() for name in spec.categorical).row(0) if df.height else None
    unknown = {name: int(zeros[j]) - df[name].null_count() if zeros else 0 for j, name in enumerate(spec.categorical)}
    return np.ascontiguousarray(codes.to_numpy(), dtype=np.int64), unknown


def category_values(enc: Encoded, spec: FeatureSpec, column: str) -> list[str | None]:
    """The value of categorical feature `column` in each encoded row, as the model saw it (None: unknown)."""
    if column not in spec.categorical:
        raise DataError(f"group thresholds: {column!r} is not a categorical feature of the model")
    vocab = spec.vocab[column]
    return [vocab[k - 1] if k > 0 else None for k in enc.categorical[:, spec.categorical.index(column)]]


def row_thresholds(enc: Encoded, spec: FeatureSpec, rule: dict | None, threshold: float) -> float | np.ndarray:
    """`threshold`, or with a per-group `rule` (the contract's `group_thresholds`) each row's group threshold."""
    if not rule:
        return threshold
    from deepapps.core.fairness import thresholds_for

    return thresholds_for(category_values(enc, spec, rule["column"]), rule)


def encode(df: pl.DataFrame, spec: FeatureSpec) -> Encoded:
    """Raw rows -> (numeric, categorical codes); bad values become row errors, not exceptions."""
    numeric, errors = numeric_matrix(df, spec)
    categorical, unknown = category_codes(df, spec)
    return Encoded(numeric, categorical, errors, unknown)
