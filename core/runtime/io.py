"""Atomic output files: a crash or Ctrl-C never leaves a half-written file behind."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from deepapps.core.errors import DataError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp's 0600 would surprise whoever reads the output
    try:
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path


def write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: str | Path, obj: object) -> Path:
    return write_text(path, json.dumps(obj, indent=2, default=_jsonable) + "\n")


def write_table(path: str | Path, table: pl.DataFrame) -> Path:
    """Write a table as CSV, Parquet or JSONL, chosen by the file suffix."""
    suffix = Path(path).suffix.lower()
    writers = {
        ".csv": lambda tmp: table.write_csv(tmp),
        ".parquet": lambda tmp: table.write_parquet(tmp),
        ".jsonl": lambda tmp: table.write_ndjson(tmp),
        ".json": lambda tmp: table.write_ndjson(tmp),
    }
    if suffix not in writers:
        raise DataError(f"{path}: unsupported output type {suffix!r}; use .csv, .parquet or .jsonl")
    return atomic_write(path, writers[suffix])


def _jsonable(obj: object) -> object:
    if hasattr(obj, "tolist"):  # numpy scalars and arrays
        return obj.tolist()
    return str(obj)
