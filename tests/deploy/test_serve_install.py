"""The serving side proven by installation: a fresh venv with `pip install --no-deps .` and the serve
set only (deploy/requirements-serve.txt) has no torch, and runs predict, evaluate and serve of every
app's model, and `deepapps import`, on small models the full install made.

Slow (a venv and a few tiny fits): `python -m pytest -m slow tests/deploy/test_serve_install.py`;
.ci/run runs it after the default suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest

from deepapps.core.cli import main
from tests.apps.healthcare_helpers import write_npz
from tests.apps.nlp_helpers import make_tiny_bert
from tests.apps.test_forecast_e2e import FORECAST_TINY, seasonal_long
from tests.core.test_importer import colour_classifier
from tests.helpers import REPO, TINY, Server

pytestmark = pytest.mark.slow
CONFIGS = REPO / "apps"


@pytest.fixture(scope="module")
def serve_venv(tmp_path_factory) -> Path:
    """bin/ of a fresh venv holding deepapps and the serve set, nothing else."""
    venv = tmp_path_factory.mktemp("serve") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = [str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--no-deps", str(REPO)], check=True)
    subprocess.run([*pip, "-r", str(REPO / "deploy" / "requirements-serve.txt")], check=True)
    return venv / "bin"


@pytest.fixture(scope="module")
def models(tmp_path_factory, image_folder) -> dict[str, tuple[Path, str, list[str]]]:
    """app -> (model.onnx made by the full install, evaluate data, predict inputs)."""
    root = tmp_path_factory.mktemp("models")
    out = {}

    def fit(app: str, name: str, *args: str) -> Path:
        run = root / name
        assert main([app, "fit", "--run_dir", str(run), *args]) == 0, name
        return run / "model.onnx"

    out["vision"] = (fit("vision", "vision", "--config", str(TINY), "--data.path", str(image_folder)),
                     str(image_folder), [str(image_folder)])
    npz = write_npz(root / "pneumoniamnist.npz")
    out["healthcare"] = (fit("healthcare", "xray", "--config", str(CONFIGS / "healthcare/configs/tiny.yaml"),
                             "--data.path", str(npz)), str(npz), [f"{npz}:test"])
    out["ecg"] = (fit("healthcare", "ecg", "--config", str(CONFIGS / "healthcare/configs/ecg_tiny.yaml")),
                  "builtin:synthetic-ecg", [str(root / "ecg" / "samples" / "test_signals.csv")])
    bert = make_tiny_bert(root / "bert")
    texts = root / "texts.txt"
    texts.write_text("great product, works well\nterrible, broke after a day\n")
    out["nlp"] = (fit("nlp", "nlp", "--model.pretrained", str(bert), "--trainer.max_epochs", "1",
                      "--export_int8", "false"), "builtin:reviews", [str(texts)])
    out["fraud"] = (fit("fraud", "fraud", "--config", str(CONFIGS / "finance/fraud/configs/tiny.yaml"),
                        "--baselines", "false"), "builtin:transactions", [])
    series = root / "sales.csv"
    seasonal_long().write_csv(series)
    out["forecast"] = (fit("forecast", "forecast", "--config", str(FORECAST_TINY), "--data.path", str(series),
                           "--data.timestamp", "ts", "--data.id_column", "store", "--data.look_back", "48",
                           "--data.horizon", "12"), str(series), [str(series)])
    return out


def run(bin_dir: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(bin_dir / "deepapps"), *args], capture_output=True, text=True, timeout=300)


def test_the_serve_set_has_no_torch(serve_venv):
    python = str(serve_venv / "python")
    for heavy in ("torch", "pytorch_lightning", "timm", "transformers", "statsmodels"):
        assert subprocess.run([python, "-c", f"import {heavy}"], capture_output=True).returncode != 0, heavy


@pytest.mark.parametrize("name", ["vision", "healthcare", "ecg", "nlp", "fraud", "forecast"])
def test_predict_and_evaluate_every_app_without_torch(serve_venv, models, name, tmp_path):
    app = "healthcare" if name == "ecg" else name
    model, data, inputs = models[name]
    evaluation = run(serve_venv, app, "evaluate", "--model", str(model), "--data.path", data, "--provider", "cpu")
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout)
    assert metrics["split"] == "test" and {"accuracy", "auprc", "mse"} & set(metrics)
    if name == "fraud":  # a table of transactions made by the generator the model trained on
        from deepapps.apps.finance.fraud.synth import generate

        inputs = [str(tmp_path / "tx.parquet")]
        generate(500, 0.02, seed=7).drop("is_fraud").write_parquet(inputs[0])
    out = tmp_path / "predictions.csv"
    prediction = run(serve_venv, app, "predict", "--model", str(model), "--out", str(out), *inputs)
    assert prediction.returncode == 0, prediction.stderr
    assert out.is_file() and out.read_text().count("\n") > 1


def test_serve_answers_without_torch(serve_venv, models):
    import base64
    import io

    from PIL import Image

    buffer = io.BytesIO()
    Image.fromarray(np.full((24, 24, 3), (40, 60, 200), np.uint8)).save(buffer, format="PNG")
    server = Server(models["vision"][0], python=str(serve_venv / "python"))
    try:
        status, body = server.predict({"instances": [{"image": base64.b64encode(buffer.getvalue()).decode()}]})
        assert status == 200 and body["predictions"][0]["label"] in ("blue", "green", "red")
    finally:
        server.stop()


def test_deepapps_import_without_torch(serve_venv, image_folder, tmp_path):
    foreign = tmp_path / "foreign.onnx"
    onnx.save(colour_classifier("NCHW"), str(foreign))
    result = run(serve_venv, "import", "--app", "vision", "--onnx", str(foreign), "--labels", "blue,green,red",
                 "--size", "16", "--out", str(tmp_path / "wrapped.onnx"))
    assert result.returncode == 0, result.stderr
    scored = run(serve_venv, "vision", "predict", "--model", str(tmp_path / "wrapped.onnx"), str(image_folder / "red"))
    assert scored.returncode == 0 and scored.stdout.count(",red,") == 16, scored.stderr
