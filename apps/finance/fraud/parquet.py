"""Parquet inputs larger than memory (torch-free: training and evaluate both use it).

`wants_streaming` decides `--data.streaming auto`; `read_split` reads only one split's rows of a
Parquet file: the split is decided from the label and time columns alone (the same
`split_frame` as in memory), then only those rows are collected, in the split's order.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from deepapps.apps.finance.fraud.features import BUILTIN
from deepapps.apps.finance.fraud.tables import Columns, split_frame, tidy_frame
from deepapps.core.errors import ConfigError

AUTO_RAM_FRACTION = 0.1  # `auto` streams a Parquet input whose size on disk exceeds this share of RAM


def parquet_files(path: str) -> list[Path] | None:
    """The Parquet file, or the sorted .parquet files under a folder; None for anything else."""
    p = Path(path)
    if p.is_file():
        return [p] if p.suffix.lower() in (".parquet", ".pq") else None
    if p.is_dir():
        files = sorted(f for f in p.rglob("*") if f.suffix.lower() in (".parquet", ".pq") and f.is_file())
        return files or None
    return None


def ram_bytes() -> int:
    """Physical memory of the machine (0 when unknown)."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return 0


def large_parquet(path: str) -> tuple[bool, str]:
    """(a Parquet input above AUTO_RAM_FRACTION of RAM?, why)."""
    files = parquet_files(path) if path != BUILTIN else None
    if not files:
        return False, "not a Parquet input"
    size, ram = sum(f.stat().st_size for f in files), ram_bytes()
    share = size / ram if ram else 0.0
    return share > AUTO_RAM_FRACTION, (f"Parquet {size / 2**20:,.0f} MiB = {share:.1%} of RAM; "
                                       f"streams above {AUTO_RAM_FRACTION:.0%}")


def wants_streaming(cfg) -> tuple[bool, str]:
    """(stream?, why) for `--data.streaming` true, false or auto (`cfg`: the data config)."""
    value = str(cfg.streaming).lower()
    if value not in ("auto", "true", "false"):
        raise ConfigError(f"--data.streaming {cfg.streaming}: choose auto, true or false")
    if value == "false":
        return False, "asked"
    if value == "true":
        if (parquet_files(cfg.path) if cfg.path != BUILTIN else None) is None:
            raise ConfigError(f"--data.streaming true: {cfg.path} is not a Parquet file or folder of Parquet files")
        return True, "asked"
    return large_parquet(cfg.path)


def read_split(path: str, data, columns: Columns, split: str) -> pl.DataFrame:
    """The rows of `split` of a Parquet file, as `split_frame` orders them, reading only those rows.

    Args:
        data: the data config the model was fit with (split settings, missing values).
        columns: the label and time columns (the others are read as they are).
    """
    keys = [c for c in (columns.label, columns.time) if c]
    missing = list(data.missing_values)
    frame = tidy_frame(pl.scan_parquet(path).select(keys).collect(), missing, numbers=False).with_row_index("__row")
    parts = split_frame(frame, columns, data.split, data.val_fraction, data.test_fraction, data.split_seed)
    if split not in parts:
        return None
    rows = parts[split]["__row"]
    wanted = pl.DataFrame({"__row": rows, "__order": np.arange(len(rows), dtype=np.int64)})
    part = (pl.scan_parquet(path).with_row_index("__row").join(wanted.lazy(), on="__row", how="inner")
            .collect(engine="streaming").sort("__order").drop("__row", "__order"))
    return tidy_frame(part, missing, numbers=False)
