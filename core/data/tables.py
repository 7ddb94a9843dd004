"""The one table reader every app uses (manifests, texts, transactions, series, signals), torch-free.

CSV, TSV, Parquet and JSON Lines by file suffix, read by polars. Scans are lazy, so scoring can
stream files larger than memory; `read_table` collects. Every failure is a DataError naming the
file.

CSV and TSV come in two dialects, told apart from the first MiB (`sniff_dialect`):
    quoted     standard quoting (RFC 4180): a field in double quotes may hold separators, line
               breaks and doubled quotes; the usual export of review and survey data
    unquoted   quote characters are text: SST-2 and similar exports hold stray quotes (a field
               that opens a quote it never closes)
`read_table` falls back to the other dialect when the sniffed one fails on the whole file; the
dialect it used is one line in the `notes` the caller passes (data summary, model card).

A path may be a URL (s3://, gs://, az://, hdfs://, https://): the file is fetched through fsspec
into the local cache (`core.runtime.remote`) and read from there; messages name the URL.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from deepapps.core.errors import DataError
from deepapps.core.runtime import remote

SNIFF_BYTES = 1 << 20

CSV_SUFFIXES = (".csv", ".txt")
SUFFIXES = (*CSV_SUFFIXES, ".tsv", ".parquet", ".pq", ".jsonl", ".ndjson", ".json")


def table_kind(path: str | Path) -> str | None:
    """`csv`, `tsv`, `parquet` or `jsonl` by suffix; None for other files."""
    suffix = Path(path).suffix.lower()
    if suffix in CSV_SUFFIXES:
        return "csv"
    return {".tsv": "tsv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl",
            ".json": "jsonl"}.get(suffix)


@dataclass(frozen=True)
class Dialect:
    """How a CSV/TSV file is split into fields.

    Attributes:
        separator: `,` or a tab.
        quoted: standard quoting (RFC 4180); False: quote characters are text.
        why: what in the file decided it (the note says it).
    """

    separator: str
    quoted: bool
    why: str

    @property
    def name(self) -> str:
        kind = "TSV" if self.separator == "\t" else "CSV"
        return f"{kind} with standard quoting (RFC 4180)" if self.quoted else f"{kind} without quoting (quotes are text)"

    def other(self, why: str) -> Dialect:
        return Dialect(self.separator, not self.quoted, why)

    def note(self, path: str | Path) -> str:
        return f"{Path(path).name}: read as {self.name}: {self.why}"


def sniff_dialect(path: str | Path, kind: str | None = None) -> Dialect:
    """The dialect of a CSV/TSV file, from its first MiB.

    Without quote characters both dialects read the same: CSV is read quoted, TSV unquoted. With
    them, the dialect under which every record has the header's number of fields wins; quoted
    when both do (and polars reads the sample so), unquoted when neither does for TSV.
    """
    kind = kind or table_kind(path)
    separator = "\t" if kind == "tsv" else ","
    with remote.open_read(path) as f:
        raw = f.read(SNIFF_BYTES + 1)
    whole = len(raw) <= SNIFF_BYTES
    raw = raw[:SNIFF_BYTES]
    if b'"' not in raw:
        return Dialect(separator, kind != "tsv", "no quote characters" + ("" if whole else " in its first MiB"))
    text = raw.decode("utf-8", errors="replace")
    if not whole:
        text = text[: text.rfind("\n") + 1] or text
    quoted, quoted_why = _fits_quoted(text, separator, whole)
    unquoted = _fits_unquoted(text, separator, whole)
    if quoted:
        return Dialect(separator, True, quoted_why)
    if unquoted:
        return Dialect(separator, False, f"stray quote characters ({quoted_why}); as written, every line has "
                       "the header's fields")
    return Dialect(separator, kind != "tsv", f"neither dialect fits every line ({quoted_why})")


def _fits_quoted(text: str, separator: str, whole: bool) -> tuple[bool, str]:
    """(whether RFC 4180 parses `text` into records of the header's width, why)."""
    lines = _lines(text)
    reader = csv.reader(iter(lines), delimiter=separator, quotechar='"', doublequote=True, strict=True)
    widths, ends, multiline = [], [], 0
    try:
        for record in reader:
            if record:
                widths.append(len(record))
                multiline += reader.line_num - (ends[-1] if ends else 0) > 1
            ends.append(reader.line_num)
    except csv.Error as exc:
        if whole or "unexpected end of data" not in str(exc):  # the sample may end inside a quoted field
            return False, f"line {reader.line_num}: {exc}"
    if not whole and len(widths) > 1:
        widths, ends = widths[:-1], ends[:-1]  # the last record may be cut short by the sample
    if not widths:
        return False, "no records"
    bad = next((i for i, w in enumerate(widths) if w != widths[0]), None)
    if bad is not None:
        return False, f"record {bad + 1} has {widths[bad]} fields, the header {widths[0]}"
    try:  # polars must agree: it reads a quote inside an unquoted field differently from Python
        sample = "".join(lines[: ends[-1]]) if ends else text
        pl.read_csv(io.StringIO(sample), separator=separator, quote_char='"', infer_schema_length=0)
    except Exception as exc:  # noqa: BLE001 - polars raises several types
        return False, f"polars cannot read it quoted: {first_line(exc, 80)}"
    return True, "quoted fields" + (f" ({multiline} spanning several lines)" if multiline else "")


def _fits_unquoted(text: str, separator: str, whole: bool) -> bool:
    """Whether every line of `text` has the header's number of fields, quotes read as text."""
    lines = [line for line in _lines(text) if line.strip()]
    if not whole and len(lines) > 1:
        lines = lines[:-1]
    widths = {line.count(separator) for line in lines}
    return len(widths) == 1


def _lines(text: str) -> list[str]:
    """The lines of `text` with their ends, split at line feeds only (as polars splits them; a field
    may hold other line separators such as U+2028)."""
    parts = text.split("\n")
    return [part + "\n" for part in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def scan_table(
    path: str | Path, string_columns: list[str] | tuple[str, ...] = (), all_strings: bool = False,
    infer_rows: int | None = 10_000, null_values: list[str] | None = None, notes: list[str] | None = None,
    dialect: Dialect | None = None,
) -> pl.LazyFrame:
    """A lazy scan of a table file.

    Args:
        path: a .csv/.txt, .tsv, .parquet/.pq or .jsonl/.ndjson/.json file.
        string_columns: columns read as text (CSV/TSV; e.g. numbers that may hold text further down).
        all_strings: read every CSV/TSV column as text (manifests: paths and labels stay as written).
        infer_rows: rows polars looks at to infer CSV column types (None: all of them).
        null_values: CSV/TSV strings read as missing besides the empty field.
        notes: CSV/TSV: the dialect read is appended to it (one line).
        dialect: CSV/TSV: read with this dialect (default: `sniff_dialect`).

    Raises:
        DataError: the file is missing, of another type, empty or unreadable.
    """
    name = str(path) if remote.is_remote(path) else str(Path(path))  # what messages call the file
    path = local_table(path)
    if not path.is_file():
        raise DataError(f"{name}: no such file")
    kind = table_kind(name)
    if kind is None:
        raise DataError(f"{name}: unsupported table type {Path(name).suffix!r}; use .csv, .tsv, .parquet or .jsonl")
    if path.stat().st_size == 0:
        raise DataError(f"{name}: empty file")
    try:
        if kind in ("csv", "tsv"):
            dialect = dialect or sniff_dialect(path, kind)
            if notes is not None:
                notes.append(dialect.note(name))
            overrides = {c: pl.String for c in string_columns}
            return pl.scan_csv(
                path, separator=dialect.separator, quote_char='"' if dialect.quoted else None,
                schema_overrides=overrides or None, infer_schema_length=0 if all_strings else infer_rows,
                null_values=null_values,
            )
        if kind == "parquet":
            return pl.scan_parquet(path)
        return pl.scan_ndjson(path, infer_schema_length=infer_rows)
    except Exception as exc:  # polars raises several types for unreadable files
        raise DataError(f"{name}: cannot read ({first_line(exc)})") from None


def local_table(path: str | Path) -> Path:
    """`path` itself, or for a URL the cached local copy of the file (DataError naming the URL)."""
    return remote.cached_file(str(path)) if remote.is_remote(path) else Path(path)


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


def read_table(path: str | Path, columns: list[str] | None = None, notes: list[str] | None = None,
               **scan) -> pl.DataFrame:
    """The whole table in memory; DataError when it has no rows or lacks one of `columns`.

    A CSV/TSV the sniffed dialect cannot read is read with the other one when that works.

    Args:
        notes: CSV/TSV: the dialect used is appended to it (one line).
        scan: the options of `scan_table`.
    """
    kind = table_kind(path)
    dialect = scan.pop("dialect", None)
    local = local_table(path) if kind in ("csv", "tsv") and dialect is None else None
    if local is not None and local.is_file() and local.stat().st_size:
        dialect = sniff_dialect(local, kind)
    try:
        df = scan_table(path, dialect=dialect, **scan).collect()
    except DataError:
        raise
    except Exception as exc:
        if dialect is None:
            raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
        try:  # e.g. a stray quote or a quoted line break after the sniffed first MiB
            dialect = dialect.other(f"the {dialect.name} reading failed ({first_line(exc, 120)})")
            df = scan_table(path, dialect=dialect, **scan).collect()
        except Exception:
            raise DataError(f"{path}: cannot read ({first_line(exc)})") from None
    if notes is not None and dialect is not None:
        notes.append(dialect.note(path))
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
