"""deepapps forecast with past-observed covariates, calendar features and interval calibration."""

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
LAG = 12


def leading_indicator(n: int = 24 * 50, seed: int = 0) -> pl.DataFrame:
    """Hourly `sales` that follow an AR(1) `signal` with a lag of 12 hours, plus a little noise.

    With a horizon of 12, every future value is determined by signal values already observed,
    so a model that reads the covariate can forecast what no univariate method can.
    """
    rng = np.random.default_rng(seed)
    signal = np.zeros(n + LAG)
    for t in range(1, n + LAG):
        signal[t] = 0.8 * signal[t - 1] + rng.standard_normal()
    sales = 50 + 3 * signal[:n] + 0.1 * rng.standard_normal(n)
    stamps = [datetime(2022, 1, 1) + timedelta(hours=i) for i in range(n)]
    return pl.DataFrame({"ts": stamps, "sales": sales, "signal": signal[LAG:]})


@pytest.fixture(scope="module")
def covariate_run(tmp_path_factory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("cov")
    path = folder / "sales.csv"
    leading_indicator().write_csv(path)
    run_dir = folder / "run"
    assert main([
        "forecast", "fit", "--config", str(FORECAST_TINY), "--data.path", str(path), "--data.timestamp", "ts",
        "--data.target", "[sales]", "--data.covariates", "[signal]", "--data.calendar", "[hour, weekday]",
        "--data.look_back", "48", "--data.horizon", str(LAG), "--model.name", "rlinear", "--model.mse_weight", "1.0",
        "--trainer.max_epochs", "8", "--trainer.limit_train_batches", "20", "--trainer.limit_val_batches", "1.0",
        "--trainer.patience", "8", "--optim.lr", "0.02", "--run_dir", str(run_dir),
    ]) == 0
    return run_dir, path


def test_covariates_are_graph_inputs_and_beat_univariate_baselines(covariate_run):
    run_dir, _ = covariate_run
    meta = load_model(run_dir / "model.onnx", "cpu", app="forecast").meta
    assert [i["name"] for i in meta["inputs"]] == ["history", "calendar", "covariates"]
    assert meta["inputs"][1]["features"] == ["hour", "weekday"] and meta["inputs"][1]["shape"] == ["batch", 60, 2]
    assert meta["inputs"][2]["columns"] == ["signal"] and meta["preprocess"]["covariates"] == ["signal"]
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    best_baseline = min(b["mse"] for b in test["baselines"].values())
    assert test["mse"] < 0.2 * best_baseline, (test["mse"], best_baseline)  # univariate optimum: ~0.6


def test_calibration_is_fitted_on_validation_and_reported(covariate_run):
    run_dir, _ = covariate_run
    metrics = json.loads((run_dir / "metrics.json").read_text())
    calibration = metrics["post_fit"]["interval_calibration"]
    assert calibration["split"] == "val" and np.asarray(calibration["scale"]).shape == (LAG, 3)
    assert abs(calibration["val_coverage_after"] - 0.8) < 0.03  # fitted there: nominal by construction
    test = metrics["test"]
    narrower = np.mean(calibration["scale"]) < 1  # the direction fitted on validation shows on test
    assert (test["interval_width"] < test["interval_width_uncalibrated"]) == narrower
    # the uncalibrated coverage recovered from the ONNX outputs equals the torch model's
    assert test["coverage_uncalibrated"] == pytest.approx(metrics["test_torch"]["coverage"], abs=2e-3)


def test_export_from_checkpoint_keeps_the_calibration(covariate_run, tmp_path):
    run_dir, path = covariate_run
    out = tmp_path / "again.onnx"
    assert main(["forecast", "export", "--ckpt", str(run_dir / "checkpoints" / "best.ckpt"), "--out", str(out)]) == 0
    first, again = load_model(run_dir / "model.onnx", "cpu"), load_model(out, "cpu")
    L, H = 48, LAG
    feeds = {"history": np.full((1, L, 1), 50.0, np.float32) + np.arange(L, dtype=np.float32)[None, :, None] / 10,
             "calendar": np.zeros((1, L + H, 2), np.float32), "covariates": np.sin(np.arange(L, dtype=np.float32))[None, :, None]}
    np.testing.assert_allclose(first.run(feeds), again.run(feeds), rtol=1e-5, atol=1e-5)


def test_predict_derives_calendar_and_reads_covariates(covariate_run, tmp_path):
    run_dir, _ = covariate_run
    history = leading_indicator(n=24 * 4, seed=1)
    path = tmp_path / "history.csv"
    history.write_csv(path)
    out = tmp_path / "forecast.csv"
    assert main(["forecast", "predict", "--model", str(run_dir / "model.onnx"), "--provider", "cpu", str(path),
                 "--out", str(out)]) == 0
    table = pl.read_csv(out)
    assert table.height == LAG and table["error"].is_null().all()
    # the model reads the leading signal: its forecast follows 50 + 3 * signal (known 12 h ahead)
    expected = 50 + 3 * history["signal"].to_numpy()[-LAG:]
    assert np.corrcoef(table["p50"].to_numpy(), expected)[0, 1] > 0.9
    no_cov = tmp_path / "no_cov.csv"
    history.drop("signal").write_csv(no_cov)
    assert main(["forecast", "predict", "--model", str(run_dir / "model.onnx"), str(no_cov)]) == 2


def test_serving_needs_timestamp_and_covariates(covariate_run):
    from deepapps.core.errors import DataError
    from deepapps.apps.finance.forecast.runtime import ForecastServing

    decode_item, run_items = ForecastServing().decode_item, ForecastServing().run_items

    run_dir, _ = covariate_run
    model = load_model(run_dir / "model.onnx", "cpu")
    window = [[50.0]] * 48
    item = decode_item(model, {"history": window, "last_timestamp": "2022-01-03T23:00:00", "covariates": [[0.0]] * 48})
    assert item[2]["calendar"].shape == (60, 2)
    assert item[2]["calendar"][0, 0] == pytest.approx(0 / 23 - 0.5)  # 47 h before 23:00 is 00:00
    result = run_items(model, [item])[0]
    assert np.asarray(result["p50"]).shape == (LAG, 1) and result["timestamps"][0].startswith("2022-01-04 00:00")
    with pytest.raises(DataError, match="last_timestamp: required"):
        decode_item(model, {"history": window, "covariates": [[0.0]] * 48})
    with pytest.raises(DataError, match="covariates: need 48 rows x 1 values"):
        decode_item(model, {"history": window, "last_timestamp": "2022-01-03T23:00:00"})
