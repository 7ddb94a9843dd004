"""Per-group decision thresholds baked into the fraud model (--decision.group_thresholds)."""

from __future__ import annotations

import json

import numpy as np
import polars as pl
import pytest

from deepapps.apps.finance.fraud.synth import generate
from deepapps.core.cli import main
from deepapps.core.registry import get_app
from deepapps.core.runtime.session import load_model

TINY = "apps/finance/fraud/configs/tiny.yaml"
FAST = ["--trainer.max_epochs", "2", "--baselines", "false"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    folder = tmp_path_factory.mktemp("group_thresholds")
    generate(8000, 0.1, seed=5).write_csv(folder / "tx.csv")
    run_dir = folder / "run"
    assert main(["fraud", "fit", "--config", TINY, "--data.path", str(folder / "tx.csv"),
                 "--decision.group_thresholds", "channel", *FAST, "--run_dir", str(run_dir)]) == 0
    return run_dir


def test_thresholds_travel_in_the_model_and_metrics(run):
    model = load_model(run / "model.onnx", provider="cpu", app="fraud")
    rule = model.contract.details["group_thresholds"]
    assert rule["column"] == "channel" and rule["chosen_on"] == "val"
    assert rule["thresholds"] and rule["default"] == pytest.approx(model.contract.classification.threshold)
    effect = json.loads((run / "metrics.json").read_text())["group_thresholds"]
    assert set(effect["before"]["groups"]) == set(effect["after"]["groups"])
    assert effect["thresholds"] == rule["thresholds"]
    card = (run / "model_card.md").read_text()
    assert "Per-group decision thresholds" in card and "one threshold per value of `channel`" in card


def test_predict_serve_and_evaluate_apply_the_group_threshold(run, tmp_path, capsys):
    model = load_model(run / "model.onnx", provider="cpu", app="fraud")
    rule = model.contract.details["group_thresholds"]
    rows = generate(600, 0.1, seed=9)
    rows.write_csv(tmp_path / "new.csv")
    assert main(["fraud", "predict", "--model", str(run / "model.onnx"), str(tmp_path / "new.csv"),
                 "--out", str(tmp_path / "scored.parquet")]) == 0
    scored = pl.read_parquet(tmp_path / "scored.parquet").join(rows.select("transaction_id", "channel"), on="transaction_id")
    expected = np.array([s >= rule["thresholds"].get(c, rule["default"])
                         for s, c in zip(scored["score"].to_list(), scored["channel"].to_list())])
    assert (scored["decision"].to_numpy() == expected).all()
    assert (expected != (scored["score"].to_numpy() >= rule["default"])).any()  # the rule changes some decisions

    serving = get_app("fraud").load_serving()
    items = [serving.decode_item(model, row) for row in rows.head(50).to_dicts()]
    served = serving.run_items(model, items)
    assert [r["decision"] for r in served] == list(expected_for(rows.head(50), served, rule))

    capsys.readouterr()
    assert main(["fraud", "evaluate", "--model", str(run / "model.onnx")]) == 0
    scored_test = json.loads(capsys.readouterr().out)
    after = json.loads((run / "metrics.json").read_text())["group_thresholds"]["after"]["decision"]
    assert scored_test["decision"]["cost"] == pytest.approx(after["cost"])
    assert scored_test["decision"]["true_positives"] == after["true_positives"]


def expected_for(rows: pl.DataFrame, served: list[dict], rule: dict):
    for channel, result in zip(rows["channel"].to_list(), served):
        yield result["score"] >= rule["thresholds"].get(channel, rule["default"]) - 1e-6


def test_a_column_that_is_not_a_feature_is_one_line(tmp_path, capsys):
    generate(2000, 0.1, seed=5).write_csv(tmp_path / "tx.csv")
    code = main(["fraud", "fit", "--config", TINY, "--data.path", str(tmp_path / "tx.csv"),
                 "--decision.group_thresholds", "amount", *FAST, "--run_dir", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and "--decision.group_thresholds amount: not a categorical feature" in err[-1]
