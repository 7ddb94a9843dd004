"""deepapps forecast: fit -> ONNX -> backtest -> predict on a synthetic seasonal series."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepapps.core.cli import main
from deepapps.core.runtime.session import load_model

FORECAST_TINY = Path(__file__).resolve().parents[2] / "apps" / "finance" / "forecast" / "configs" / "tiny.yaml"
PERIOD = 24


def seasonal_long(n: int = 24 * 40, noise: float = 0.3, seed: int = 0) -> pl.DataFrame:
    """Two hourly series (long format): daily sine of different level and amplitude plus noise.

    The best forecast is the sine itself (error = noise); seasonal naive doubles the noise variance.
    """
    rng = np.random.default_rng(seed)
    start = datetime(2021, 1, 1)
    stamps = [start + timedelta(hours=i) for i in range(n)]
    parts = []
    for sid, level, amp in (("a", 10.0, 2.0), ("b", -3.0, 1.0)):
        y = level + amp * np.sin(2 * np.pi * np.arange(n) / PERIOD) + noise * amp * rng.standard_normal(n)
        parts.append(pl.DataFrame({"store": sid, "ts": stamps, "sales": y}))
    return pl.concat(parts)


@pytest.fixture(scope="module")
def series_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("series") / "sales.csv"
    seasonal_long().write_csv(path)
    return path


@pytest.fixture(scope="module")
def forecast_run(tmp_path_factory, series_csv) -> Path:
    run_dir = tmp_path_factory.mktemp("forecast") / "run"
    code = main([
        "forecast", "fit", "--config", str(FORECAST_TINY), "--data.path", str(series_csv),
        "--data.timestamp", "ts", "--data.id_column", "store", "--data.look_back", "72", "--data.horizon", "12",
        "--run_dir", str(run_dir), "--trainer.max_epochs", "6", "--trainer.limit_train_batches", "12",
        "--trainer.patience", "6", "--optim.lr", "0.01",
    ])
    assert code == 0
    return run_dir


def test_fit_writes_a_complete_run(forecast_run):
    for name in ("model.onnx", "metrics.json", "model_card.md", "plots/fan_chart.png", "plots/error_by_step.png"):
        assert (forecast_run / name).is_file(), name
    meta = load_model(forecast_run / "model.onnx", "cpu", app="forecast").meta
    assert meta["task"] == "forecasting" and meta["preprocess"]["freq"] == "1h"
    assert meta["preprocess"]["targets"] == ["sales"] and meta["preprocess"]["season_length"] == PERIOD
    assert "seasonal_naive" in (forecast_run / "model_card.md").read_text()


def test_model_beats_seasonal_naive_on_known_seasonality(forecast_run):
    test = json.loads((forecast_run / "metrics.json").read_text())["test"]
    naive = test["baselines"]["seasonal_naive"]
    assert test["windows"] == 2 * (round(960 * 0.2) - 12 + 1)  # stride 1 over both series' test parts
    assert test["mse"] < 0.8 * naive["mse"], (test["mse"], naive["mse"])
    assert test["mase"] < naive["mase"]
    assert 0.5 < test["coverage"] < 0.95  # 0.1-0.9 interval, nominal 0.8
    # the closed-form linear map sees a clean seasonal signal: it beats seasonal naive too
    linear = test["baselines"]["linear_closed_form"]
    assert linear["mse"] < naive["mse"] and "ridge" in linear["method"]


def test_onnx_backtest_matches_torch(forecast_run):
    metrics = json.loads((forecast_run / "metrics.json").read_text())
    assert metrics["test"]["mse"] == pytest.approx(metrics["test_torch"]["mse"], rel=1e-3)
    assert metrics["export"]["parity_max_abs_diff"] < 1e-3


def test_evaluate_cli(forecast_run, series_csv, tmp_path, capsys):
    out = tmp_path / "val.json"
    assert main(["forecast", "evaluate", "--model", str(forecast_run / "model.onnx"), "--provider", "cpu",
                 "--split", "val", "--out", str(out)]) == 0
    assert json.loads(out.read_text())["split"] == "val"


def test_evaluate_every_split_and_all_windows_of_other_series(forecast_run, series_csv, tmp_path, capsys):
    model = str(forecast_run / "model.onnx")

    def evaluate(*args: str) -> dict:
        capsys.readouterr()
        assert main(["forecast", "evaluate", "--model", model, "--provider", "cpu", *args]) == 0
        return json.loads(capsys.readouterr().out)

    windows = {split: evaluate("--split", split) for split in ("train", "val", "test", "all")}
    assert all(m["n"] == m["windows"] and m["split"] == split for split, m in windows.items())
    assert windows["test"]["n"] == 2 * (192 - 12 + 1)  # the test parts' windows
    assert windows["all"]["n"] == 2 * (960 - 72 - 12 + 1)  # every window of both whole series
    printed = evaluate()  # the training data: its test windows
    assert list(printed)[:5] == ["split", "split_chosen", "n", "data", "fingerprint"]
    assert printed["split"] == "test" and printed["n"] == windows["test"]["n"]
    later = tmp_path / "later.csv"
    seasonal_long(n=24 * 10, seed=3).write_csv(later)
    printed = evaluate("--data.path", str(later))
    assert printed["split"] == "all" and printed["n"] == printed["windows"] == 2 * (240 - 72 - 12 + 1)
    assert printed["fingerprint"]["kind"] == "file" and "other fingerprint" in printed["split_chosen"]


def test_predict_latest_window_per_series_with_error_rows(forecast_run, tmp_path):
    history = seasonal_long(n=24 * 5)
    short = history.filter(pl.col("store") == "b").head(30).with_columns(pl.lit("short").alias("store"))
    gappy = history.filter(pl.col("store") == "a").with_columns(pl.lit("gappy").alias("store"))
    gappy = gappy.with_columns(pl.when(pl.int_range(pl.len()) == 110).then(None).otherwise(pl.col("sales")).alias("sales"))
    path = tmp_path / "history.parquet"
    pl.concat([history, short, gappy]).write_parquet(path)
    out = tmp_path / "forecast.csv"
    code = main(["forecast", "predict", "--model", str(forecast_run / "model.onnx"), "--provider", "cpu",
                 str(path), "--out", str(out), "--series", "a,b,short,gappy,nope"])
    assert code == 0
    table = pl.read_csv(out)
    ok = table.filter(pl.col("error").is_null())
    assert sorted(set(ok["series_id"])) == ["a", "b", "gappy"]
    assert ok.filter(pl.col("series_id") == "a").height == 12
    first = ok.filter((pl.col("series_id") == "a") & (pl.col("step") == 1))
    assert first["timestamp"][0].startswith(str(history["ts"].max() + timedelta(hours=1))[:13].replace(" ", "T"))
    assert (ok["p10"] <= ok["p50"]).all() and (ok["p50"] <= ok["p90"]).all()
    assert ok.filter(pl.col("series_id") == "gappy")["filled"][0] == 1
    errors = dict(table.filter(pl.col("error").is_not_null()).select("series_id", "error").iter_rows())
    assert "has 30 steps; the model needs 72" in errors["short"]
    assert "unknown series id 'nope'" in errors["nope"]


def test_predict_exits_2_when_nothing_can_be_forecast(forecast_run, tmp_path, capsys):
    path = tmp_path / "short.csv"
    seasonal_long(n=20).write_csv(path)
    assert main(["forecast", "predict", "--model", str(forecast_run / "model.onnx"), "--provider", "cpu", str(path)]) == 2
    bad = tmp_path / "bad.csv"
    bad.write_text("store,ts,sales\na,not a date,1.0\n")
    out = tmp_path / "out.csv"
    assert main(["forecast", "predict", "--model", str(forecast_run / "model.onnx"), "--provider", "cpu", str(bad),
                 "--out", str(out)]) == 2
    assert pl.read_csv(out)["error"][0] == f"{bad}: timestamp column 'ts' has unparseable value 'not a date'"
    no_column = tmp_path / "cols.csv"
    no_column.write_text("store,when,sales\na,2021-01-01,1.0\n")
    assert main(["forecast", "predict", "--model", str(forecast_run / "model.onnx"), str(no_column)]) == 2
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"deepapps: error: {no_column}: no column 'ts'")


def test_short_training_series_is_one_line_error(tmp_path, capsys):
    path = tmp_path / "tiny.csv"
    seasonal_long(n=40).write_csv(path)
    code = main(["forecast", "fit", "--config", str(FORECAST_TINY), "--data.path", str(path), "--data.timestamp", "ts",
                 "--data.id_column", "store", "--run_dir", str(tmp_path / "r")])
    assert code == 2
    assert "needs at least 40 (look_back + horizon)" in capsys.readouterr().err


def test_serving_side_is_torch_free(forecast_run, series_csv, tmp_path):
    """evaluate + predict in a fresh interpreter never import torch."""
    import subprocess
    import sys

    code = (
        "import sys; from deepapps.core.cli import main; "
        f"assert main(['forecast', 'evaluate', '--model', r'{forecast_run / 'model.onnx'}', '--provider', 'cpu']) == 0; "
        f"assert main(['forecast', 'predict', '--model', r'{forecast_run / 'model.onnx'}', '--provider', 'cpu', "
        f"r'{series_csv}', '--out', r'{tmp_path / 'f.csv'}']) == 0; "
        "assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, capture_output=True)


def test_serve_forecasts_history_windows(forecast_run):
    from tests.helpers import Server

    model = load_model(forecast_run / "model.onnx", "cpu")
    pre = model.meta["preprocess"]
    L, C, H = pre["look_back"], len(pre["targets"]), pre["horizon"]
    window = np.sin(np.arange(L * C, dtype=np.float32)).reshape(L, C)
    server = Server(forecast_run / "model.onnx")
    try:
        status, body = server.predict({"instances": [{"history": window.tolist()}, {"history": [[1.0] * C]}]})
        assert status == 200
        expected = model.run({pre_name(model): window[None]})[0]  # (H, C, Q)
        assert np.allclose(body["predictions"][0]["p50"], expected[..., pre["quantiles"].index(0.5)], atol=1e-4)
        assert np.asarray(body["predictions"][0]["p10"]).shape == (H, C)
        assert "the model needs" in body["predictions"][1]["error"]
        status, body = server.predict({"instances": [{"history": [[float("nan")] * C] * L}]})
        assert status == 400 or (status == 422 and "NaN" in body["error"])
    finally:
        server.stop()


def pre_name(model) -> str:
    return model.meta["inputs"][0]["name"]
