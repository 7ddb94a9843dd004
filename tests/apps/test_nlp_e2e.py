"""nlp app end to end on a tiny BERT: fit -> ONNX (fp32 + int8) -> evaluate / predict / serve.

The data is a generated product-review CSV with its own column names and three labels, so the
run also shows the app working on a new domain and schema with only data settings changed.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import onnx
import polars as pl
import pytest

from deepapps.apps.nlp.runtime import score_texts
from deepapps.core.cli import main
from deepapps.core.runtime.session import load_model
from tests.apps.nlp_helpers import make_tiny_bert
from tests.helpers import REPO, Server

TINY = REPO / "apps" / "nlp" / "configs" / "tiny.yaml"
WORDS = {"negative": ["awful", "broken", "terrible", "useless"], "neutral": ["okay", "average", "fine", "plain"],
         "positive": ["great", "lovely", "perfect", "superb"]}


def review_csv(path, n: int = 360, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = list(WORDS)[i % 3]
        rows.append({"review_body": f"the {rng.choice(['kettle', 'lamp', 'chair'])} is {rng.choice(WORDS[label])}",
                     "stars": label, "id": i})
    pl.DataFrame(rows).write_csv(path)
    return path


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("nlp")
    bert = make_tiny_bert(root / "bert")
    data = review_csv(root / "reviews.csv")
    run_dir = root / "run"
    rc = main(["nlp", "fit", "--config", str(TINY), "--model.pretrained", str(bert), "--data.path", str(data),
               "--data.text_column", "review_body", "--data.label_column", "stars", "--data.val_fraction", "0.2",
               "--data.test_fraction", "0.2", "--optim.lr", "0.003", "--trainer.max_epochs", "3",
               "--trainer.limit_train_batches", "12", "--trainer.limit_val_batches", "1.0", "--int8_tolerance", "3",
               "--run_dir", str(run_dir)])  # 72 val rows: one flipped text moves macro_f1 by ~1.4 points
    assert rc == 0
    return {"dir": run_dir, "data": data, "root": root, "metrics": json.loads((run_dir / "metrics.json").read_text())}


def test_fit_learns_the_new_domain_and_writes_everything(run):
    d, m = run["dir"], run["metrics"]
    for name in ("model.onnx", "model.int8.onnx", "model_card.md", "config.yaml", "checkpoints/best.ckpt"):
        assert (d / name).is_file(), name
    assert m["test"]["n"] == 72  # 20% of each of the 3 classes of 120
    assert m["test"]["accuracy"] > 0.8  # chance is 1/3
    # the ONNX file scores the test split exactly like torch did
    assert m["test"]["accuracy"] == pytest.approx(m["test_torch"]["accuracy"], abs=1e-6)
    assert m["export"]["parity_max_abs_diff"] < 1e-4
    card = (d / "model_card.md").read_text()
    assert "## int8 quantization" in card and "Validation macro_f1" in card
    # the core's dynamic int8 copy, scored on the validation split against model.onnx
    assert m["int8"]["method"] == "dynamic" and m["int8"]["metric"] == "macro_f1"
    assert m["int8"]["loss_points"] <= m["int8"]["tolerance"] == 3.0
    # the TF-IDF baseline is scored on the same 72 test rows and shown beside the model
    baseline = m["baselines"]["tfidf_logistic_regression"]
    assert baseline["test"]["accuracy"] > 0.5 and baseline["C"] in (0.3, 1.0, 3.0, 10.0)  # chance is 1/3
    assert "## Baseline on the same split" in card and "TF-IDF + logistic regression" in card


def test_onnx_has_dynamic_batch_and_sequence_and_carries_the_tokenizer(run):
    proto = onnx.load(str(run["dir"] / "model.onnx"))
    for graph_input in proto.graph.input:
        dims = [d.dim_param for d in graph_input.type.tensor_type.shape.dim]
        assert dims == ["batch", "sequence"], graph_input.name
    model = load_model(run["dir"] / "model.onnx", "cpu", app="nlp")
    assert model.labels == ["negative", "neutral", "positive"]
    assert json.loads(model.meta["preprocess"]["tokenizer_json"])["model"]["type"] == "WordPiece"


def test_padding_does_not_change_a_prediction(run):
    model = load_model(run["dir"] / "model.onnx", "cpu", app="nlp")
    short = "the lamp is great"
    alone, _ = score_texts(model, [short])
    padded, _ = score_texts(model, [short, "the kettle is " + "very " * 20 + "average"], batch_size=2)
    np.testing.assert_allclose(alone[0], padded[0], atol=1e-5)


def test_int8_agrees_with_fp32(run):
    texts = pl.read_csv(run["data"])["review_body"].to_list()[:60]
    fp32, _ = score_texts(load_model(run["dir"] / "model.onnx", "cpu", app="nlp"), texts)
    int8, _ = score_texts(load_model(run["dir"] / "model.int8.onnx", "cpu", app="nlp"), texts)
    assert np.abs(fp32 - int8).max() < 0.1
    assert (fp32.argmax(1) == int8.argmax(1)).mean() >= 0.95


def test_evaluate_reproduces_the_fit_test_split(run, capsys):
    assert main(["nlp", "evaluate", "--model", str(run["dir"] / "model.onnx")]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == 72 and printed["accuracy"] == pytest.approx(run["metrics"]["test"]["accuracy"])


def test_evaluate_every_split_and_other_labelled_data(run, tmp_path, capsys):
    model = str(run["dir"] / "model.onnx")

    def evaluate(*args: str) -> dict:
        capsys.readouterr()
        assert main(["nlp", "evaluate", "--model", model, *args]) == 0
        return json.loads(capsys.readouterr().out)

    sizes = {split: evaluate("--split", split)["n"] for split in ("all", "train", "val", "test")}
    assert sizes == {"all": 360, "train": 216, "val": 72, "test": 72}
    other = review_csv(tmp_path / "more.csv", n=45, seed=5)
    printed = evaluate("--data.path", str(other))
    assert list(printed)[:5] == ["split", "split_chosen", "n", "data", "fingerprint"]
    assert printed["split"] == "all" and printed["n"] == 45 and printed["fingerprint"]["kind"] == "file"


def test_fit_finds_the_columns_of_a_new_table(run, tmp_path, capsys):
    """`sentence,label` (no `text` column) fits with the default `auto` columns; they travel in the model."""
    rows = pl.read_csv(run["data"]).head(120)
    data = tmp_path / "train.tsv"
    rows.select(sentence="review_body", label="stars").write_csv(data, separator="\t")
    run_dir = tmp_path / "auto"
    capsys.readouterr()
    assert main(["nlp", "fit", "--config", str(TINY), "--model.pretrained", str(run["root"] / "bert"),
                 "--data.path", str(data), "--trainer.max_epochs", "1", "--trainer.limit_train_batches", "2",
                 "--export_int8", "false", "--run_dir", str(run_dir)]) == 0
    err = capsys.readouterr().err
    assert err.count("deepapps: auto: --data.text_column sentence (the only text column)") == 1
    assert err.count("deepapps: auto: --data.label_column label (the only label column)") == 1
    meta = load_model(run_dir / "model.onnx", "cpu", app="nlp").meta
    assert meta["train"]["data_config"]["text_column"] == "sentence"
    assert meta["train"]["data_config"]["label_column"] == "label"
    card = (run_dir / "model_card.md").read_text()
    assert "auto: --data.text_column sentence" in card and "read as TSV" in card
    # evaluate and predict read the model's columns
    assert main(["nlp", "evaluate", "--model", str(run_dir / "model.onnx"), "--split", "all"]) == 0
    assert json.loads(capsys.readouterr().out)["n"] == 120
    assert main(["nlp", "predict", "--model", str(run_dir / "model.onnx"), str(data)]) == 0
    assert len(pl.read_csv(capsys.readouterr().out.encode())) == 120
    # two text columns: one line naming them and the option, exit 2, no run folder
    rows.select(title="review_body", summary="review_body", label="stars").write_csv(tmp_path / "two.csv")
    assert main(["nlp", "fit", "--config", str(TINY), "--model.pretrained", str(run["root"] / "bert"),
                 "--data.path", str(tmp_path / "two.csv"), "--run_dir", str(tmp_path / "two")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert errors == [f"deepapps: error: {tmp_path / 'two.csv'}: cannot tell the text column: title, summary each "
                      "holds text; set --data.text_column"]
    assert not (tmp_path / "two").exists()


def test_predict_needs_neither_torch_nor_transformers(run, tmp_path):
    lines = tmp_path / "texts.txt"
    lines.write_bytes(b"the chair is superb\n\xff\xfe broken bytes\n   \nthe lamp is awful\n")
    out = tmp_path / "pred.jsonl"
    code = (
        "import sys; from deepapps.core.cli import main\n"
        f"rc = main(['nlp', 'predict', '--model', {str(run['dir'] / 'model.onnx')!r}, '--text', 'the kettle is great',"
        f" '--text', '', {str(lines)!r}, '--out', {str(out)!r}])\n"
        "assert rc == 0, rc\n"
        "bad = [m for m in ('torch', 'transformers') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["source"] for r in rows] == ["--text", "--text"] + [f"{lines}:{i}" for i in (1, 2, 3, 4)]
    errors = [r["error"] for r in rows]
    assert errors[1] == "empty text" and "not UTF-8" in errors[3] and errors[4] == "empty text"
    assert not errors[0] and not errors[2] and not errors[5]
    ok = rows[0]
    assert ok["label"] in ("negative", "neutral", "positive")
    assert ok["p_negative"] + ok["p_neutral"] + ok["p_positive"] == pytest.approx(1.0, abs=1e-4)
    assert "3 of 6 inputs failed" in done.stderr


def test_predict_table_column_and_long_text_warning(run, tmp_path, capsys):
    table = tmp_path / "in.parquet"
    pl.DataFrame({"body": ["the lamp is lovely", "the chair is " + "really " * 80 + "awful"]}).write_parquet(table)
    assert main(["nlp", "predict", "--model", str(run["dir"] / "model.onnx"), str(table), "--column", "body"]) == 0
    captured = capsys.readouterr()
    assert len(pl.read_csv(captured.out.encode())) == 2
    assert "1 texts longer than 32 tokens were truncated" in captured.err


@pytest.mark.parametrize("argv, message", [
    (["predict", "{model}", "{data}", "--column", "nope"], "no column 'nope'"),
    (["predict", "{model}", "missing.txt"], "missing.txt: no such file"),
    (["evaluate", "{model}", "--data", "{unknown}"], "label 'meh' is not one of the model's labels"),
    (["predict", "{model}"], "nothing to predict"),
])
def test_bad_input_is_one_line_and_exit_2(run, tmp_path, capsys, argv, message):
    unknown = tmp_path / "unknown.csv"
    pl.DataFrame({"review_body": ["fine", "great"], "stars": ["neutral", "meh"]}).write_csv(unknown)
    values = {"{model}": f"--model={run['dir'] / 'model.onnx'}", "{data}": str(run["data"]), "{unknown}": str(unknown)}
    assert main(["nlp", *[values.get(a, a) for a in argv]]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert len(errors) == 1 and errors[0].startswith("deepapps: error: ") and message in errors[0]


def test_another_apps_command_refuses_the_model(run, capsys):
    assert main(["vision", "predict", "--model", str(run["dir"] / "model.onnx"), "x.png"]) == 2
    assert "made by the nlp app" in capsys.readouterr().err


def test_serve_pads_items_of_different_lengths_together(run):
    server = Server(run["dir"] / "model.onnx", "--max-wait-ms", "50")
    try:
        texts = ["the lamp is great", "the chair is " + "quite " * 10 + "awful", "   "]
        status, body = server.predict({"instances": [{"text": t} for t in texts]})
        assert status == 200
        preds = body["predictions"]
        assert preds[2] == {"error": "instance 2: text: empty"}
        model = load_model(run["dir"] / "model.onnx", "cpu", app="nlp")
        expected, _ = score_texts(model, texts[:2])
        for pred, probs in zip(preds[:2], expected):
            assert pred["probabilities"]["positive"] == pytest.approx(float(probs[2]), abs=1e-5)
    finally:
        server.stop()


def test_explain_writes_html_and_scores_every_token(run, tmp_path, capsys):
    out = tmp_path / "why"
    assert main(["nlp", "explain", "--model", str(run["dir"] / "model.onnx"), "the lamp is great",
                 "--out", str(out), "--steps", "64"]) == 0
    line = next(x for x in capsys.readouterr().err.splitlines() if "great[" in x)
    assert line.split(" (")[0] in ("negative", "neutral", "positive") and "lamp[" in line
    page = (out / "explain.html").read_text()
    assert page.count("<span") == len(re.findall(r"\[[+-]\d", line)) == 6  # [CLS] the lamp is great [SEP]
    tokens = json.loads((out / "attributions.json").read_text())[0]
    assert tokens["tokens"][0] == "[CLS]" and len(tokens["scores"]) == 6
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["all_agree_with_onnx"] is True and manifest["max_abs_delta"] < 0.05
def test_quantize_command_writes_int8_and_its_accuracy_change(run, tmp_path, capsys):
    out = tmp_path / "q.int8.onnx"
    assert main(["nlp", "quantize", "--model", str(run["dir"] / "model.onnx"), "--out", str(out)]) == 0
    result = json.loads(capsys.readouterr().out)
    assert out.is_file() and result["n"] == 72 and result["split"] == "test"
    assert result["fp32"]["accuracy"] == pytest.approx(run["metrics"]["test"]["accuracy"])
    assert result["change"]["accuracy"] == pytest.approx(result["int8"]["accuracy"] - result["fp32"]["accuracy"])
    assert result["size_mb"]["int8"] < result["size_mb"]["fp32"]
    assert load_model(out, "cpu", app="nlp").meta["export"]["precision"].startswith("int8")


def test_export_int8_writes_the_measured_int8_copy_beside_the_export(run, tmp_path, capsys):
    out = tmp_path / "exported.onnx"
    ckpt = run["dir"] / "checkpoints" / "best.ckpt"
    # 72 validation rows: one flipped text is ~1.4 points, so the gate is widened for the tiny model
    assert main(["nlp", "export", "--ckpt", str(ckpt), "--out", str(out), "--int8", "--int8_tolerance", "3"]) == 0
    assert capsys.readouterr().out.strip().endswith("exported.onnx")
    int8 = tmp_path / "exported.int8.onnx"
    meta = load_model(int8, "cpu", app="nlp").meta["export"]
    assert meta["precision"].startswith("int8 (dynamic")
    record = meta["int8"]  # measured on the validation carve against the fp32 parent, in the file itself
    assert record["metric"] == "macro_f1"  # the app's monitor (val/macro_f1), scored on the validation carve
    assert record["loss_points"] == pytest.approx(100 * (record["fp32"] - record["int8"]), abs=1e-3)
    assert record["loss_points"] <= 3
