"""Checkpoints carry their post-fit state: a moved checkpoint exports the model fit shipped; files of
deepapps 0.1 still load; a crafted checkpoint cannot run code."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from deepapps.core.cli import main
from deepapps.core.registry import get_app
from deepapps.core.runtime.session import load_model
from deepapps.core.training.checkpoints import read_checkpoint
from tests.apps.healthcare_helpers import write_npz
from tests.apps.test_forecast_e2e import FORECAST_TINY, seasonal_long

REPO = Path(__file__).resolve().parents[2]
V1 = REPO / "tests" / "data" / "v1"
HEALTHCARE_TINY = REPO / "apps" / "healthcare" / "configs" / "tiny.yaml"


def moved_export(run: Path, tmp_path: Path, app: str) -> Path:
    """Copy the best checkpoint out of its run (the run folder is then removed) and export it there."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    ckpt = shutil.copy(run / "checkpoints" / "best.ckpt", elsewhere / "model.ckpt")
    shipped = shutil.copy(run / "model.onnx", tmp_path / "shipped.onnx")
    shutil.rmtree(run)  # no metrics.json anywhere near the checkpoint
    assert main([app, "export", "--ckpt", str(ckpt), "--out", str(elsewhere / "again.onnx")]) == 0
    return Path(shipped)


def test_a_moved_healthcare_checkpoint_exports_the_calibrated_thresholded_model(tmp_path):
    npz = write_npz(tmp_path / "pneumoniamnist.npz")
    run = tmp_path / "run"
    assert main(["healthcare", "fit", "--config", str(HEALTHCARE_TINY), "--data.path", str(npz),
                 "--run_dir", str(run)]) == 0
    post_fit = json.loads((run / "metrics.json").read_text())["post_fit"]
    assert post_fit["clinical"]["threshold"]["rule"] == "youden" and post_fit["temperature"] != 1.0
    assert read_checkpoint(run / "checkpoints" / "best.ckpt").saved.post_fit == post_fit
    shipped = moved_export(run, tmp_path, "healthcare")
    fit_model = load_model(shipped, "cpu", app="healthcare")
    again = load_model(tmp_path / "elsewhere" / "again.onnx", "cpu", app="healthcare")
    assert again.contract.kind == fit_model.contract.kind  # labels, threshold, temperature, positive class
    assert again.contract.details["clinical"] == fit_model.contract.details["clinical"]
    pixels = np.random.default_rng(0).integers(0, 256, (16, 32, 32, 1), dtype=np.uint8)
    assert np.abs(again.run({"pixels": pixels}) - fit_model.run({"pixels": pixels})).max() < 1e-6


def test_a_moved_forecast_checkpoint_exports_the_calibrated_model(tmp_path):
    csv = tmp_path / "sales.csv"
    seasonal_long().write_csv(csv)
    run = tmp_path / "run"
    assert main(["forecast", "fit", "--config", str(FORECAST_TINY), "--data.path", str(csv), "--data.timestamp", "ts",
                 "--data.id_column", "store", "--data.look_back", "48", "--data.horizon", "12",
                 "--run_dir", str(run)]) == 0
    shipped = moved_export(run, tmp_path, "forecast")
    fit_model = load_model(shipped, "cpu", app="forecast")
    again = load_model(tmp_path / "elsewhere" / "again.onnx", "cpu", app="forecast")
    kind = fit_model.contract.forecast
    assert kind.interval_calibration is not None and kind.ets is not None
    assert again.contract.forecast == kind
    history = np.random.default_rng(0).normal(5, 2, (8, 48, 1)).astype(np.float32)
    assert np.abs(again.run({"history": history}) - fit_model.run({"history": history})).max() < 1e-5


@pytest.mark.parametrize("app, feeds", [
    ("forecast", lambda rng: {"history": rng.normal(340, 10, (4, 32, 1)).astype(np.float32)}),
    ("fraud", None),
])
def test_checkpoints_of_deepapps_0_1_export_the_model_they_shipped(app, feeds, tmp_path):
    run = shutil.copytree(V1 / app, tmp_path / "run")  # with its metrics.json: 0.1 kept post-fit state there
    out = tmp_path / "again.onnx"
    assert main([app, "export", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "--out", str(out)]) == 0
    old, new = load_model(run / "model.onnx", "cpu", app=app), load_model(out, "cpu", app=app)
    assert old.contract.schema_version == 1 and new.contract.schema_version == 2
    rng = np.random.default_rng(0)
    if feeds is None:  # fraud: the raw columns of the model's inputs
        spec = old.contract.preprocess
        feeds = lambda rng: {"numeric": rng.normal(0, 50, (64, len(spec["numeric"]))).astype(np.float32),  # noqa: E731
                             "categorical": rng.integers(0, 4, (64, len(spec["categorical"])))}
    x = feeds(rng)
    assert np.abs(new.run(x) - old.run(x)).max() < 1e-5
    if app == "fraud":
        assert new.contract.kind.threshold == pytest.approx(old.contract.kind.threshold)


class _Payload:
    """What a malicious pickle does: run code at load time."""

    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (Path.touch, (self.target,))


def test_a_crafted_checkpoint_is_refused_without_running_its_code(tmp_path):
    evidence = tmp_path / "pwned"
    ckpt = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {}, "hyper_parameters": {"run": {"config": {}}}, "payload": _Payload(evidence)}, ckpt)
    assert main(["vision", "export", "--ckpt", str(ckpt), "--out", str(tmp_path / "m.onnx")]) == 2
    assert not evidence.exists() and not (tmp_path / "m.onnx").exists()
    assert get_app("vision")  # the registry still works after the refusal
