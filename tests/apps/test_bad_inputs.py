"""Every bad input: one line naming it, exit code 2, no traceback, nothing half-written."""

from __future__ import annotations

import subprocess
import sys

import onnx
import pytest

from deepapps.core.contract import read_metadata, set_metadata
from tests.helpers import TINY, assert_one_line_error, make_image_folder


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepapps.apps.vision", *args], capture_output=True, text=True)


def fit(data, *extra) -> subprocess.CompletedProcess:
    return run_cli("fit", "--config", str(TINY), "--data.path", str(data), *extra)


def test_missing_data_path(tmp_path):
    assert_one_line_error(fit(tmp_path / "nowhere"), str(tmp_path / "nowhere"), "no such file")


def test_empty_folder(tmp_path):
    assert_one_line_error(fit(tmp_path), str(tmp_path), "no class subfolders")


def test_dataset_with_one_class(tmp_path):
    make_image_folder(tmp_path, {"cats": (10, 20, 30)}, per_class=5)
    assert_one_line_error(fit(tmp_path), "only one class", "cats")


def test_unknown_config_key(tmp_path):
    assert_one_line_error(fit(tmp_path, "--model.backbon", "resnet18"), "--model.backbon")


def test_unknown_backbone(image_folder, tmp_path):
    assert_one_line_error(fit(image_folder, "--model.backbone", "no_such_net", "--run_dir", str(tmp_path / "r")),
                          "no_such_net")


def test_corrupt_image_in_training_data(tmp_path):
    make_image_folder(tmp_path, {"a": (200, 0, 0), "b": (0, 0, 200)}, per_class=6)
    bad = tmp_path / "a" / "a_00.png"
    bad.write_bytes(bad.read_bytes()[:60])
    result = fit(tmp_path, "--run_dir", str(tmp_path / "run"))
    assert_one_line_error(result, "a_00.png", "corrupt or truncated")


@pytest.mark.parametrize("kind", ["missing", "corrupt", "not_deepapps", "other_app"])
def test_bad_model_file(kind, tiny_run, image_folder, tmp_path):
    model = tmp_path / "model.onnx"
    if kind == "corrupt":
        model.write_bytes((tiny_run / "model.onnx").read_bytes()[:5000])
    elif kind in ("not_deepapps", "other_app"):
        proto = onnx.load(str(tiny_run / "model.onnx"))
        if kind == "other_app":
            set_metadata(proto, read_metadata(tiny_run / "model.onnx") | {"app": "nlp"})
        else:
            del proto.metadata_props[:]
        onnx.save(proto, str(model))
    result = run_cli("predict", "--model", str(model), str(image_folder))
    expected = {"missing": "no such model file", "corrupt": "not a valid ONNX model",
                "not_deepapps": "not a deepapps model", "other_app": "made by the nlp app"}[kind]
    assert_one_line_error(result, str(model), expected)


def test_predict_single_corrupt_image_fails_with_one_line(tiny_run, tmp_path):
    bad = tmp_path / "x.jpg"
    bad.write_bytes(b"\xff\xd8\xff\xe0garbage")
    out = tmp_path / "out.csv"
    result = run_cli("predict", "--model", str(tiny_run / "model.onnx"), "--out", str(out), str(bad))
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"{bad}: " in result.stderr
    assert out.is_file()  # the error row is still written, atomically


@pytest.mark.parametrize("target", ["missing_file", "empty_folder"])
def test_predict_bad_input_paths(target, tiny_run, tmp_path):
    path = tmp_path / ("nope.png" if target == "missing_file" else "empty")
    if target == "empty_folder":
        path.mkdir()
    result = run_cli("predict", "--model", str(tiny_run / "model.onnx"), str(path))
    assert_one_line_error(result, str(path))


def test_interrupted_write_leaves_no_partial_file(tmp_path):
    from deepapps.core.runtime.io import atomic_write

    target = tmp_path / "out.csv"

    def crash(tmp):
        tmp.write_text("half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(target, crash)
    assert list(tmp_path.iterdir()) == []


def test_unknown_app_and_command():
    unknown_app = subprocess.run([sys.executable, "-m", "deepapps.core.cli", "nope", "fit"], capture_output=True, text=True)
    assert_one_line_error(unknown_app, "unknown app 'nope'", "vision")
    assert_one_line_error(run_cli("train"), "unknown command 'train'")


def test_bad_values_and_config_files(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  backbon: resnet18\n")
    assert_one_line_error(run_cli("fit", "--config", str(bad_yaml)), "backbon")
    assert_one_line_error(run_cli("fit", "--config", str(tmp_path / "none.yaml")), "none.yaml")
    assert_one_line_error(run_cli("fit", "--trainer.max_epochs", "abc"), "trainer.max_epochs", "abc")


@pytest.mark.parametrize("kind", ["corrupt", "other_app"])
def test_bad_checkpoint(kind, tmp_path):
    import torch

    ckpt = tmp_path / "best.ckpt"
    if kind == "corrupt":
        ckpt.write_text("not a checkpoint\n")
    else:  # what a forecast run saves: settings the vision app does not have
        torch.save({"state_dict": {}, "hyper_parameters": {"run": {"config": {"data": {"timestamp": "date"}}}}}, ckpt)
    expected = "not a readable checkpoint" if kind == "corrupt" else "not a vision checkpoint (its config has data.timestamp)"
    out = tmp_path / "model.onnx"
    assert_one_line_error(run_cli("export", "--ckpt", str(ckpt), "--out", str(out)), str(ckpt), expected)
    assert not out.exists()
