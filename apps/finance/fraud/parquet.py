"""Parquet inputs larger than memory (torch-free: training and evaluate both use it).

`wants_streaming` decides `--data.streaming auto`. `ParquetTable` reads a file or folder in record
batches; `split_rule` decides the split `split_frame` makes from the keys alone and keeps it
compactly (`SplitRule`: two (time, row) boundaries of the time order, found by an exact radix
selection; a uint8 code per row for the random split); `split_batches` yields one split's rows in
file order (the streaming DataModule, and evaluate of a streamed input). `read_split` collects
one split's rows in the split's order (the label and time columns of every row are read for it).
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
READ_ROWS = 65_536  # rows per record batch read from Parquet


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


class ParquetTable:
    """A Parquet file or folder read in record batches, each with the table's index of its first row.

    Attributes: `units` (file, row group, rows): the unit of reading and of shuffling; `offsets`: the
    table's index of each unit's first row (and the row count last); `n_rows`.
    """

    def __init__(self, files: list[Path], names: dict[str, str], missing: list[str]):
        """`names`: tidy column name -> name in the files; `missing`: text values read as missing."""
        import pyarrow.parquet as pq

        self.files, self.names, self.missing = files, names, list(missing)
        metadata = {f: pq.ParquetFile(f).metadata for f in files}
        self.units = [(f, g, metadata[f].row_group(g).num_rows) for f in files for g in range(metadata[f].num_row_groups)]
        self.offsets = np.cumsum([0] + [n for _, _, n in self.units])
        self.n_rows = int(self.offsets[-1])

    @classmethod
    def open(cls, path: str, missing: list[str]) -> ParquetTable:
        import pyarrow.parquet as pq

        files = parquet_files(path)
        if not files:
            raise ConfigError(f"{path} is not a Parquet file or folder of Parquet files")
        names = pq.read_schema(files[0]).names
        tidy = tidy_frame(pl.from_arrow(pq.read_schema(files[0]).empty_table()), missing, numbers=False).columns
        return cls(files, dict(zip(tidy, names)), missing)

    def read(self, columns: list[str], units=None):
        """(first row's index, tidy frame of `columns`) per record batch of READ_ROWS, units in `units`' order."""
        import pyarrow.parquet as pq

        names = [self.names[c] for c in dict.fromkeys(columns)]
        for i in (range(len(self.units)) if units is None else units):
            path, group, _ = self.units[i]
            start = int(self.offsets[i])
            for batch in pq.ParquetFile(path).iter_batches(READ_ROWS, row_groups=[group], columns=names):
                frame = tidy_frame(pl.from_arrow(batch), self.missing, numbers=False)
                yield start, frame
                start += frame.height


class SplitRule:
    """Which split a row is in, from its keys alone, kept without a per-row array where it can be.

    `time`: `bounds` holds the first (time key, row) of validation and of test (None: the split is
    empty); a row is train below the first, validation below the second, test from there (the
    order of a stable sort by time, as `split_frame`). `rows`: one uint8 code per row (the random
    split, or a time column that is not a number or a date).
    """

    CODES = ("train", "val", "test")

    def __init__(self, time: str | None, bounds: list | None = None, codes: np.ndarray | None = None):
        self.time, self.bounds, self.codes = time, bounds, codes

    def of(self, start: int, frame: pl.DataFrame) -> np.ndarray:
        """Split codes (0 train, 1 val, 2 test) of the rows start.. of `frame` (which holds the time column)."""
        if self.codes is not None:
            return self.codes[start:start + frame.height]
        keys, rows = time_keys(frame[self.time]), np.arange(start, start + frame.height)
        out = np.zeros(frame.height, np.uint8)
        for bound in self.bounds:
            if bound is not None:
                key, row = bound
                out += (keys > key) | ((keys == key) & (rows >= row))
            else:
                break
        return out

    @property
    def nbytes(self) -> int:
        return 0 if self.codes is None else int(self.codes.nbytes)


def time_keys(series: pl.Series) -> np.ndarray | None:
    """uint64 keys that sort as `np.argsort(series.to_numpy())` does (missing last); None: not a number or date.

    Floats (and integers with missing values, which numpy sees as floats) by their IEEE bits with the sign
    flipped, -0.0 as 0.0 and NaN last; integers by value; dates and times by their physical integer."""
    dtype, sign = series.dtype, np.uint64(1 << 63)
    if dtype.is_temporal():
        series = series.to_physical()
    elif dtype.is_float() or (dtype.is_integer() and series.null_count()):
        values = series.cast(pl.Float64).to_numpy() + 0.0  # -0.0 -> 0.0; null -> NaN
        bits = values.view(np.uint64)
        keys = np.where(bits & sign, ~bits, bits | sign)
        keys[np.isnan(values)] = np.iinfo(np.uint64).max
        return keys
    if not series.dtype.is_integer():
        return None
    missing = series.is_null().to_numpy()
    keys = series.cast(pl.Int64).fill_null(0).to_numpy().view(np.uint64) ^ sign
    keys[missing] = np.iinfo(np.uint64).max
    return keys


def split_rule(table: ParquetTable, columns: Columns, data) -> SplitRule:
    """The split `split_frame` makes, decided from the keys alone: boundaries of the time order, found by an
    exact radix selection over the time column, or (random split, a time column that is not a number or a
    date) a code per row. `data`: the data config (split, fractions, seed)."""
    n = table.n_rows
    if data.split not in ("time", "random"):
        raise ConfigError(f"--data.split {data.split}: choose time or random")
    if not (0 < data.val_fraction < 1 and 0 < data.test_fraction < 1 and data.val_fraction + data.test_fraction < 1):
        raise ConfigError("--data.val_fraction and --data.test_fraction must be in (0, 1) and sum below 1")
    if (data.split == "time" and columns.time is not None and n
            and time_keys(next(table.read([columns.time]))[1][columns.time]) is not None):
        n_test, n_val = round(n * data.test_fraction), round(n * data.val_fraction)  # as split_frame
        cuts = (n - n_val - n_test, n - n_test)
        return SplitRule(columns.time, [_select(table, columns.time, k) if k < n else None for k in cuts])
    keys = [k for k in (columns.label, columns.time) if k]
    frame = pl.concat([f for _, f in table.read(keys)]) if keys else pl.DataFrame({"_": np.zeros(n)})
    parts = split_frame(frame.with_row_index("__row"), columns, data.split, data.val_fraction, data.test_fraction,
                        data.split_seed)
    del frame
    codes = np.zeros(n, np.uint8)
    for code, k in enumerate(SplitRule.CODES):
        codes[parts[k]["__row"].to_numpy()] = code
    return SplitRule(columns.time, codes=codes)


def _select(table: ParquetTable, time: str, k: int) -> tuple[int, int]:
    """The k-th (0-based) (time key, row) pair in sorted order: radix selection, 16 bits a pass."""
    prefix, below = 0, 0
    for shift in (48, 32, 16, 0):
        counts = np.zeros(1 << 16, np.int64)
        for _, frame in table.read([time]):
            keys = time_keys(frame[time])
            if shift < 48:
                keys = keys[(keys >> np.uint64(shift + 16)) == np.uint64(prefix)]
            counts += np.bincount(((keys >> np.uint64(shift)) & np.uint64(0xFFFF)).astype(np.int64), minlength=1 << 16)
        total = np.cumsum(counts)
        digit = int(np.searchsorted(total, k - below, side="right"))
        below += int(total[digit - 1]) if digit else 0
        prefix = (prefix << 16) | digit
    seen = 0  # ties keep the file order (a stable sort): the (k - below)-th row holding that key
    for start, frame in table.read([time]):
        hits = np.flatnonzero(time_keys(frame[time]) == np.uint64(prefix))
        if seen + len(hits) > k - below:
            return prefix, start + int(hits[k - below - seen])
        seen += len(hits)
    raise AssertionError("radix selection ran past the table")  # pragma: no cover


def split_batches(path: str, data, columns: Columns, split: str, read: list[str]):
    """The rows of `split` of a Parquet input (file or folder) as tidy frames of `read` columns, in file order,
    one per record batch: the split decided as `split_rule` does, nothing per row kept (time split)."""
    table = ParquetTable.open(path, list(data.missing_values))
    rule = split_rule(table, columns, data)
    code = SplitRule.CODES.index(split)
    keys = [k for k in (columns.time,) if k and rule.codes is None]
    for start, frame in table.read([*read, *keys]):
        rows = np.flatnonzero(rule.of(start, frame) == code)
        if len(rows):
            yield frame[rows].select(list(dict.fromkeys(read)))


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
