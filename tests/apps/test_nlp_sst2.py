"""Real MiniLM-L6 on 2,000 SST-2 rows (slow; needs ../shared): fit -> ONNX -> int8 -> evaluate."""

from __future__ import annotations

import json

import pytest

from deepapps.core.cli import main
from tests.helpers import REPO, shared_path

pytestmark = [pytest.mark.slow, pytest.mark.shared]


def test_minilm_learns_sst2_from_two_thousand_rows(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    data = shared_path("data", "sst2", "train.tsv")
    run_dir = tmp_path / "run"
    rc = main(["nlp", "fit", "--config", str(REPO / "apps" / "nlp" / "configs" / "default.yaml"),
               "--data.path", str(data), "--data.text_column", "sentence", "--data.label_column", "label",
               "--data.label_names", "[negative, positive]", "--data.max_length", "64",
               "--data.val_fraction", "0.005", "--data.test_fraction", "0.005", "--data.max_train_rows", "2000",
               "--optim.lr", "1e-4", "--trainer.max_epochs", "1", "--trainer.accelerator", "cpu",
               "--run_dir", str(run_dir)])
    assert rc == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["test"]["n"] == 337  # 0.5% of each class of the 67,349 rows
    assert m["export"]["parity_max_abs_diff"] < 1e-4
    assert m["test"]["accuracy"] > 0.75  # chance is 0.56
    assert abs(m["int8"]["change"]["accuracy"]) < 0.03
