"""deepapps.apps.finance.forecast.series: frequency, gap filling, the ETT split borders and windows."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import polars as pl
import pytest

from deepapps.core.errors import ConfigError, DataError
from deepapps.apps.finance.forecast.series import (
    calendar_features, fill_missing, future_timestamps, prepare_frame, season_length, split_ranges, split_sizes, window_starts, windows,
)


def _frame(n: int, step: timedelta, start=datetime(2020, 1, 1)) -> pl.DataFrame:
    return pl.DataFrame({"t": [start + i * step for i in range(n)], "y": np.arange(n, dtype=float)})


def test_ett_borders_follow_the_protocol():
    # ETTh: 12/4/4 months of 30 days = 8640/2880/2880 hours; ETTm: four times as many steps
    assert split_sizes(17420, "ett", "1h", 0, 0) == (8640, 2880, 2880)
    assert split_sizes(69680, "ett", "15m", 0, 0) == (34560, 11520, 11520)
    ranges = split_ranges(17420, "ett", "1h", 0, 0)
    test = window_starts(ranges["test"], 336, 96)
    # Informer/DLinear/PatchTST: border1 = 12*30*24 + 4*30*24 - seq_len, len = border2 - border1 - L - H + 1
    assert test[0] == 8640 + 2880 - 336 and len(test) == 2880 - 96 + 1
    assert test[-1] + 336 + 96 == 14400
    train = window_starts(ranges["train"], 336, 96)
    assert train[0] == 0 and train[-1] + 336 + 96 == 8640


def test_windows_slice_history_and_future():
    values = np.arange(20, dtype=np.float32)[:, None].repeat(2, axis=1)  # (20, 2)
    x, y = windows(values, np.array([0, 5]), 4, 3)
    assert x.shape == (2, 4, 2) and y.shape == (2, 3, 2)
    assert x[1, :, 0].tolist() == [5, 6, 7, 8] and y[1, :, 1].tolist() == [9, 10, 11]


def test_frequency_gaps_duplicates_and_order_are_handled():
    df = _frame(48, timedelta(hours=1))
    df = df.filter(~pl.col("y").is_in([10.0, 11.0]))  # a 2-step gap
    df = pl.concat([df, df.head(1)]).reverse()  # a duplicate, reversed order
    table = prepare_frame(df, "x.csv", "t", ["y"], None, None, "linear")
    series = table.series[0]
    assert table.freq == "1h" and len(series.values) == 48 and series.filled == 2
    np.testing.assert_allclose(series.values[:, 0], np.arange(48))  # linear fill is exact on a line
    assert any("duplicate" in n for n in table.notes) and any("sorted" in n for n in table.notes)
    with pytest.raises(DataError, match="missing values and --data.fill is none"):
        prepare_frame(df, "x.csv", "t", ["y"], None, None, "none")


@pytest.mark.parametrize(("step", "freq", "season"), [
    (timedelta(minutes=15), "15m", 96), (timedelta(hours=1), "1h", 24), (timedelta(days=1), "1d", 7),
    (timedelta(weeks=1), "1w", 52),
])
def test_infer_frequency_and_season(step, freq, season):
    table = prepare_frame(_frame(30, step), "x", "t", None, None, None, "linear")
    assert table.freq == freq and season_length(freq) == season


def test_monthly_series_and_calendar_timestamps():
    months = pl.DataFrame({"t": pl.date_range(datetime(2020, 1, 31), datetime(2021, 12, 31), "1mo", eager=True),
                           "y": np.arange(24.0)})
    table = prepare_frame(months, "m", "t", None, None, None, "linear")
    assert table.freq == "1mo" and season_length("1mo") == 12
    nxt = future_timestamps(table.series[0].timestamps[-1], "1mo", 2)
    assert [d.month for d in nxt] == [1, 2]


def test_bad_timestamps_and_non_numeric_targets_are_one_line_errors():
    bad_time = pl.DataFrame({"t": ["2020-01-01", "yesterday"], "y": [1.0, 2.0]})
    with pytest.raises(DataError, match="unparseable value 'yesterday'"):
        prepare_frame(bad_time, "h.csv", "t", ["y"], None, None, "linear")
    text = pl.DataFrame({"t": ["2020-01-01", "2020-01-02"], "y": ["1.0", "abc"]})
    with pytest.raises(DataError, match="'y' is not numeric"):
        prepare_frame(text, "h.csv", "t", ["y"], None, None, "linear")


def test_fill_methods():
    v = np.array([[np.nan], [1.0], [np.nan], [3.0]])
    assert fill_missing(v, "linear")[:, 0].tolist() == [1.0, 1.0, 2.0, 3.0]
    assert fill_missing(v, "ffill")[:, 0].tolist() == [1.0, 1.0, 1.0, 3.0]
    assert fill_missing(v, "zero")[:, 0].tolist() == [0.0, 1.0, 0.0, 3.0]


@pytest.mark.shared
def test_ett_file_split_and_statistics():
    from deepapps.apps.finance.forecast.data import SeriesDataModule
    from deepapps.apps.finance.forecast.config import SeriesDataConfig
    from tests.helpers import shared_path

    path = shared_path("data", "ett", "ETTh1.csv")
    dm = SeriesDataModule(SeriesDataConfig(path=str(path), timestamp="date", look_back=336, horizon=96, split="ett"))
    assert dm.targets == ["HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"] and dm.table.freq == "1h"
    assert dm.summary()["sizes"] == {"train": 8640 - 336 - 96 + 1, "val": 2880 - 96 + 1, "test": 2880 - 96 + 1}
    raw = pl.read_csv(path)
    train = raw.head(8640).select(dm.targets).to_numpy()  # the protocol's scaler: train rows only
    np.testing.assert_allclose(dm.mean, train.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(dm.std, train.std(axis=0), rtol=1e-4)


def test_calendar_features_known_dates():
    stamps = np.array(["2024-01-01T00:00", "2024-03-15T13:45", "2023-12-31T23:59"], dtype="datetime64[us]")
    got = calendar_features(stamps, ["minute", "hour", "weekday", "day", "month", "dayofyear"]) + 0.5
    # 2024-01-01 a Monday (0), 2024-03-15 a Friday (4), 2023-12-31 a Sunday (6), day 365 of the year
    expected = [[0, 0, 0, 0, 0, 0], [45 / 59, 13 / 23, 4 / 6, 14 / 30, 2 / 11, 74 / 365], [1, 1, 1, 1, 1, 364 / 365]]
    np.testing.assert_allclose(got, expected, atol=1e-6)
    assert calendar_features(stamps, []).shape == (3, 0)
    with pytest.raises(ConfigError, match="--data.calendar holiday"):
        calendar_features(stamps, ["hour", "holiday"])


def test_holiday_feature_marks_the_region_public_holidays():
    stamps = np.array(["2024-07-04T09:00", "2024-07-05T09:00", "2024-11-29T00:00", "2025-01-01T23:00"],
                      dtype="datetime64[us]")
    us = calendar_features(stamps, ["hour", "holiday"], "US")[:, 1] + 0.5
    np.testing.assert_array_equal(us, [1, 0, 0, 1])  # Independence Day, a Friday, the day after Thanksgiving, New Year
    np.testing.assert_array_equal(calendar_features(stamps, ["holiday"], "US-CA")[:, 0] + 0.5, [1, 0, 1, 1])
    with pytest.raises(ConfigError, match="--data.holidays XX"):
        calendar_features(stamps, ["holiday"], "XX")


def test_covariate_columns_are_filled_and_kept_apart_from_targets():
    df = _frame(48, timedelta(hours=1)).rename({"t": "ts"}).with_columns(
        pl.Series("temp", [float(i) if i != 5 else None for i in range(48)]), pl.Series("load", np.ones(48) * 2.0)
    )
    table = prepare_frame(df, "mem", "ts", None, None, None, "linear", covariates=["temp"])
    assert table.targets == ["y", "load"] and table.covariates == ["temp"]  # not a target
    series = table.series[0]
    assert series.values.shape == (48, 2) and series.covariates.shape == (48, 1)
    assert series.covariates[5, 0] == pytest.approx(5.0)  # filled linearly, counted
    assert series.filled == 1
    with pytest.raises(ConfigError, match="also a target"):
        prepare_frame(df, "mem", "ts", ["y", "temp"], None, None, "linear", covariates=["temp"])
    with pytest.raises(DataError, match="no column 'wind'"):
        prepare_frame(df, "mem", "ts", None, None, None, "linear", covariates=["wind"])
