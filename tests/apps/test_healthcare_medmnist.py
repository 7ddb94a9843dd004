"""The shared MedMNIST files (../shared/data/medmnist; skipped when absent)."""

from __future__ import annotations

import json

import pytest

from deepapps.apps.healthcare.data import open_medical_source
from deepapps.core.cli import main
from tests.helpers import shared_path


@pytest.mark.shared
@pytest.mark.parametrize("name, sizes, labels", [
    ("pneumoniamnist", [4708, 524, 624], ["normal", "pneumonia"]),
    ("breastmnist", [546, 78, 156], ["malignant", "normal, benign"]),
])
def test_official_files_keep_their_splits_and_names(name, sizes, labels):
    source = open_medical_source(str(shared_path("data", "medmnist", f"{name}.npz")))
    assert [len(source.splits[s]) for s in ("train", "val", "test")] == sizes
    assert source.labels == labels and source.load(0).size == (28, 28)


@pytest.mark.slow
@pytest.mark.shared
def test_breastmnist_with_pretrained_lite0_beats_chance_clearly(tmp_path, capsys):
    """A short real fit (28 px, 4 epochs): the full recipe and its numbers are in the app README."""
    data = shared_path("data", "medmnist", "breastmnist.npz")
    run = tmp_path / "breast"
    assert main(["healthcare", "fit", "--data.path", str(data), "--data.image_size", "28", "--run_dir", str(run),
                 "--trainer.max_epochs", "4", "--clinical.tta_flip"]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["auroc"] > 0.75 and metrics["test"]["n"] == 156
    assert metrics["post_fit"]["clinical"]["threshold"]["positive_label"] == "malignant"
    capsys.readouterr()
    assert main(["healthcare", "predict", "--model", str(run / "model.onnx"), f"{data}:test"]) == 0
    assert capsys.readouterr().out.count("\n") == 157
