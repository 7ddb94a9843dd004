"""Fraud end to end: fit -> ONNX -> evaluate / streaming predict, parity on raw rows, bad input."""

from __future__ import annotations

import json

import numpy as np
import onnx
import polars as pl
import pytest
import torch

from deepapps.apps.finance.fraud.config import TabularModelConfig
from deepapps.apps.finance.fraud.features import FeatureSpec, encode
from deepapps.apps.finance.fraud.model import create_model
from deepapps.apps.finance.fraud.synth import generate
from deepapps.core.cli import main
from deepapps.core.contract import read_metadata
from deepapps.core.runtime.session import load_model
from deepapps.apps.finance.fraud.runtime import score

TINY = "apps/finance/fraud/configs/tiny.yaml"
FAST = ["--data.synth_rows", "6000", "--data.synth_fraud_rate", "0.04", "--trainer.max_epochs", "2"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("fraud") / "tiny"
    assert main(["fraud", "fit", "--config", TINY, *FAST, "--run_dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def raw_rows() -> pl.DataFrame:
    """Unseen transactions (another generator seed), with a missing value and an unseen category."""
    df = generate(1500, 0.05, seed=7).drop("is_fraud")
    return df.with_columns(
        country=pl.when(pl.int_range(pl.len()) == 3).then(pl.lit("ZZ")).otherwise(pl.col("country")),
        device_score=pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("device_score")),
    )


def test_fit_writes_a_complete_run(run):
    for name in ("model.onnx", "metrics.json", "model_card.md", "config.yaml", "checkpoints/best.ckpt",
                 "plots/pr_curve.png", "plots/roc.png", "plots/score_distribution.png"):
        assert (run / name).is_file(), name
    m = json.loads((run / "metrics.json").read_text())
    # the exported file and the torch checkpoint rank the test rows identically
    assert m["test"]["auprc"] == pytest.approx(m["test_torch"]["auprc"], abs=1e-4)
    fraud_rate = m["test"]["frauds"] / m["test"]["n"]
    assert m["test"]["auprc"] > 3 * fraud_rate  # far above a random ranking
    assert set(m["comparison_test"]) == {"model (ONNX)", "logistic regression", "HistGradientBoosting"}
    assert 0 < m["post_fit"]["threshold"] < 1
    assert m["test"]["decision"]["threshold"] == m["post_fit"]["threshold"]
    card = (run / "model_card.md").read_text()
    assert "HistGradientBoosting" in card and f"{m['test']['auprc']:.4f}" in card
    importance = m["feature_importance"]["mean_abs_attribution"]
    assert set(importance) == {"amount", "hour", "distance_km", "device_score", "customer_txn_24h",
                               "amount_vs_history", "merchant_category", "channel", "country"}
    assert list(importance.values()) == sorted(importance.values(), reverse=True) and max(importance.values()) > 0
    assert "## Feature importance (integrated gradients, test)" in card and (run / "plots/feature_importance.png").is_file()


def test_onnx_carries_features_and_threshold(run):
    proto = onnx.load(str(run / "model.onnx"))
    assert [i.name for i in proto.graph.input] == ["numeric", "categorical"]
    meta = read_metadata(run / "model.onnx")
    assert meta["app"] == "fraud" and meta["task"] == "binary" and meta["labels"] == ["normal", "fraud"]
    pre = meta["preprocess"]
    assert pre["categorical"] == ["merchant_category", "channel", "country"]
    assert "amount" in pre["numeric"] and pre["log"][pre["numeric"].index("amount")] is True
    assert "customer_id" not in pre["numeric"] and pre["ids"] == ["transaction_id", "customer_id"]
    assert meta["threshold"] == pytest.approx(json.loads((run / "metrics.json").read_text())["post_fit"]["threshold"])


def test_exported_model_matches_torch_on_raw_rows(run, raw_rows):
    model = load_model(run / "model.onnx", "cpu", app="fraud")
    spec = FeatureSpec.from_meta(model.meta["preprocess"])
    enc = encode(raw_rows, spec)
    assert enc.unknown["country"] == 1 and np.isnan(enc.numeric).any()
    net = create_model(spec, TabularModelConfig(hidden=[32]))
    state = torch.load(run / "checkpoints" / "best.ckpt", map_location="cpu", weights_only=False)["state_dict"]
    net.load_state_dict({k.removeprefix("net."): v for k, v in state.items() if k.startswith("net.")})
    with torch.no_grad():
        expected = net.eval()(torch.from_numpy(enc.numeric), torch.from_numpy(enc.categorical)).softmax(-1)[:, 1]
    got = score(model, enc)[:, 1]
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)


def test_evaluate_reproduces_the_fit_numbers(run, capsys):
    assert main(["fraud", "evaluate", "--model", str(run / "model.onnx"), "--provider", "cpu"]) == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((run / "metrics.json").read_text())["test"]
    assert printed["n"] == saved["n"] and printed["auprc"] == pytest.approx(saved["auprc"])


def test_predict_streams_keeps_ids_and_flags_bad_rows(run, raw_rows, tmp_path, capsys):
    text = raw_rows.with_columns(pl.col("amount").cast(pl.String), note=pl.lit("x"))
    text = text.with_columns(amount=pl.when(pl.int_range(pl.len()) == 10).then(pl.lit("abc"))
                             .when(pl.int_range(pl.len()) == 11).then(pl.lit("inf")).otherwise(pl.col("amount")))
    csv, parquet = tmp_path / "in.csv", tmp_path / "in.parquet"
    text.write_csv(csv)
    raw_rows.write_parquet(parquet)
    model = str(run / "model.onnx")
    assert main(["fraud", "predict", "--model", model, str(csv), "--out", str(tmp_path / "a.parquet"),
                 "--chunk-size", "400", "--provider", "cpu"]) == 0
    err = capsys.readouterr().err
    assert "ignored columns (1): note" in err and "country=1" in err
    out = pl.read_parquet(tmp_path / "a.parquet")
    assert out.columns == ["transaction_id", "customer_id", "score", "decision", "error"]
    assert out["transaction_id"].to_list() == raw_rows["transaction_id"].to_list()
    bad = out.filter(pl.col("error").is_not_null())
    assert bad["transaction_id"].to_list() == raw_rows["transaction_id"][10:12].to_list()
    assert bad["error"].to_list() == ["amount: not a number", "amount: infinite value"]
    assert bad["score"].null_count() == 2 and bad["decision"].null_count() == 2
    good = out.filter(pl.col("error").is_null())
    threshold = read_metadata(run / "model.onnx")["threshold"]
    assert (good["decision"] == (good["score"] >= threshold)).all()
    # Parquet input, one chunk: the same scores for the good rows
    assert main(["fraud", "predict", "--model", model, str(parquet), "--out", str(tmp_path / "b.csv")]) == 0
    other = pl.read_csv(tmp_path / "b.csv")
    keep = out["error"].is_null().to_numpy()
    np.testing.assert_allclose(other["score"].to_numpy()[keep], out["score"].to_numpy()[keep], atol=1e-6)
    # Parquet read in sliced chunks (1500 rows = 5 x 256 + 220): same rows, same order, same scores
    assert main(["fraud", "predict", "--model", model, str(parquet), "--out", str(tmp_path / "c.parquet"),
                 "--chunk-size", "256"]) == 0
    sliced = pl.read_parquet(tmp_path / "c.parquet")
    assert sliced["transaction_id"].to_list() == raw_rows["transaction_id"].to_list()
    np.testing.assert_allclose(sliced["score"].to_numpy(), other["score"].to_numpy(), atol=1e-6)


@pytest.mark.parametrize("case", ["missing_column", "empty", "header_only", "other_app_output"])
def test_predict_bad_files_are_one_line_errors(run, raw_rows, tmp_path, capsys, case):
    path = tmp_path / "in.csv"
    if case == "missing_column":
        raw_rows.drop("amount", "country").write_csv(path)
        needle = "missing required column(s): amount, country"
    elif case == "empty":
        path.write_text("")
        needle = "empty file"
    elif case == "header_only":
        raw_rows.head(0).write_csv(path)
        needle = "no rows"
    else:
        raw_rows.write_csv(path)
        needle = "unsupported output type '.txt'"
    out = tmp_path / ("out.txt" if case == "other_app_output" else "out.parquet")
    assert main(["fraud", "predict", "--model", str(run / "model.onnx"), str(path), "--out", str(out)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deepapps: error:")]
    assert len(errors) == 1 and needle in errors[0] and str(path if case != "other_app_output" else out) in errors[0]
    assert not out.exists() and not list(tmp_path.glob(".deepapps-predict-*"))


def test_label_with_one_class_is_refused(tmp_path, capsys):
    path = tmp_path / "one.csv"
    generate(800, 0.0, seed=3).write_csv(path)
    assert main(["fraud", "fit", "--config", TINY, "--data.path", str(path), "--run_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err
    assert "is_fraud" in err and "two classes" in err


def test_new_schema_needs_config_only(tmp_path):
    """Another dataset: other column names, a string label, no time column, no categoricals."""
    rng = np.random.default_rng(0)
    n = 3000
    x = rng.normal(size=(n, 3))
    fraud = (x[:, 0] + 0.5 * x[:, 1] + rng.normal(0, 0.5, n)) > 2.2
    df = pl.DataFrame({"ref": np.arange(n), "f_a": x[:, 0], "f_b": x[:, 1], "noise": x[:, 2],
                       "txn_value": np.exp(x[:, 0]) * 10, "outcome": np.where(fraud, "chargeback", "ok")})
    path = tmp_path / "other.parquet"
    df.write_parquet(path)
    run_dir = tmp_path / "run"
    assert main(["fraud", "fit", "--config", TINY, "--data.path", str(path), "--data.label_column", "outcome",
                 "--data.time_column", "null", "--data.id_columns", "[ref]", "--data.split", "random",
                 "--data.log_columns", "[txn_value]", "--trainer.max_epochs", "4", "--data.batch_size", "64", "--baselines", "false",
                 "--run_dir", str(run_dir)]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["test"]["auroc"] > 0.85
    meta = read_metadata(run_dir / "model.onnx")
    assert meta["preprocess"]["positive"] == "chargeback" and meta["preprocess"]["categorical"] == []
    assert main(["fraud", "predict", "--model", str(run_dir / "model.onnx"), str(path),
                 "--out", str(tmp_path / "p.parquet")]) == 0
    assert pl.read_parquet(tmp_path / "p.parquet").columns == ["ref", "score", "decision", "error"]


def test_serve_scores_json_rows_and_rejects_bad_ones(run, raw_rows):
    from tests.helpers import Server

    server = Server(run / "model.onnx")
    try:
        rows = json.loads(raw_rows.head(3).write_json())  # as a client would send them
        bad = dict(rows[1], amount="lots") if "amount" in rows[1] else None
        status, body = server.predict({"instances": rows})
        assert status == 200 and len(body["predictions"]) == 3
        expected = score(load_model(run / "model.onnx", "cpu"), encode(raw_rows.head(3), _spec(run)))[:, 1]
        assert [p["score"] for p in body["predictions"]] == pytest.approx(expected.tolist(), abs=1e-5)
        status, body = server.predict({"instances": [{"nothing": 1}]})
        assert status == 422 and "missing required column" in body["error"]
        if bad is not None:
            status, body = server.predict({"instances": [rows[0], bad]})
            assert status == 200 and "not a number" in body["predictions"][1]["error"]
    finally:
        server.stop()


def _spec(run) -> FeatureSpec:
    return FeatureSpec.from_meta(read_metadata(run / "model.onnx")["preprocess"])


def test_explain_attributes_each_row_and_matches_predict(run, raw_rows, tmp_path, capsys):
    text = raw_rows.head(60).with_columns(pl.col("amount").cast(pl.String))
    text = text.with_columns(amount=pl.when(pl.int_range(pl.len()) == 5).then(pl.lit("abc")).otherwise(pl.col("amount")))
    path = tmp_path / "in.csv"
    text.write_csv(path)
    out = tmp_path / "why"
    assert main(["fraud", "explain", "--model", str(run / "model.onnx"), str(path), "--out", str(out),
                 "--rows", "50", "--steps", "64", "--method", "integrated_gradients", "--plot-rows", "3"]) == 0
    assert "explained 49 of 50 inputs" in capsys.readouterr().err
    why = pl.read_csv(out / "attributions.csv")
    assert why.height == 50 and why.columns[:2] == ["transaction_id", "customer_id"]
    assert why["error"][5] == "amount: not a number" and why["score"][5] is None
    attr = why.select(pl.selectors.starts_with("attr_")).drop_nulls()
    assert attr.width == 9 and attr.height == 49
    # attributions add up to log-odds minus the baseline's: the same offset for every row
    offset = why["log_odds"].drop_nulls().to_numpy() - attr.to_numpy().sum(1)
    assert np.ptp(offset) < 0.1 < np.ptp(why["log_odds"].drop_nulls().to_numpy())
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["all_agree_with_onnx"] is True and manifest["max_abs_delta"] < 0.05
    assert sorted(p.name for p in out.glob("row_*.png")) == ["row_0000.png", "row_0001.png", "row_0002.png"]
    assert (out / "global_importance.png").is_file() and (out / "global_importance.csv").is_file()
    assert main(["fraud", "predict", "--model", str(run / "model.onnx"), str(path), "--out", str(tmp_path / "p.csv"),
                 "--provider", "cpu"]) == 0
    scores = pl.read_csv(tmp_path / "p.csv")["score"].head(50)
    np.testing.assert_allclose(why["score"].fill_null(-1).to_numpy(), scores.fill_null(-1).to_numpy(), atol=1e-4)
    # feature ablation (the default) moves each column to the baseline row's: the same rows explained
    assert main(["fraud", "explain", "--ckpt", str(run / "checkpoints" / "best.ckpt"), str(path),
                 "--out", str(tmp_path / "ablation"), "--rows", "50", "--plot-rows", "0"]) == 0
    ablation = pl.read_csv(tmp_path / "ablation" / "attributions.csv")
    assert ablation.select(pl.selectors.starts_with("attr_")).drop_nulls().height == 49
    assert main(["fraud", "explain", "--ckpt", str(tmp_path / "nope.ckpt"), str(path), "--out", str(out)]) == 2


def test_autoencoder_option_fits_exports_and_predicts(tmp_path):
    run_dir = tmp_path / "ae"
    assert main(["fraud", "fit", "--config", TINY, *FAST, "--trainer.max_epochs", "1", "--model.arch", "autoencoder",
                 "--model.ae_train_on", "all", "--baselines", "false", "--run_dir", str(run_dir)]) == 0
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["test"]["auprc"] == pytest.approx(m["test_torch"]["auprc"], abs=1e-4)
    assert m["test"]["auprc"] > 1.5 * m["test"]["frauds"] / m["test"]["n"]  # reconstruction error ranks frauds higher
    assert 0 < m["post_fit"]["threshold"] < 1
    rows = generate(500, 0.05, seed=9).drop("is_fraud")
    rows.write_parquet(tmp_path / "in.parquet")
    assert main(["fraud", "predict", "--model", str(run_dir / "model.onnx"), str(tmp_path / "in.parquet"),
                 "--out", str(tmp_path / "s.parquet")]) == 0
    assert pl.read_parquet(tmp_path / "s.parquet")["score"].is_between(0, 1).all()


def test_evaluate_splits_and_other_tables(run, tmp_path, capsys):
    model = str(run / "model.onnx")

    def evaluate(*args: str) -> dict:
        capsys.readouterr()
        assert main(["fraud", "evaluate", "--model", model, "--provider", "cpu", *args]) == 0
        return json.loads(capsys.readouterr().out)

    sizes = {split: evaluate("--split", split)["n"] for split in ("train", "val", "test", "all")}
    assert sizes == {"train": 4200, "val": 900, "test": 900, "all": 6000}
    printed = evaluate()  # the builtin training data: its test split
    assert list(printed)[:5] == ["split", "split_chosen", "n", "data", "fingerprint"]
    assert printed["split"] == "test" and printed["n"] == 900 and printed["fingerprint"]["kind"] == "builtin"
    table = tmp_path / "labelled.csv"
    generate(700, 0.05, seed=11).write_csv(table)
    printed = evaluate("--data.path", str(table))  # every row of a table the model never saw
    assert printed["split"] == "all" and printed["n"] == 700 and printed["data"] == str(table)
    assert printed["fingerprint"]["kind"] == "file" and printed["fingerprint"]["size"] == table.stat().st_size
    assert evaluate("--data.path", str(table), "--split", "test")["n"] == 105  # 15% of it, as fit would split it


def test_gan_oversampling_adds_synthetic_frauds_to_train_only(tmp_path):
    run_dir = tmp_path / "gan"
    assert main(["fraud", "fit", "--config", TINY, *FAST, "--trainer.max_epochs", "1", "--data.gan_oversample", "1.5",
                 "--data.gan_steps", "10", "--baselines", "false", "--run_dir", str(run_dir)]) == 0
    meta = read_metadata(run_dir / "model.onnx")
    sizes, notes = meta["train"]["data"]["sizes"], meta["train"]["data"]["notes"]
    assert sizes == {"train": 4200, "val": 900, "test": 900}  # the real splits are unchanged
    frauds = int(generate(6000, 0.04, seed=0).head(4200)["is_fraud"].sum())
    assert f"GAN oversampling: {round(1.5 * frauds)} synthetic frauds added to train" in " ".join(notes)


def test_batch_scoring_session_does_not_spin(run):
    from deepapps.apps.finance.fraud.runtime import BATCH_SESSION

    model = load_model(run / "model.onnx", "cpu", app="fraud", session_config=BATCH_SESSION)
    assert model.session.get_session_options().get_session_config_entry("session.intra_op.allow_spinning") == "0"
    proto = onnx.load(str(run / "model.onnx"))
    assert "BatchNormalization" not in {n.op_type for n in proto.graph.node}  # folded into the Gemms at export
