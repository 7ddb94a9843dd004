"""Fraud fairness by group end to end, on a CSV written like UCI Adult (padded names and values,
`?` for missing, a text label `Y`): fit -> metrics.json / card / plot, evaluate --group-columns, predict."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from deepapps.apps.finance.fraud.config import TabularDataConfig
from deepapps.apps.finance.fraud.features import find_columns, load_source
from deepapps.apps.finance.fraud.synth import generate
from deepapps.apps.finance.fraud.tables import tidy_frame
from deepapps.core.cli import main
from deepapps.core.errors import DataError
from deepapps.core.runtime.session import load_model

TINY = "apps/finance/fraud/configs/tiny.yaml"
FAST = ["--trainer.max_epochs", "1", "--baselines", "false"]


def padded_csv(path, rows: int = 4000) -> None:
    """Synthetic transactions with a `sex` column (more frauds among `M`), a text label `Y`,
    `?` for missing values, and every name and value after the first column padded by a space."""
    df = generate(rows, 0.06, seed=3)
    rng = np.random.default_rng(0)
    y = df["is_fraud"].to_numpy()
    sex = np.where(rng.random(rows) < np.where(y == 1, 0.7, 0.5), "M", "F")
    sex[::50] = "?"
    df = df.drop("is_fraud", "timestamp").with_columns(sex=pl.Series(sex), Y=pl.Series(np.where(y == 1, "yes", "no")))
    df = df.with_columns(pl.col(c).cast(pl.String).fill_null("?") for c in df.columns[1:])
    df = df.with_columns((" " + pl.col(c)).alias(c) for c in df.columns[1:])
    df.rename({c: " " + c for c in df.columns[1:]}).write_csv(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    path = tmp_path_factory.mktemp("fairness") / "padded.csv"
    padded_csv(path)
    return path


@pytest.fixture(scope="module")
def run(data):
    run_dir = data.parent / "run"
    assert main(["fraud", "fit", "--config", TINY, "--data.path", str(data), "--data.label_column", "auto",
                 "--data.group_columns", "[sex]", *FAST, "--run_dir", str(run_dir)]) == 0
    return run_dir


def test_tidy_frame_strips_reads_question_marks_as_missing_and_numbers_as_numbers():
    raw = pl.DataFrame({"a": [" 1", " 2", " ?"], " b": [" x", "?", " "], " c ": ["1.5", " 2", "3"]})
    notes: list[str] = []
    t = tidy_frame(raw, ["?"], notes=notes)
    assert t.columns == ["a", "b", "c"] and t["a"].to_list() == [1, 2, None] and t["a"].dtype == pl.Int64
    assert t["b"].to_list() == ["x", None, None] and t["c"].dtype == pl.Float64
    assert any("a 1, b 2" in n for n in notes) and any("read as numbers: a, c" in n for n in notes)
    lazy = tidy_frame(raw.lazy(), ["?"], numbers=False).collect()
    assert lazy.columns == ["a", "b", "c"] and lazy["a"].to_list() == ["1", "2", None]
    with pytest.raises(DataError, match="named 'b'"):
        tidy_frame(pl.DataFrame({"b": [1], " b": [2]}))


def test_group_columns_are_not_features_unless_listed(data):
    cfg = TabularDataConfig(path=str(data), group_columns=["sex"])
    df = load_source(cfg.path, cfg)
    assert df["Y"].to_list()[:1] in (["no"], ["yes"]) and df["distance_km"].dtype.is_numeric()
    assert "sex" not in find_columns(df, cfg.path, cfg).features
    listed = TabularDataConfig(path=str(data), group_columns=["sex"], categorical_columns=["sex", "channel"])
    assert "sex" in find_columns(df, cfg.path, listed).categorical
    with pytest.raises(DataError, match="group column.*not found: nope"):
        find_columns(df, cfg.path, TabularDataConfig(path=str(data), group_columns=["nope"]))


def test_fit_writes_fairness_for_val_and_test(run):
    m = json.loads((run / "metrics.json").read_text())
    threshold = m["post_fit"]["threshold"]
    for split in ("val", "test"):
        f = m["fairness"][split]
        assert f["threshold"] == pytest.approx(threshold) and f["positive"] == "fraud"
        sex = f["attributes"]["sex"]
        assert set(sex["groups"]) == {"F", "M", "(missing)"}
        assert sum(g["n"] for g in sex["groups"].values()) == f["n"]
        for g in sex["groups"].values():
            assert 0 <= g["selection_rate"] <= 1 and 0 <= g["base_rate"] <= 1
        d = sex["disparity"]
        rates = [g["selection_rate"] for g in sex["groups"].values()]
        assert d["demographic_parity_difference"] == pytest.approx(max(rates) - min(rates))
        assert d["base_rate_difference"] > 0  # built into the data: more frauds among M
    assert m["fairness"]["test"]["n"] == m["test"]["n"]
    mitigation = m["fairness_thresholds"]["sex"]  # fitted on val, judged on test
    assert "skipped" in mitigation or set(mitigation["after"]) >= {"accuracy", "tpr_difference"}
    model = load_model(run / "model.onnx", "cpu", app="fraud")
    pre = model.contract.preprocess
    assert "sex" not in pre["categorical"] + pre["numeric"] and pre["positive"] == "yes" and pre["label"] == "Y"
    card = (run / "model_card.md").read_text()
    assert "## Fairness by group" in card and "reporting only" in card and "**test, `sex`**" in card
    assert "Demographic-parity difference" in card and (run / "plots/fairness_test.png").is_file()
    assert "ThresholdOptimizer" in card


def test_evaluate_group_columns_reproduces_the_fit_figures(run, tmp_path, capsys):
    out = tmp_path / "eval.json"
    assert main(["fraud", "evaluate", "--model", str(run / "model.onnx"), "--group-columns", "sex",
                 "--out", str(out)]) == 0
    got = json.loads(out.read_text())["fairness"]
    fit = json.loads((run / "metrics.json").read_text())["fairness"]["test"]
    assert got["attributes"]["sex"]["groups"].keys() == fit["attributes"]["sex"]["groups"].keys()
    assert got["attributes"]["sex"]["disparity"] == pytest.approx(fit["attributes"]["sex"]["disparity"], abs=1e-6)


@pytest.mark.parametrize("command", ["evaluate", "fit"])
def test_unknown_group_column_is_one_line_exit_2(run, data, tmp_path, capsys, command):
    if command == "evaluate":
        argv = ["fraud", "evaluate", "--model", str(run / "model.onnx"), "--group-columns", "sex,nope"]
    else:
        argv = ["fraud", "fit", "--config", TINY, "--data.path", str(data), "--data.group_columns", "[nope]", *FAST,
                "--run_dir", str(tmp_path / "r")]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("deepapps: error:") and "group column(s) not found: nope" in err
    assert command == "evaluate" or not (tmp_path / "r").exists()


def test_predict_reads_the_padded_file_as_fit_did(run, data, tmp_path):
    out = tmp_path / "scores.csv"
    assert main(["fraud", "predict", "--model", str(run / "model.onnx"), str(data), "--out", str(out)]) == 0
    scores = pl.read_csv(out)
    assert scores.height == 4000 and scores["error"].null_count() == 4000 and scores["score"].null_count() == 0


def test_labels_with_a_trailing_dot_map_to_the_models_labels_with_a_note():
    from deepapps.apps.finance.fraud.features import targets

    df = pl.DataFrame({"Y": [">50K.", "<=50K.", ">50K.", "<=50K."]})
    notes: list[str] = []
    y, positive = targets(df, "Y", "t.csv", ">50K", notes)
    assert y.tolist() == [1, 0, 1, 0] and positive == ">50K"
    assert notes == [("label column 'Y': the trailing '.' of '<=50K.', '>50K.' was stripped to match the model's "
                      "label '>50K'")]
    assert targets(pl.DataFrame({"Y": [">50K", "<=50K"]}), "Y", "t.csv", ">50K", notes)[0].tolist() == [1, 0]
    assert len(notes) == 1  # labels as fit saw them: no mapping, no note
    with pytest.raises(DataError, match="not one of them"):  # a stripped value that is not the model's: refused
        targets(pl.DataFrame({"Y": ["yes.", "no."]}), "Y", "t.csv", ">50K", [])


def test_evaluate_maps_an_official_test_file_whose_labels_end_with_a_dot(run, data, tmp_path, capsys):
    """Adult's adult.test writes `>50K.` for `>50K`: the same rows with dotted labels score the same."""
    frame = pl.read_csv(data)
    label = next(c for c in frame.columns if c.strip() == "Y")
    dotted = tmp_path / "dotted.csv"
    frame.with_columns(pl.col(label) + ".").write_csv(dotted)
    scores = {}
    for name, path in (("plain", data), ("dotted", dotted)):
        out = tmp_path / f"{name}.json"
        assert main(["fraud", "evaluate", "--model", str(run / "model.onnx"), "--data.path", str(path),
                     "--split", "all", "--group-columns", "sex", "--out", str(out)]) == 0
        scores[name] = json.loads(out.read_text())
    assert "label column 'Y': the trailing '.' of 'no.', 'yes.' was stripped to match the model's label 'yes'" in (
        capsys.readouterr().err)
    assert scores["dotted"]["notes"] and "notes" not in scores["plain"]
    for key in ("n", "auprc", "auroc"):
        assert scores["dotted"][key] == scores["plain"][key]
    assert scores["dotted"]["fairness"] == scores["plain"]["fairness"]
