"""Tests for core.report: plots and model cards."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepapps.core.report.model_card import render_model_card, write_model_card
from deepapps.core.report.plots import confusion_matrix_plot, roc_plot, training_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

METRICS_CSV = """epoch,step,train/loss_step,train/loss_epoch,val/loss,val/accuracy,val/macro_f1,val/auroc
0,9,0.9,,,,,
0,19,,,0.80,0.60,0.55,0.70
0,19,,0.85,,,,
1,29,0.6,,,,,
1,39,,,0.50,0.75,0.72,0.85
1,39,,0.55,,,,
2,59,,,0.40,0.80,0.79,nan
2,59,,0.42,,,,
"""


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 100 and path.read_bytes()[:8] == PNG_SIGNATURE


def test_training_curves(tmp_path: Path) -> None:
    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(METRICS_CSV)
    out = training_curves(csv_path, tmp_path / "plots" / "curves.png")
    assert out == tmp_path / "plots" / "curves.png"
    assert _is_png(out)


def test_training_curves_missing_or_empty(tmp_path: Path) -> None:
    assert training_curves(tmp_path / "nope.csv", tmp_path / "a.png") is None
    step_only = tmp_path / "metrics.csv"
    step_only.write_text("epoch,step,train/loss_step\n0,1,0.9\n")
    assert training_curves(step_only, tmp_path / "b.png") is None
    assert not (tmp_path / "a.png").exists() and not (tmp_path / "b.png").exists()


def test_confusion_matrix_plot(tmp_path: Path) -> None:
    out = confusion_matrix_plot([[5, 1, 0], [0, 3, 0], [2, 0, 0]], ["a", "b", "c"], tmp_path / "cm.png")
    assert _is_png(out)


def test_roc_plot_binary_multiclass_multilabel(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    targets = np.array([0, 1, 2, 0, 1, 2, 0, 1])
    probs = rng.dirichlet(np.ones(3), size=len(targets))
    assert _is_png(roc_plot("multiclass", targets, probs, ["a", "b", "c"], tmp_path / "mc.png"))

    binary = rng.dirichlet(np.ones(2), size=6)
    assert _is_png(roc_plot("binary", np.array([0, 1, 0, 1, 1, 0]), binary, ["n", "p"], tmp_path / "b.png"))

    ml_targets = np.array([[1, 0], [0, 0], [1, 0], [0, 0]])  # second label never positive
    ml_probs = rng.random((4, 2))
    assert _is_png(roc_plot("multilabel", ml_targets, ml_probs, ["x", "y"], tmp_path / "ml.png"))


def test_roc_plot_many_classes(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    k = 12
    targets = np.arange(48) % k
    probs = rng.dirichlet(np.ones(k), size=48)
    assert _is_png(roc_plot("multiclass", targets, probs, [f"c{i}" for i in range(k)], tmp_path / "many.png"))


def _card_info() -> dict:
    return {
        "app": "vision",
        "title": "Pets classifier",
        "created": "2025-01-02T03:04:05Z",
        "data": {
            "source": "data/pets",
            "labels": ["cat", "dog"],
            "sizes": {"train": 80, "val": 10, "test": 10},
            "class_counts": {"train": {"cat": 60, "dog": 20}, "val": {"cat": 5, "dog": 5}},
            "notes": ["3 unreadable images skipped"],
        },
        "model": {"backbone": "efficientnet_lite0", "weights": "ImageNet", "parameters": 3_371_554},
        "config_yaml": "trainer:\n  max_epochs: 3\n",
        "metrics": {
            "val": {"accuracy": 0.9, "macro_f1": 0.88888, "auroc": None},
            "test": {"accuracy": 0.8, "macro_f1": 0.791234, "auroc": 0.95},
            "test_torch": {"accuracy": 0.8},
        },
        "export": {"opset": 18, "parity_max_abs_diff": 1.2e-6},
        "plots": ["plots/curves.png", "plots/confusion_matrix.png"],
        "onnx": "model.onnx",
    }


def test_model_card_full() -> None:
    card = render_model_card(_card_info())
    for heading in [
        "# Pets classifier",
        "## Data",
        "## Model",
        "## Training config",
        "## Metrics",
        "## Plots",
        "## Export",
        "## Intended use",
        "## Limitations",
    ]:
        assert f"\n{heading}\n" in f"\n{card}"
    assert "| metric | validation | test | test (PyTorch) |" in card
    assert "| accuracy | 0.9000 | 0.8000 | 0.8000 |" in card
    assert "| macro_f1 | 0.8889 | 0.7912 | — |" in card
    assert "| auroc | — | 0.9500 | — |" in card
    assert "| cat | 60 (75.0%) | 5 (50.0%) |" in card
    assert "```yaml\ntrainer:\n  max_epochs: 3\n```" in card
    assert "![curves](plots/curves.png)" in card
    assert "3,371,554" in card
    assert "| opset | 18 |" in card
    assert "1.2e-06" in card
    assert "held-out test split" in card  # generic limitations name the split
    assert "test accuracy 0.8000" in card  # summary line


def test_model_card_minimal_and_custom_text() -> None:
    card = render_model_card({})
    assert card.startswith("# Model card\n")
    assert "## Intended use" in card and "## Limitations" in card
    assert "## Metrics" not in card

    custom = render_model_card({"intended_use": "Sorting photos.", "limitations": ["Only daylight photos."]})
    assert "Sorting photos." in custom
    assert "- Only daylight photos." in custom


def test_write_model_card(tmp_path: Path) -> None:
    path = write_model_card(tmp_path / "run" / "MODEL_CARD.md", _card_info())
    assert path.read_text() == render_model_card(_card_info())
    assert list(path.parent.iterdir()) == [path]  # no temporary file left behind
