"""`deepapps <app> explain` for every app (core.training.explain + Captum), on the tiny models of
`app_models`: files written, the checkpoint's prediction equal to the ONNX file's, integrated
gradients' convergence delta small, and bad inputs one line with exit 2."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepapps.core.cli import main
from deepapps.core.contract import read_metadata


@pytest.fixture(scope="module")
def inputs(app_models, image_folder, tmp_path_factory) -> dict[str, list[str]]:
    """An INPUT list per app model."""
    from deepapps.apps.finance.fraud.synth import generate
    from deepapps.apps.healthcare.synthetic import synthetic_ecg

    root = tmp_path_factory.mktemp("explain_inputs")
    rows = root / "transactions.csv"
    generate(40, 0.1, seed=7).drop("is_fraud").write_csv(rows)
    length = int(read_metadata(app_models["ecg"])["preprocess"]["length"])
    signals, targets = synthetic_ecg(4, length, 5)
    ucr = root / "beats_TEST.txt"
    ucr.write_text("".join(" ".join([f"{t + 1:.1f}", *(f"{v:.6e}" for v in s)]) + "\n" for s, t in zip(signals, targets)))
    samples = sorted((app_models["healthcare"].parent / "samples").glob("*.png"))[:2]
    return {"vision": [str(image_folder / "red")], "healthcare": [str(p) for p in samples], "ecg": [str(ucr)],
            "nlp": ["the lamp is great", "a dull and boring film"], "fraud": [str(rows)], "forecast": ["builtin:co2"]}


APP = {"ecg": "healthcare"}
# (method, files per explained input, whether the method has a convergence delta)
CASES = [
    ("vision", "gradcam", 2, False), ("vision", "integrated_gradients", 2, True), ("vision", "occlusion", 2, False),
    ("vision", "guided_gradcam", 2, False), ("healthcare", "gradcam", 2, False), ("ecg", "integrated_gradients", 2, True),
    ("nlp", "integrated_gradients", 2, True), ("fraud", "feature_ablation", 1, False),
    ("fraud", "integrated_gradients", 1, True), ("forecast", "integrated_gradients", 2, True),
]


@pytest.mark.parametrize("name, method, n_files, has_delta", CASES)
def test_explain_writes_files_and_agrees_with_onnx(app_models, inputs, tmp_path, capsys, name, method, n_files,
                                                   has_delta):
    out = tmp_path / "why"
    extra = ["--rows", "10", "--plot-rows", "10"] if name == "fraud" else []
    assert main([APP.get(name, name), "explain", "--model", str(app_models[name]), *inputs[name], "--out", str(out),
                 "--method", method, *extra]) == 0
    assert "explained" in capsys.readouterr().err
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == method and manifest["baseline"]
    assert manifest["checkpoint"]["path"].endswith("checkpoints/best.ckpt") and len(manifest["checkpoint"]["sha256"]) == 64
    assert manifest["model"]["path"] == str(app_models[name]) and len(manifest["model"]["sha256"]) == 64
    records = manifest["inputs"]
    assert records and manifest["failed"] == 0 and all(r["error"] is None for r in records)
    assert manifest["all_agree_with_onnx"] is True and all(r["agrees_with_onnx"] is True for r in records)
    assert all(r["predicted"] is not None and r["target"] for r in records)
    for r in records:
        assert len(r["files"]) == n_files and all((out / f).is_file() for f in r["files"])
    if has_delta:
        assert all(r["delta"] is not None for r in records)
        assert manifest["max_abs_delta"] < 0.05 * max(1.0, _output_scale(name, out))
    else:
        assert manifest["max_abs_delta"] is None
    if name == "fraud":
        assert (out / "global_importance.png").is_file() and pl.read_csv(out / "attributions.csv").height == 10
    if name in ("vision", "healthcare"):
        side = int(read_metadata(app_models[name])["preprocess"]["size"])
        assert np.load(out / records[0]["files"][1]).shape == (side, side)


def _output_scale(name: str, out: Path) -> float:
    """The size of what is explained: the forecast's level (raw scale), else logits (about 1)."""
    if name != "forecast":
        return 1.0
    return max(abs(float(r["predicted"])) for r in json.loads((out / "manifest.json").read_text())["inputs"])


def test_ckpt_alone_explains_without_the_onnx_check(app_models, inputs, tmp_path):
    ckpt = app_models["vision"].parent / "checkpoints" / "best.ckpt"
    assert main(["vision", "explain", "--ckpt", str(ckpt), *inputs["vision"], "--out", str(tmp_path / "o")]) == 0
    manifest = json.loads((tmp_path / "o" / "manifest.json").read_text())
    assert manifest["model"] is None and manifest["all_agree_with_onnx"] is None and manifest["method"] == "gradcam"
    assert all(r["agrees_with_onnx"] is None for r in manifest["inputs"])


def _one_line(capsys) -> str:
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deepapps: error:")]
    assert len(errors) == 1, errors
    return errors[0]


@pytest.mark.parametrize("name", ["vision", "healthcare", "ecg", "nlp", "fraud", "forecast"])
def test_bad_inputs_are_one_line_and_exit_2(app_models, inputs, tmp_path, capsys, name):
    app, model = APP.get(name, name), str(app_models[name])
    out = ["--out", str(tmp_path / "o")]
    assert main([app, "explain", "--ckpt", str(tmp_path / "nope.ckpt"), *inputs[name], *out]) == 2
    assert "no such checkpoint" in _one_line(capsys)
    assert main([app, "explain", "--model", model, *inputs[name], *out, "--method", "magic"]) == 2
    assert "--method magic: unknown" in _one_line(capsys)
    lone = tmp_path / "lone" / "model.onnx"
    lone.parent.mkdir()
    lone.write_bytes(Path(model).read_bytes())
    assert main([app, "explain", "--model", str(lone), *inputs[name], *out]) == 2
    assert "checkpoints/best.ckpt" in _one_line(capsys)
    missing = str(tmp_path / ("missing.txt" if name in ("ecg", "nlp") else "missing.csv"))
    assert main([app, "explain", "--model", model, missing, *out]) == 2
    assert "missing" in capsys.readouterr().err
