"""nlp fairness by group of a binary text model from a column of the same table: fit with
`--data.group_columns` (metrics.json val + test, card section, plot) and `evaluate --group-columns`,
torch-free (the rows evaluate scored, in its order; rows with an empty text dropped)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from deepapps.core.cli import main
from tests.apps.nlp_helpers import make_tiny_bert
from tests.apps.test_nlp_e2e import TINY

WORDS = {"negative": ["awful", "broken", "terrible", "useless"], "positive": ["great", "lovely", "perfect", "superb"]}


def fit_argv(root, data, *extra: str) -> list[str]:
    return ["nlp", "fit", "--config", str(TINY), "--model.pretrained", str(root / "bert"), "--data.path", str(data),
            "--data.val_fraction", "0.2", "--data.test_fraction", "0.3", "--trainer.max_epochs", "3",
            "--export_int8", "false", "--baselines", "false", *extra]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("nlp_fairness")
    rng = np.random.default_rng(0)
    rows = [{"text": f"the lamp is {rng.choice(WORDS[label])}" if i % 41 else "", "label": label,
             "region": ["north", "south", None][i % 3]} for i, label in enumerate(["negative", "positive"] * 120)]
    data = root / "reviews.csv"
    pl.DataFrame(rows).write_csv(data)
    make_tiny_bert(root / "bert")
    rc = main(fit_argv(root, data, "--data.group_columns", "[region]", "--run_dir", str(root / "run")))
    assert rc == 0
    return root


def test_fit_writes_fairness_for_val_and_test_the_card_and_the_plot(run):
    m = json.loads((run / "run" / "metrics.json").read_text())
    for split in ("val", "test"):
        region = m["fairness"][split]["attributes"]["region"]
        assert set(region["groups"]) == {"north", "south", "(missing)"}
        assert sum(g["n"] for g in region["groups"].values()) == m["fairness"][split]["n"]
    assert m["fairness"]["test"]["n"] == m["test"]["n"] and m["fairness"]["test"]["positive"] == "positive"
    card = (run / "run" / "model_card.md").read_text()
    assert "## Fairness by group" in card and "**test, `region`**" in card and "reporting only" in card
    assert (run / "run" / "plots" / "fairness_test.png").stat().st_size > 0


@pytest.mark.parametrize("split", ["val", "test"])
def test_fit_figures_are_evaluate_figures_by_hand(run, split, tmp_path):
    """The fit's figures of each split = those of `evaluate --split` (same ONNX model, same rows), and
    the test selection rates and TPRs = counts by hand over predict's decisions of the same rows."""
    fit = json.loads((run / "run" / "metrics.json").read_text())["fairness"][split]
    out = tmp_path / "e.json"
    assert main(["nlp", "evaluate", "--model", str(run / "run" / "model.onnx"), "--split", split,
                 "--group-columns", "region", "--out", str(out)]) == 0
    got = json.loads(out.read_text())["fairness"]
    for g, figures in fit["attributes"]["region"]["groups"].items():
        assert got["attributes"]["region"]["groups"][g] == pytest.approx(figures)
    assert got["attributes"]["region"]["disparity"] == pytest.approx(fit["attributes"]["region"]["disparity"])
    if split != "test":
        return
    from deepapps.apps.nlp.runtime import NlpServing
    from deepapps.core.runtime.session import load_model

    model = load_model(run / "run" / "model.onnx", provider="cpu", app="nlp")
    data = str(run / "reviews.csv")
    evaluation = NlpServing().evaluate(model, data, "test")
    region = np.array(["(missing)" if g is None else g
                       for g in NlpServing().group_values(model, data, "test", ["region"])["region"]])
    t = model.contract.classification.threshold
    decided = evaluation.probs[:, 1] >= (0.5 if t is None else t)
    y = evaluation.targets == 1
    for g, figures in fit["attributes"]["region"]["groups"].items():
        rows = region == g
        assert figures["n"] == rows.sum() and figures["positives"] == y[rows].sum()
        assert figures["selection_rate"] == pytest.approx(decided[rows].mean())
        assert figures["tpr"] == pytest.approx(decided[rows & y].sum() / y[rows].sum())
        assert figures["fpr"] == pytest.approx(decided[rows & ~y].sum() / (~y[rows]).sum())
    rates = [g["selection_rate"] for g in fit["attributes"]["region"]["groups"].values()]
    assert fit["attributes"]["region"]["disparity"]["demographic_parity_difference"] == pytest.approx(
        max(rates) - min(rates))


@pytest.mark.parametrize("case", ["missing", "multiclass"])
def test_fit_refuses_bad_group_columns_in_one_line_before_the_run_folder(run, tmp_path, capsys, case):
    data = run / "reviews.csv"
    if case == "multiclass":
        frame = pl.read_csv(data)
        data = tmp_path / "three.csv"
        frame.with_columns(label=pl.Series([["negative", "positive", "neutral"][i % 3] for i in range(frame.height)])
                           ).write_csv(data)
    column = "nope" if case == "missing" else "region"
    assert main(fit_argv(run, data, "--data.group_columns", f"[{column}]", "--run_dir", str(tmp_path / "r"))) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("deepapps: error:")
    assert ("group column(s) not found: nope" if case == "missing" else "needs a binary classifier") in err
    assert not (tmp_path / "r").exists()


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
