"""int8 copies for every app (core.training.quantize): written with the contract and a measured
metric when they keep the fp32 file's validation score, refused in one line when they do not."""

from __future__ import annotations

import json

import numpy as np
import pytest
from deepapps.core.cli import main
from deepapps.core.contract import read_metadata
from deepapps.core.registry import get_app
from deepapps.core.runtime.session import load_model
from deepapps.core.training.quantize import DYNAMIC, STATIC, ArrayReader, Int8Method

FRAUD_TINY = get_app("fraud").configs_dir / "tiny.yaml"
FORECAST_TINY = get_app("forecast").configs_dir / "tiny.yaml"


def test_every_app_says_its_int8_method():
    methods = {name: get_app(name).load_training().int8_method(get_app(name).load_config_class()())
               for name in ("vision", "healthcare", "nlp", "fraud", "forecast")}
    assert methods["vision"].method == methods["healthcare"].method == STATIC
    assert methods["nlp"].method == DYNAMIC
    for name in ("fraud", "forecast"):  # measured: int8 does not pay; the reason carries the figure
        assert methods[name].method is None and "ms" in methods[name].reason, name


def test_method_and_reader_checks():
    with pytest.raises(ValueError):
        Int8Method("fp8", "no")
    with pytest.raises(ValueError):
        Int8Method(STATIC, "x", calibration="mse")
    reader = ArrayReader(["pixels"], [np.zeros((40, 2, 2, 3), np.uint8)], batch=16)
    sizes = []
    while (feeds := reader.get_next()) is not None:
        sizes.append(len(feeds["pixels"]))
    assert sizes == [16, 16, 8]


def test_vision_export_int8_writes_the_copy_with_its_contract_and_metric(tiny_run, tmp_path, capsys):
    ckpt = str(tiny_run / "checkpoints" / "best.ckpt")
    out = tmp_path / "m.onnx"
    assert main(["vision", "export", "--ckpt", ckpt, "--out", str(out), "--int8", "--int8_tolerance", "100"]) == 0
    assert capsys.readouterr().out.strip() == str(out)  # the calibrators' prints do not reach stdout
    int8_path = tmp_path / "m.int8.onnx"
    assert int8_path.is_file()
    fp32, int8 = read_metadata(out), read_metadata(int8_path)
    assert int8["labels"] == fp32["labels"] and int8["preprocess"] == fp32["preprocess"]
    assert int8["export"]["precision"].startswith("int8 (static QDQ")
    record = int8["export"]["int8"]
    assert record["metric"] == "macro_f1" and record["method"] == "static"
    assert 0.0 <= record["int8"] <= 1.0 and 0.0 <= record["fp32"] <= 1.0
    assert record["loss_points"] == pytest.approx(100 * (record["fp32"] - record["int8"]), abs=1e-3)
    assert 0 < record["calibration_inputs"] <= 256
    ops = {node.op_type for node in __import__("onnx").load(str(int8_path)).graph.node}
    assert {"QuantizeLinear", "DequantizeLinear"} <= ops
    # predict and evaluate read it like any deepapps model
    model = load_model(int8_path, "cpu", app="vision")
    probs = model.run({"pixels": np.zeros((2, *model.contract.inputs[0].shape[1:]), np.uint8)})
    assert probs.shape == (2, 3) and np.allclose(probs.sum(1), 1, atol=1e-3)


def test_int8_beyond_the_tolerance_is_refused_in_one_line(tiny_run, tmp_path, capsys):
    ckpt = str(tiny_run / "checkpoints" / "best.ckpt")
    out = tmp_path / "m.onnx"
    capsys.readouterr()
    assert main(["vision", "export", "--ckpt", ckpt, "--out", str(out), "--int8", "--int8_tolerance", "-1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "m.int8.onnx refused" in err[0] and "(int8) vs" in err[0] and "(fp32)" in err[0]
    assert out.is_file() and not (tmp_path / "m.int8.onnx").exists()


@pytest.mark.parametrize("app, tiny", [("fraud", FRAUD_TINY), ("forecast", FORECAST_TINY)])
def test_tabular_and_forecast_int8_is_refused_before_training(app, tiny, tmp_path, capsys):
    capsys.readouterr()
    assert main([app, "fit", "--config", str(tiny), "--run_dir", str(tmp_path / "run"), "--export_int8"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("deepapps: error: --export_int8:") and "ms" in err[0]
    assert not (tmp_path / "run").exists()


def test_fit_export_int8_records_the_measurement(tmp_path, image_folder):
    from tests.helpers import TINY

    run_dir = tmp_path / "run"
    assert main(["vision", "fit", "--config", str(TINY), "--data.path", str(image_folder), "--run_dir", str(run_dir),
                 "--trainer.max_epochs", "1", "--data.batch_size", "8", "--export_int8",
                 "--int8_tolerance", "100"]) == 0
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["int8"]["file"] == "model.int8.onnx" and (run_dir / "model.int8.onnx").is_file()
    assert "## int8 quantization" in (run_dir / "model_card.md").read_text()
