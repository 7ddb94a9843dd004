"""Shared fixtures: synthetic images and a tiny fitted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepapps.core.cli import main
from tests.helpers import COLOURS, TINY, make_image_folder


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), COLOURS)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, image_folder) -> Path:
    """A tiny vision fit on the synthetic folder, done once for the session."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    code = main([
        "vision", "fit", "--config", str(TINY), "--data.path", str(image_folder),
        "--run_dir", str(run_dir), "--trainer.max_epochs", "6", "--trainer.patience", "6", "--data.batch_size", "8",
    ])
    assert code == 0
    return run_dir


@pytest.fixture(scope="session")
def app_models(tmp_path_factory, tiny_run) -> dict[str, Path]:
    """A tiny fitted model of every app (and the ECG kind of healthcare), made once for the session:
    name -> model.onnx. The bad-input matrix and the server attack tests use them."""
    from tests.apps.nlp_helpers import make_tiny_bert

    root = tmp_path_factory.mktemp("app_models")
    configs = Path(__file__).resolve().parents[1] / "apps"

    def fit(app: str, name: str, *args: str) -> Path:
        assert main([app, "fit", "--run_dir", str(root / name), *args]) == 0, name
        return root / name / "model.onnx"

    bert = make_tiny_bert(root / "bert")
    return {
        "vision": tiny_run / "model.onnx",
        "healthcare": fit("healthcare", "healthcare", "--config", str(configs / "healthcare/configs/tiny.yaml")),
        "ecg": fit("healthcare", "ecg", "--config", str(configs / "healthcare/configs/ecg_tiny.yaml")),
        "nlp": fit("nlp", "nlp", "--config", str(configs / "nlp/configs/tiny.yaml"), "--model.pretrained", str(bert),
                   "--export_int8", "false", "--trainer.max_epochs", "1"),
        "fraud": fit("fraud", "fraud", "--config", str(configs / "finance/fraud/configs/tiny.yaml"), "--baselines", "false"),
        "forecast": fit("forecast", "forecast", "--config", str(configs / "finance/forecast/configs/tiny.yaml"),
                        "--data.calendar", "[hour, weekday]"),
    }
