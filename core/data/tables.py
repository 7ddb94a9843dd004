"""The one table reader every app uses (manifests, texts, transactions, series, signals), torch-free.

CSV, TSV, Parquet and JSON Lines by file suffix, read by polars. Scans are lazy, so scoring can
stream files larger than memory; `read_table` collects. Every failure is a DataError naming the
file. TSV is read with quoting off: SST-2 and similar exports hold stray quote characters.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from deepapps.core.errors import DataError

CSV_SUFFIXES = (".csv", ".txt")
SUFFIXES = (*CSV_SUFFIXES, ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")


def table_kind(path: str | Path) -> str | None:
    """`csv`, `tsv`, `parquet` or `jsonl` by suffix; None for other files."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    return {".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "jsonl"}.get(suffix)


def scan_table(
    path: str | Path, string_columns: list[str] | tuple[str, ...] = (), all_strings: bool = False,
    infer_rows: int | None = 10_000, null_values: list[str] | None = None,
) -> pl.LazyFrame:
    """A lazy scan of a table file.

    Args:
        path: a .csv/.txt, .tsv, .parquet/.pq or .jsonl/.ndjson/.json file.
        string_columns: columns read as text (CSV/TSV; e.g. numbers that may hold text further down).
        all_strings: read every CSV/TSV column as text (manifests: paths and labels stay as written).
        infer_rows: rows polars looks at to infer CSV column types (None: all of them).
        null_values: CSV/TSV strings read as missing besides the empty field.

    Raises:
        DataError: the file is missing, of another type, empty or unreadable.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    kind = table_kind(path)
    if kind is None:
        raise DataError(f"{path}: unsupported table type {path.suffix!r}; use .csv, .tsv, .parquet or .jsonl")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file")
    try:
        if kind in ("csv", "tsv"):
            overrides = {c: pl.String for c in string_columns}
            return pl.scan_csv(
                path, separator="\t" if kind == "tsv" else ",", quote_char=None if kind == "tsv" else '"',
                schema_overrides=overrides or None, infer_schema_length=0 if all_strings else infer_rows,
                null_values=null_values,
            )
        if kind == "parquet":
            return pl.scan_parquet(path)
        return pl.scan_ndjson(path, infer_schema_length=infer_rows)
    except Exception as exc:  # polars raises several types for unreadable files
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None


def table_schema(path: str | Path, lf: pl.LazyFrame | None = None) -> pl.Schema:
    """Column names and dtypes of a table, without reading its rows."""
    try:
        schema = (lf if lf is not None else scan_table(path)).collect_schema()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
    if not schema:
        raise DataError(f"{path}: empty file (no columns)")
    return schema


def read_table(path: str | Path, columns: list[str] | None = None, **scan) -> pl.DataFrame:
    """The whole table in memory; DataError when it has no rows or lacks one of `columns`.

    `scan`: the options of `scan_table`.
    """
    try:
        df = scan_table(path, **scan).collect()
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
    missing = [c for c in columns or [] if c not in df.columns]
    if missing:
        raise DataError(f"{path}: no column {missing[0]!r}; columns are {df.columns}")
    if df.height == 0:
        raise DataError(f"{path}: empty table (no rows)")
    return df


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (polars' are often pages long)."""
    text = str(exc).strip()
    return (text.splitlines()[0] if text else type(exc).__name__)[:limit]
