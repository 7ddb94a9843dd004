"""Fairness by group of the image apps (vision, healthcare images): sensitive-attribute columns of a
manifest (`--data.group_columns`, `evaluate --group-columns`), reporting only, distinct from the split
grouping (healthcare's `patient_column`); image folders and ECG refuse them in one line."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepapps.core.cli import main
from tests.helpers import COLOURS, TINY, make_image_folder

HEALTHCARE_TINY = Path(__file__).resolve().parents[2] / "apps" / "healthcare" / "configs" / "tiny.yaml"
FAST = ["--trainer.max_epochs", "1", "--data.batch_size", "8"]


def write_manifest(root: Path, classes: tuple[str, ...] = ("blue", "red"), per_class: int = 24) -> Path:
    """Noisy colour images of `classes` and a manifest path,label,sex,patient_id (sex `F`/`M`, every
    7th missing; two images per patient)."""
    folder = make_image_folder(root / "images", {c: COLOURS[c] for c in classes}, per_class=per_class)
    paths = sorted(folder.rglob("*.png"))
    sex = [None if i % 7 == 3 else "FM"[i % 2] for i in range(len(paths))]
    pl.DataFrame({"path": [str(p.relative_to(root)) for p in paths], "label": [p.parent.name for p in paths],
                  "sex": sex, "patient_id": [f"p{i // 2}" for i in range(len(paths))]}).write_csv(root / "m.csv")
    return root / "m.csv"


@pytest.fixture(scope="module")
def vision(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vision_fairness")
    manifest = write_manifest(root)
    assert main(["vision", "fit", "--config", str(TINY), "--data.path", str(manifest), "--data.group_columns", "[sex]",
                 *FAST, "--run_dir", str(root / "run")]) == 0
    return root


def test_fit_writes_fairness_of_val_and_test_the_card_says_which_column_is_which(vision):
    m = json.loads((vision / "run" / "metrics.json").read_text())
    for split in ("val", "test"):
        sex = m["fairness"][split]["attributes"]["sex"]
        assert set(sex["groups"]) == {"F", "M", "(missing)"}
        assert sum(g["n"] for g in sex["groups"].values()) == m["fairness"][split]["n"]
    assert m["fairness"]["test"]["n"] == m["test"]["n"]
    card = (vision / "run" / "model_card.md").read_text()
    assert "## Fairness by group" in card and "**val, `sex`**" in card and "**test, `sex`**" in card
    assert "The sensitive attributes (`sex`) are manifest columns read for this report only" in card
    assert (vision / "run" / "plots" / "fairness_test.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reproduces_the_fit_figures_and_they_are_counts_by_hand(vision, tmp_path):
    from deepapps.core.runtime.image_classification import ImageServing
    from deepapps.core.runtime.session import load_model

    model_path = vision / "run" / "model.onnx"
    fit = json.loads((vision / "run" / "metrics.json").read_text())["fairness"]["test"]["attributes"]["sex"]
    out = tmp_path / "e.json"
    assert main(["vision", "evaluate", "--model", str(model_path), "--group-columns", "sex", "--out", str(out)]) == 0
    got = json.loads(out.read_text())["fairness"]["attributes"]["sex"]
    for g, figures in fit["groups"].items():
        assert got["groups"][g] == pytest.approx(figures)
    assert got["disparity"] == pytest.approx(fit["disparity"])
    model, data = load_model(model_path, provider="cpu", app="vision"), str(vision / "m.csv")
    evaluation = ImageServing().evaluate(model, data, "test")
    sex = np.array(["(missing)" if v is None else v for v in ImageServing().group_values(model, data, "test", ["sex"])["sex"]])
    k = model.contract.classification.positive_index
    decided, y = evaluation.probs[:, k] >= 0.5, evaluation.targets == k  # no threshold stored: 0.5
    for g, figures in fit["groups"].items():
        rows = sex == g
        assert figures["n"] == rows.sum() and figures["positives"] == y[rows].sum()
        assert figures["selection_rate"] == pytest.approx(decided[rows].mean())
    rates = [g["selection_rate"] for g in fit["groups"].values()]
    assert fit["disparity"]["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))


@pytest.mark.parametrize("case", ["folder", "missing", "multiclass"])
def test_fit_refuses_in_one_line_before_the_run_folder(tmp_path, capsys, case):
    if case == "folder":
        data = make_image_folder(tmp_path / "folder", {c: COLOURS[c] for c in ("blue", "red")}, per_class=8)
    else:
        data = write_manifest(tmp_path, ("blue", "green", "red") if case == "multiclass" else ("blue", "red"), 8)
    column = "nope" if case == "missing" else "sex"
    assert main(["vision", "fit", "--config", str(TINY), "--data.path", str(data), "--data.group_columns",
                 f"[{column}]", *FAST, "--run_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("deepapps: error:")
    assert {"folder": "sensitive attributes are read from a .csv/.parquet manifest",
            "missing": "group column(s) not found: nope", "multiclass": "needs a binary classifier"}[case] in err
    assert not (tmp_path / "r").exists()


def test_evaluate_on_a_folder_or_without_the_column_is_one_line(vision, tmp_path, capsys):
    model = str(vision / "run" / "model.onnx")
    folder = str(vision / "images")
    assert main(["vision", "evaluate", "--model", model, "--data.path", folder, "--group-columns", "sex"]) == 2
    assert "is not one" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["vision", "evaluate", "--model", model, "--group-columns", "nope"]) == 2
    assert "group column(s) not found: nope" in capsys.readouterr().err.strip().splitlines()[-1]


def test_healthcare_manifest_keeps_patient_splits_and_reports_sex_at_the_calibrated_threshold(tmp_path):
    manifest = write_manifest(tmp_path)
    run = tmp_path / "run"
    assert main(["healthcare", "fit", "--config", str(HEALTHCARE_TINY), "--data.path", str(manifest),
                 "--data.group_columns", "[sex]", "--clinical.positive_label", "red", *FAST,
                 "--run_dir", str(run)]) == 0
    m = json.loads((run / "metrics.json").read_text())
    threshold = m["post_fit"]["threshold"]
    assert m["fairness"]["test"]["threshold"] == pytest.approx(threshold) and m["fairness"]["test"]["positive"] == "red"
    card = (run / "model_card.md").read_text()
    assert "split by patient" in card
    assert "The manifest's `patient_id` column (when present) is something else: the split grouping" in card
    out = tmp_path / "e.json"
    assert main(["healthcare", "evaluate", "--model", str(run / "model.onnx"), "--group-columns", "sex",
                 "--out", str(out)]) == 0
    got = json.loads(out.read_text())["fairness"]["attributes"]["sex"]
    assert got["disparity"] == pytest.approx(m["fairness"]["test"]["attributes"]["sex"]["disparity"])


def test_healthcare_builtin_and_signal_refuse_group_columns(tmp_path, capsys):
    assert main(["healthcare", "fit", "--config", str(HEALTHCARE_TINY), "--data.group_columns", "[sex]", *FAST,
                 "--run_dir", str(tmp_path / "r")]) == 2
    assert "builtin:synthetic-xray is not one" in capsys.readouterr().err.strip().splitlines()[-1]
    assert main(["healthcare", "fit", "--config", str(HEALTHCARE_TINY), "--data.path", "builtin:synthetic-ecg",
                 "--data.group_columns", "[sex]", *FAST, "--run_dir", str(tmp_path / "s")]) == 2
    assert "not for task signal" in capsys.readouterr().err.strip().splitlines()[-1]
    assert not (tmp_path / "r").exists() and not (tmp_path / "s").exists()
