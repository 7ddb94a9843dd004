"""Time series tables -> regular, gap-filled arrays, splits and windows. Torch-free.

Shared by training (data.py) and serving (runtime.py), so both see the same frequency, the
same filled values, the same split borders and the same windows.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from deepapps.core.data.tables import read_table
from deepapps.core.errors import ConfigError, DataError

FILL_METHODS = ("linear", "ffill", "zero", "none")
# known-future calendar features (calendar_features)
CALENDAR_FEATURES = ("minute", "hour", "weekday", "day", "month", "dayofyear", "holiday")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_CALENDAR_UNITS = ("mo", "q", "y")


@dataclass
class Series:
    """One regular series: timestamps (T,) and values (T, C) after gap filling."""

    id: str
    timestamps: np.ndarray  # (T,) datetime64[us]
    values: np.ndarray  # (T, C) float32
    filled: int = 0  # values filled (missing steps and nulls)
    covariates: np.ndarray | None = None  # (T, P) float32, past-observed covariate columns


@dataclass
class SeriesTable:
    """Every series of one file, with the columns and frequency they share."""

    series: list[Series]
    targets: list[str]
    freq: str
    notes: list[str] = field(default_factory=list)
    covariates: list[str] = field(default_factory=list)

    def by_id(self) -> dict[str, Series]:
        return {s.id: s for s in self.series}


# --- reading ---------------------------------------------------------------------------


def read_frame(path: str, notes: list[str] | None = None) -> pl.DataFrame:
    """A CSV/Parquet file (core.data.tables) as a polars frame, or a builtin series.

    `notes`: a CSV's dialect is appended to it (one line)."""
    if path == "builtin:co2":
        return _co2()
    if path.startswith("builtin:"):
        raise ConfigError(f"--data.path {path}: unknown builtin; use builtin:co2")
    return read_table(path, notes=notes)


def _co2() -> pl.DataFrame:
    """Weekly atmospheric CO2 at Mauna Loa (ppm), 1958-2001, as shipped by statsmodels."""
    try:
        from statsmodels.datasets import co2
    except ImportError:  # a serve-only install: the builtin needs the training dependencies
        raise ConfigError("builtin:co2 comes with statsmodels: pip install deepapps (the full install)") from None

    data = co2.load_pandas().data
    return pl.DataFrame({"date": data.index.to_numpy().astype("datetime64[us]"), "co2": data["co2"].to_numpy()})


def load_table(
    path: str, timestamp: str, targets: list[str] | None = None, id_column: str | None = None,
    freq: str | None = None, fill: str = "linear", covariates: list[str] | None = None,
) -> SeriesTable:
    """Read, check, sort, de-duplicate, regularise and fill every series of a file.

    `covariates` are past-observed numeric columns, regularised and filled like the targets.

    Raises:
        DataError: missing columns, unparseable timestamps, non-numeric targets, gaps with fill `none`.
    """
    if fill not in FILL_METHODS:
        raise ConfigError(f"--data.fill {fill}: choose one of {', '.join(FILL_METHODS)}")
    notes: list[str] = []
    df = read_frame(path, notes)
    table = prepare_frame(df, path, timestamp, targets, id_column, freq, fill, covariates)
    table.notes[:0] = notes
    return table


def prepare_frame(
    df: pl.DataFrame, source: str, timestamp: str, targets: list[str] | None, id_column: str | None,
    freq: str | None, fill: str, covariates: list[str] | None = None,
) -> SeriesTable:
    """`load_table` on a frame already in memory (`source` names it in errors)."""
    covariates = list(covariates or [])
    for column in [timestamp, *(targets or []), *covariates, *([id_column] if id_column else [])]:
        if column not in df.columns:
            raise DataError(f"{source}: no column {column!r} (columns: {', '.join(df.columns[:12])})")
    if df.height == 0:
        raise DataError(f"{source}: no rows")
    df = df.with_columns(_parse_timestamps(df[timestamp], source))
    if targets is None:
        skip = {timestamp, id_column, *covariates}
        targets = [c for c, t in df.schema.items() if c not in skip and t.is_numeric()]
        if not targets:
            raise DataError(f"{source}: no numeric target columns besides {timestamp!r}")
    if both := set(targets) & set(covariates):
        raise ConfigError(f"--data.covariates: {', '.join(sorted(both))} is also a target column")
    columns = [*targets, *covariates]
    infinite = sum(int(df[c].cast(pl.Float64, strict=False).is_infinite().sum()) for c in columns)
    df = df.with_columns(_numeric(df[c], source) for c in columns)
    ids = df[id_column].cast(pl.String) if id_column else pl.Series([""] * df.height)
    df = df.with_columns(ids.alias("__id")).select("__id", timestamp, *columns)
    notes = [f"{infinite} infinite values treated as missing"] if infinite else []
    backwards = df.select((pl.col(timestamp).diff().over("__id").dt.total_microseconds() < 0).any()).item()
    if backwards:
        notes.append("rows were not in time order: sorted")
    df = df.sort("__id", timestamp)
    dupes = df.height - df.unique(["__id", timestamp], keep="last", maintain_order=True).height
    if dupes:
        df = df.unique(["__id", timestamp], keep="last", maintain_order=True)
        notes.append(f"{dupes} duplicate timestamps: kept the last row of each")
    freq = freq or infer_freq(df, timestamp, source)
    series = [_regular(part, timestamp, columns, freq, fill, source) for part in df.partition_by("__id", maintain_order=True)]
    filled = sum(s.filled for s in series)
    if filled:
        notes.append(f"{filled} missing values filled ({fill}) over {len(series)} series")
    if covariates:
        n = len(targets)
        for s in series:
            s.values, s.covariates = s.values[:, :n], s.values[:, n:]
    return SeriesTable(series, list(targets), freq, notes, covariates)


def _parse_timestamps(column: pl.Series, source: str) -> pl.Series:
    if column.dtype == pl.Datetime:
        return column.cast(pl.Datetime("us"))
    if column.dtype == pl.Date:
        return column.cast(pl.Datetime("us"))
    if column.dtype != pl.String:
        raise DataError(f"{source}: timestamp column {column.name!r} is {column.dtype}, not dates or text")
    try:
        parsed = column.str.to_datetime(strict=False, time_unit="us")
    except pl.exceptions.PolarsError:  # no format fits any value
        parsed = pl.Series(column.name, [None] * len(column), dtype=pl.Datetime("us"))
    bad = parsed.is_null() & column.is_not_null()
    if bad.any() or parsed.is_null().any():
        first = column.filter(bad | parsed.is_null())[0]
        raise DataError(f"{source}: timestamp column {column.name!r} has unparseable value {first!r}")
    return parsed


def _numeric(column: pl.Series, source: str) -> pl.Series:
    """Float64 with NaN and +-inf as missing (filled later like any gap)."""
    if column.dtype.is_numeric():
        cast = column.cast(pl.Float64)
    else:
        cast = column.cast(pl.Float64, strict=False)
        bad = cast.is_null() & column.is_not_null()
        if bad.any():
            raise DataError(f"{source}: target column {column.name!r} is not numeric (e.g. {column.filter(bad)[0]!r})")
    return cast.fill_nan(None).set(cast.is_infinite(), None)


def _regular(part: pl.DataFrame, timestamp: str, targets: list[str], freq: str, fill: str, source: str) -> Series:
    """One series on its regular grid; missing steps and null values filled."""
    sid = part["__id"][0]
    grid = part.select(timestamp).upsample(timestamp, every=freq)
    off_grid = part.height - part.join(grid, on=timestamp, how="semi").height
    if off_grid:
        raise DataError(f"{source}: series {sid or '(single)'} has {off_grid} timestamps off its {freq} grid")
    full = grid.join(part.drop("__id"), on=timestamp, how="left")
    missing = int(sum(full[c].is_null().sum() for c in targets))
    empty = [c for c in targets if full[c].is_null().all()]
    if empty:
        raise DataError(f"{source}: series {sid or '(single)'} has no values in column {empty[0]!r}")
    if missing and fill == "none":
        raise DataError(f"{source}: series {sid or '(single)'} has {missing} missing values and --data.fill is none")
    values = fill_missing(full.select(targets).to_numpy().astype(np.float64), fill)
    ts = full[timestamp].to_numpy().astype("datetime64[us]")
    return Series(sid, ts, values.astype(np.float32), missing)


def fill_missing(values: np.ndarray, method: str) -> np.ndarray:
    """Fill NaN in (T, C) along time: linear interpolation, forward fill, or zeros."""
    values = np.array(values, dtype=np.float64)
    if not np.isnan(values).any() or method == "none":
        return values
    if method == "zero":
        return np.nan_to_num(values, nan=0.0)
    steps = np.arange(len(values))
    for c in range(values.shape[1]):
        col, ok = values[:, c], ~np.isnan(values[:, c])
        if not ok.any():
            col[:] = 0.0
        elif method == "linear":
            col[~ok] = np.interp(steps[~ok], steps[ok], col[ok])
        else:  # ffill, then backfill the head
            idx = np.where(ok, steps, 0)
            np.maximum.accumulate(idx, out=idx)
            col[:] = col[idx]
            col[: np.argmax(ok)] = col[np.argmax(ok)]
    return values


def training_statistics(parts: list[np.ndarray], ranges: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The training part of every series stacked (T, C) in float64, its mean and std (C,), std at
    least 1e-8: the z-score that fit bakes into the graph and evaluate scores on."""
    train = np.concatenate([p[: r["train"][1]] for p, r in zip(parts, ranges)]).astype(np.float64)
    return train, train.mean(axis=0), np.maximum(train.std(axis=0), 1e-8)


# --- calendar features ---------------------------------------------------------------------


def calendar_features(timestamps: np.ndarray, names: list[str] | tuple[str, ...],
                      holidays: str | None = None) -> np.ndarray:
    """Known-future features of datetime64 timestamps (T,) -> (T, K) float32, each in [-0.5, 0.5].

    minute/59, hour/23, weekday/6 (Monday 0), (day-1)/30, (month-1)/11, (dayofyear-1)/365,
    each minus 0.5 (the encoding of the Informer/Autoformer loaders); `holiday` is 0.5 on the
    public holidays of the `holidays` region (e.g. `US`, `US-CA`, `CN`), else -0.5.
    """
    unknown = [n for n in names if n not in CALENDAR_FEATURES]
    if unknown:
        raise ConfigError(f"--data.calendar {', '.join(unknown)}: choose from {', '.join(CALENDAR_FEATURES)}")
    ts = np.asarray(timestamps).astype("datetime64[us]")
    days = ts.astype("datetime64[D]")
    months = ts.astype("datetime64[M]")
    years = ts.astype("datetime64[Y]")
    raw = {
        "minute": ((ts - ts.astype("datetime64[h]")) // np.timedelta64(1, "m"), 59),
        "hour": ((ts - days) // np.timedelta64(1, "h"), 23),
        "weekday": ((days.astype(np.int64) + 3) % 7, 6),  # 1970-01-01 was a Thursday
        "day": ((days - months.astype("datetime64[D]")).astype(np.int64), 30),
        "month": (months.astype(np.int64) % 12, 11),
        "dayofyear": ((days - years.astype("datetime64[D]")).astype(np.int64), 365),
    }
    if "holiday" in names:
        raw["holiday"] = (np.isin(days, holiday_dates(holidays, years)), 1)
    cols = [raw[n][0].astype(np.float64) / raw[n][1] - 0.5 for n in names]
    return np.stack(cols, axis=-1).astype(np.float32) if cols else np.zeros((len(ts), 0), np.float32)


def holiday_dates(region: str | None, years: np.ndarray) -> np.ndarray:
    """Public holidays (datetime64[D]) of `region` (`CC` or `CC-SUBDIV`) in the given years."""
    if not region:
        raise ConfigError("--data.calendar holiday needs --data.holidays, a country code such as US, GB or CN")
    year = years.astype(np.int64) + 1970
    return _holidays(region, int(year.min()), int(year.max())) if len(year) else np.array([], "datetime64[D]")


@functools.lru_cache(maxsize=64)  # predict asks once per series, for the same few years
def _holidays(region: str, first: int, last: int) -> np.ndarray:
    try:
        import holidays  # pure Python; imported only for models that use it
    except ImportError:
        raise ConfigError("the holiday feature needs the `holidays` package: pip install holidays") from None
    country, _, subdiv = region.partition("-")
    try:
        dates = holidays.country_holidays(country.upper(), subdiv=subdiv or None, years=range(first, last + 1))
    except NotImplementedError as exc:
        raise ConfigError(f"--data.holidays {region}: {exc}") from None
    out = np.array(sorted(dates), dtype="datetime64[D]")
    out.flags.writeable = False  # shared by every caller through the cache
    return out


# --- frequency and season ------------------------------------------------------------------


def infer_freq(df: pl.DataFrame, timestamp: str, source: str) -> str:
    """The most common step between consecutive timestamps, as a polars duration string."""
    diffs = df.select(pl.col(timestamp).diff().over("__id").dt.total_seconds().alias("d")).drop_nulls()["d"]
    diffs = diffs.filter(diffs > 0)
    if diffs.len() == 0:
        raise DataError(f"{source}: cannot infer a frequency (fewer than two distinct timestamps per series)")
    step = int(diffs.mode().sort()[0])
    days = step / 86400
    if 28 <= days <= 31:
        return "1mo"
    if 89 <= days <= 92:
        return "1q"
    if 365 <= days <= 366:
        return "1y"
    for unit in ("w", "d", "h", "m", "s"):
        if step % _UNIT_SECONDS[unit] == 0:
            return f"{step // _UNIT_SECONDS[unit]}{unit}"
    raise DataError(f"{source}: irregular time step of {step} s")


def parse_freq(freq: str) -> tuple[int, str]:
    match = re.fullmatch(r"(\d+)(mo|q|y|w|d|h|m|s)", freq)
    if not match:
        raise ConfigError(f"--data.freq {freq}: use a polars duration like 1h, 15m, 1d, 1w, 1mo")
    return int(match.group(1)), match.group(2)


def freq_seconds(freq: str) -> int | None:
    """Seconds per step, or None for calendar steps (months, quarters, years)."""
    n, unit = parse_freq(freq)
    return None if unit in _CALENDAR_UNITS else n * _UNIT_SECONDS[unit]


def season_length(freq: str) -> int:
    """Steps per natural season: a day below daily, a week for days, a year above."""
    n, unit = parse_freq(freq)
    per_year = {"mo": 12, "q": 4, "y": 1, "w": 52}
    if unit in per_year:
        return max(1, per_year[unit] // n)
    seconds = freq_seconds(freq)
    if seconds < 86400:
        return max(1, 86400 // seconds)
    return max(1, 7 // (seconds // 86400))


def future_timestamps(last: np.datetime64, freq: str, horizon: int) -> list:
    """The `horizon` timestamps after `last`, calendar-aware for months and years."""
    return shifted_timestamps(last, freq, range(1, horizon + 1))


def shifted_timestamps(last: np.datetime64, freq: str, steps) -> list:
    """`last` moved by each of `steps` (integers, negative = earlier) steps of `freq`."""
    n, unit = parse_freq(freq)
    if unit == "q":  # polars has no quarter unit
        n, unit = 3 * n, "mo"
    offsets = pl.Series([f"{k * n}{unit}" for k in steps])
    start = pl.Series(np.array([last], dtype="datetime64[us]"))[0]
    return pl.select(pl.lit(start).dt.offset_by(offsets)).to_series().to_list()


# --- splits and windows ---------------------------------------------------------------------


def split_sizes(n: int, split: str, freq: str, val_fraction: float, test_fraction: float) -> tuple[int, int, int]:
    """(train, val, test) time steps of a series of length n.

    `ett` is the ETT protocol: 12/4/4 months of 30 days (8640/2880/2880 hours for ETTh).
    """
    if split == "ett":
        seconds = freq_seconds(freq)
        if seconds is None or (30 * 86400) % seconds:
            raise ConfigError(f"--data.split ett needs a step that divides a day, not {freq}")
        month = 30 * 86400 // seconds
        sizes = (12 * month, 4 * month, 4 * month)
        if sum(sizes) > n:
            raise DataError(f"--data.split ett needs {sum(sizes)} steps, the series has {n}")
        return sizes
    if split != "fractions":
        raise ConfigError(f"--data.split {split}: choose ett or fractions")
    n_test, n_val = int(round(n * test_fraction)), int(round(n * val_fraction))
    return n - n_val - n_test, n_val, n_test


def split_ranges(n: int, split: str, freq: str, val_fraction: float, test_fraction: float) -> dict[str, tuple[int, int]]:
    """Target ranges [a, b) per split: a window's forecast must lie inside its split's range."""
    n_train, n_val, n_test = split_sizes(n, split, freq, val_fraction, test_fraction)
    return {"train": (0, n_train), "val": (n_train, n_train + n_val), "test": (n_train + n_val, n_train + n_val + n_test)}


def window_starts(target_range: tuple[int, int], look_back: int, horizon: int) -> np.ndarray:
    """Start s of every window (stride 1) whose forecast [s+L, s+L+H) lies in target_range.

    The look-back may reach into the previous split, as in the ETT protocol (border1 = a - L).
    """
    a, b = target_range
    first = max(a - look_back, 0)
    last = b - look_back - horizon
    return np.arange(first, last + 1) if last >= first else np.zeros(0, dtype=np.int64)


def windows(values: np.ndarray, starts: np.ndarray, look_back: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """(inputs (N, L, C), targets (N, H, C)) of the windows starting at `starts` (views, no copy)."""
    view = np.lib.stride_tricks.sliding_window_view(values, look_back + horizon, axis=0)  # (T', C, L+H)
    chosen = view[starts].transpose(0, 2, 1)  # (N, L+H, C)
    return chosen[:, :look_back], chosen[:, look_back:]
