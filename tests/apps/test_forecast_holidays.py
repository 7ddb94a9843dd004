"""The `holiday` calendar feature: a daily series that dips on US public holidays."""

from __future__ import annotations

import json
from datetime import date, timedelta
from pathlib import Path

import holidays
import numpy as np
import polars as pl
import pytest

from deepapps.core.cli import main
from deepapps.core.runtime.session import load_model

FORECAST_TINY = Path(__file__).resolve().parents[2] / "apps" / "finance" / "forecast" / "configs" / "tiny.yaml"
DIP = 6.0


def holiday_dips(start: date = date(2008, 1, 1), end: date = date(2024, 12, 20), seed: int = 0) -> pl.DataFrame:
    """Daily `visits`: a weekly cycle, a little noise, and DIP fewer on every US public holiday,
    which no look-back can anticipate (the holidays move with the year and the weekday)."""
    rng = np.random.default_rng(seed)
    days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
    us = holidays.country_holidays("US", years=range(start.year, end.year + 1))
    weekly = np.array([0.0, 0.5, 1.0, 1.0, 1.5, -1.0, -2.0])
    visits = [20 + weekly[d.weekday()] - DIP * (d in us) + 0.3 * rng.standard_normal() for d in days]
    return pl.DataFrame({"day": days, "visits": visits})


def fit(path: Path, run_dir: Path, *calendar_args: str) -> dict:
    assert main([
        "forecast", "fit", "--config", str(FORECAST_TINY), "--data.path", str(path), "--data.timestamp", "day",
        "--data.look_back", "28", "--data.horizon", "7", "--model.name", "rlinear", "--model.mse_weight", "1.0",
        "--trainer.max_epochs", "6", "--trainer.limit_train_batches", "40", "--trainer.limit_val_batches", "1.0",
        "--trainer.patience", "6", "--optim.lr", "0.02", *calendar_args, "--run_dir", str(run_dir),
    ]) == 0
    return json.loads((run_dir / "metrics.json").read_text())["test"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> tuple[Path, Path, dict, dict]:
    folder = tmp_path_factory.mktemp("holidays")
    path = folder / "visits.csv"
    holiday_dips().write_csv(path)
    with_holidays = fit(path, folder / "holiday", "--data.calendar", "[holiday]", "--data.holidays", "US")
    without = fit(path, folder / "plain")
    return folder, path, with_holidays, without


def test_holiday_feature_is_a_graph_input_and_explains_the_dips(runs):
    folder, _, with_holidays, without = runs
    meta = load_model(folder / "holiday" / "model.onnx", "cpu", app="forecast").meta
    assert meta["inputs"][1]["features"] == ["holiday"] and meta["inputs"][1]["holidays"] == "US"
    assert meta["preprocess"]["holidays"] == "US"
    # the dips are ~3% of days but most of the error of a model that cannot see them
    assert with_holidays["mse"] < 0.5 * without["mse"], (with_holidays["mse"], without["mse"])


def test_predict_puts_the_dip_on_christmas(runs, tmp_path):
    folder, path, _, _ = runs
    out = tmp_path / "forecast.csv"
    assert main(["forecast", "predict", "--model", str(folder / "holiday" / "model.onnx"), str(path),
                 "--out", str(out)]) == 0  # history ends 2024-12-20: the horizon holds Christmas
    p50 = {stamp[:10]: value for stamp, value in pl.read_csv(out).select("timestamp", "p50").iter_rows()}
    assert len(p50) == 7
    # a normal Wednesday is ~21; every other day of the week is well above 20 - DIP / 2
    assert p50["2024-12-25"] < 21 - DIP / 2, p50
    assert all(v > 20 - DIP / 2 for day, v in p50.items() if day != "2024-12-25"), p50
