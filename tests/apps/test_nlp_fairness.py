"""nlp `evaluate --group-columns`: fairness by group of a binary text model, torch-free, from a
column of the same table (the rows evaluate scored, in its order; rows with an empty text dropped)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from deepapps.core.cli import main
from tests.apps.nlp_helpers import make_tiny_bert
from tests.apps.test_nlp_e2e import TINY

WORDS = {"negative": ["awful", "broken", "terrible", "useless"], "positive": ["great", "lovely", "perfect", "superb"]}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("nlp_fairness")
    rng = np.random.default_rng(0)
    rows = [{"text": f"the lamp is {rng.choice(WORDS[label])}" if i % 41 else "", "label": label,
             "region": ["north", "south", None][i % 3]} for i, label in enumerate(["negative", "positive"] * 120)]
    data = root / "reviews.csv"
    pl.DataFrame(rows).write_csv(data)
    rc = main(["nlp", "fit", "--config", str(TINY), "--model.pretrained", str(make_tiny_bert(root / "bert")),
               "--data.path", str(data), "--data.val_fraction", "0.2", "--data.test_fraction", "0.3",
               "--trainer.max_epochs", "1", "--export_int8", "false", "--run_dir", str(root / "run")])
    assert rc == 0
    return root


def test_evaluate_reports_fairness_by_group_of_the_scored_rows(run, capsys):
    model = str(run / "run" / "model.onnx")
    assert main(["nlp", "evaluate", "--model", model, "--group-columns", "region", "--out", str(run / "e.json")]) == 0
    m = json.loads((run / "e.json").read_text())
    region = m["fairness"]["attributes"]["region"]
    assert set(region["groups"]) == {"north", "south", "(missing)"}
    assert sum(g["n"] for g in region["groups"].values()) == m["n"] == m["fairness"]["n"]
    assert 0 <= region["disparity"]["demographic_parity_difference"] <= 1
    assert main(["nlp", "evaluate", "--model", model, "--group-columns", "nope"]) == 2
    assert "group column(s) not found: nope" in capsys.readouterr().err.strip().splitlines()[-1]
