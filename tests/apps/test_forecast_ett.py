"""Slow checks on the shared ETT files: a short DLinear fit must clearly beat the baselines."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deepapps.core.cli import main
from tests.helpers import shared_path

ETT = Path(__file__).resolve().parents[2] / "apps" / "finance" / "forecast" / "configs" / "ett.yaml"


@pytest.mark.shared
@pytest.mark.slow
def test_etth1_univariate_dlinear_beats_baselines(tmp_path):
    path = shared_path("data", "ett", "ETTh1.csv")
    run = tmp_path / "run"
    assert main(["forecast", "fit", "--config", str(ETT), "--data.path", str(path), "--data.target", "[OT]",
                 "--data.horizon", "96", "--trainer.max_epochs", "2", "--run_dir", str(run)]) == 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert test["windows"] == 2880 - 96 + 1
    for name in ("last_value", "seasonal_naive", "ets"):
        assert test["mse"] < test["baselines"][name]["mse"], name
    assert test["mse"] < 0.1  # published univariate ETTh1 OT @96: DLinear .056, PatchTST .055


@pytest.mark.shared
@pytest.mark.slow
def test_etth1_multivariate_rlinear_reaches_the_published_mse_at_96(tmp_path):
    """The README's ETTh1 @96 row: RLinear, 7 channels, every stride-1 test window, calibrated interval."""
    path = shared_path("data", "ett", "ETTh1.csv")
    config = ETT.parent / "etth1.yaml"
    run = tmp_path / "run"
    assert main(["forecast", "fit", "--config", str(config), "--data.path", str(path), "--run_dir", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    test = metrics["test"]
    assert test["windows"] == 2880 - 96 + 1
    assert test["mse"] < 0.375  # published: DLinear .375, PatchTST/64 .370; README run: .369
    assert test["mse"] < 0.8 * test["baselines"]["seasonal_naive"]["mse"]
    assert abs(test["coverage"] - 0.8) < 0.05 and "coverage_uncalibrated" in test
    assert abs(metrics["post_fit"]["interval_calibration"]["val_coverage_after"] - 0.8) < 0.01
