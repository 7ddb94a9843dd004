"""Atomic output files: a crash, Ctrl-C or SIGTERM never leaves a half-written file behind.

Every output is written to a temporary file in a hidden temporary folder beside it and renamed
into place. An output URL (s3://, gs://, az://, hdfs://) is written to a local temporary file and
uploaded to a temporary object that is then moved into place (`core.runtime.remote.upload_file`
says how atomic that is on each store). Folders of writes in progress are tracked, so the CLI
removes them even when a signal or a panic inside a native library ends the process another way
than through `atomic_write`'s own clean-up.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import polars as pl

from deepapps.core.errors import DataError
from deepapps.core.runtime import remote


_PENDING: set[Path] = set()  # temporary folders of writes in progress


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path | str:
    """Call `write(tmp)` on a temporary file beside `path`, then rename it into place.

    A remote `path` (a URL) is written to a local temporary file, then uploaded (returns the URL).

    The temporary file sits in a hidden temporary folder of its own, removed on any failure: a
    native writer that is still running when a signal stops us (polars' streaming sinks) cannot
    recreate the file once its folder is gone.

    Raises:
        DataError: the folder cannot be made or written to (one line naming `path`).
    """
    if remote.is_remote(path):
        return remote.write_via_local(str(path), write, _PENDING)
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        folder = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    except OSError as exc:
        raise DataError(f"{path}: cannot write there ({exc.strerror or type(exc).__name__})") from None
    _PENDING.add(folder)
    tmp = folder / path.name
    try:
        tmp.touch()  # mode 0666 less the umask, like any new file
        write(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
        _PENDING.discard(folder)
    return path


def remove_pending() -> None:
    """Delete the temporary folders of writes that did not finish (the CLI calls it on exit)."""
    for folder in list(_PENDING):
        shutil.rmtree(folder, ignore_errors=True)
        _PENDING.discard(folder)


def same_file(a: str | Path, b: str | Path) -> bool:
    """Whether two paths name the same existing file (an output must never overwrite an input)."""
    if remote.is_remote(a) or remote.is_remote(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    try:
        return Path(a).exists() and Path(b).exists() and os.path.samefile(a, b)
    except OSError:
        return False


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
