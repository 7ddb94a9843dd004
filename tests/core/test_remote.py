"""Remote data and models through fsspec, against a real S3-compatible server on loopback (moto).

fit reads its data from s3:// and writes its run folder there; predict and evaluate of fraud, nlp
and vision read the model and the inputs from s3:// and write their output to s3://; `deepapps
serve --model s3://...` starts and answers; a missing bucket or key and bad or missing credentials
are one line naming the URL, exit 2.
"""

from __future__ import annotations

import json
import logging
import subprocess
import sys
from pathlib import Path

import polars as pl
import pytest

from deepapps.apps.finance.fraud.synth import generate
from deepapps.apps.nlp.table import builtin_reviews
from deepapps.core.cli import main
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.runtime import remote
from tests.helpers import REPO, Server, assert_one_line_error, free_port

pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")

BUCKET = "deepapps-test"
FRAUD_TINY = REPO / "apps" / "finance" / "fraud" / "configs" / "tiny.yaml"
NLP_TINY = REPO / "apps" / "nlp" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """A moto S3 server on a free loopback port, the AWS environment pointing at it, one bucket,
    and a fresh deepapps cache. Yields the s3fs filesystem."""
    import s3fs

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_DEFAULT_REGION": "us-east-1",
           "AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_EC2_METADATA_DISABLED": "true",
           "DEEPAPPS_CACHE": str(tmp_path_factory.mktemp("cache"))}
    patch = pytest.MonkeyPatch()
    for key, value in env.items():
        patch.setenv(key, value)
    s3fs.S3FileSystem.clear_instance_cache()
    fs = s3fs.S3FileSystem()
    fs.mkdir(BUCKET)
    yield fs
    s3fs.S3FileSystem.clear_instance_cache()
    patch.undo()
    server.stop()


def url(key: str) -> str:
    return f"s3://{BUCKET}/{key}"


@pytest.fixture(scope="module")
def fraud_run(s3, tmp_path_factory):
    """A tiny fraud fit whose data is on S3 and whose run folder is written to S3."""
    local = tmp_path_factory.mktemp("fraud") / "transactions.csv"
    generate(4000, 0.05, seed=1).write_csv(local)
    s3.put_file(str(local), url("fraud/transactions.csv"))
    new = local.with_name("new.csv")
    generate(500, 0.05, seed=7).drop("is_fraud").write_csv(new)
    s3.put_file(str(new), url("fraud/new.csv"))
    code = main(["fraud", "fit", "--config", str(FRAUD_TINY), "--data.path", url("fraud/transactions.csv"),
                 "--baselines", "false", "--trainer.max_epochs", "1", "--run_dir", url("runs/fraud")])
    assert code == 0
    return url("runs/fraud")


def test_is_remote_tells_urls_from_local_paths():
    assert remote.is_remote("s3://b/k") and remote.is_remote("hdfs://nn:8020/x") and remote.is_remote("https://h/m.onnx")
    assert not remote.is_remote("data/x.csv") and not remote.is_remote(Path("/tmp/x"))
    assert not remote.is_remote("file:///tmp/x") and not remote.is_remote("builtin:transactions")


def test_fit_reads_s3_data_and_uploads_the_run(s3, fraud_run, capsys):
    names = {p.rsplit("/", 1)[-1] for p in s3.find(fraud_run)}
    assert {"model.onnx", "metrics.json", "config.yaml", "model_card.md", "best.ckpt"} <= names, names
    assert not [n for n in names if n.endswith(".tmp")]  # every temporary object was moved into place
    metrics = json.loads(s3.cat(f"{fraud_run}/metrics.json"))
    assert metrics["test"]["n"] == 600  # the 4000 rows split 70/15/15 as fit splits a local file
    assert "s3://" in s3.cat(f"{fraud_run}/config.yaml").decode()  # the run records the data's URL


def test_fraud_predict_and_evaluate_from_s3_to_s3(s3, fraud_run, capsys):
    model = f"{fraud_run}/model.onnx"
    assert main(["fraud", "predict", "--model", model, url("fraud/new.csv"), "--out", url("out/fraud.parquet")]) == 0
    out = pl.read_parquet(s3.cat(url("out/fraud.parquet")))
    assert out.height == 500 and {"score", "decision", "error"} <= set(out.columns)
    assert out["score"].null_count() == 0 and out["score"].is_between(0, 1).all()
    capsys.readouterr()
    args = ["fraud", "evaluate", "--model", model, "--data.path", url("fraud/transactions.csv")]
    assert main([*args, "--out", url("out/fraud_metrics.json")]) == 0
    printed = json.loads(capsys.readouterr().out)
    stored = json.loads(s3.cat(url("out/fraud_metrics.json")))
    assert stored == printed
    assert printed["split"] == "test" and printed["n"] == 600  # the fit's own data: its test split
    assert printed["data"] == url("fraud/transactions.csv")  # named by the URL, not the cache path
    fit_metrics = json.loads(s3.cat(f"{fraud_run}/metrics.json"))
    assert printed["auprc"] == pytest.approx(fit_metrics["test"]["auprc"], abs=1e-6)


@pytest.fixture(scope="module")
def nlp_model(s3, tmp_path_factory) -> str:
    from tests.apps.nlp_helpers import make_tiny_bert

    root = tmp_path_factory.mktemp("nlp")
    bert = make_tiny_bert(root / "bert")
    code = main(["nlp", "fit", "--config", str(NLP_TINY), "--model.pretrained", str(bert), "--export_int8", "false",
                 "--trainer.max_epochs", "1", "--run_dir", str(root / "run")])
    assert code == 0
    s3.put_file(str(root / "run" / "model.onnx"), url("nlp/model.onnx"))
    return url("nlp/model.onnx")


def test_nlp_predict_and_evaluate_from_s3_to_s3(s3, nlp_model, tmp_path, capsys):
    texts = tmp_path / "texts.txt"
    texts.write_text("the kettle is great\nthe lamp is broken\n\n")
    s3.put_file(str(texts), url("nlp/texts.txt"))
    reviews = tmp_path / "reviews.csv"
    builtin_reviews(120, seed=5).write_csv(reviews)
    s3.put_file(str(reviews), url("nlp/reviews.csv"))
    code = main(["nlp", "predict", "--model", nlp_model, url("nlp/texts.txt"), "--out", url("out/nlp.csv")])
    assert code == 0  # the empty line is an error row, not a failure of the run
    out = pl.read_csv(s3.cat(url("out/nlp.csv")))
    assert out.height == 3
    assert out["source"].to_list() == [url("nlp/texts.txt:1"), url("nlp/texts.txt:2"), url("nlp/texts.txt:3")]
    assert not out["error"][0] and not out["error"][1] and out["error"][2] == "empty text"
    assert out["label"][0] in ("positive", "negative") and out["label"][2] is None
    capsys.readouterr()
    code = main(["nlp", "evaluate", "--model", nlp_model, "--data.path", url("nlp/reviews.csv"),
                 "--out", url("out/nlp_metrics.json")])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["split"] == "all" and printed["n"] == 120  # data the model never saw: every row
    assert json.loads(s3.cat(url("out/nlp_metrics.json"))) == printed


def test_vision_predict_and_evaluate_a_folder_on_s3(s3, tiny_run, image_folder, tmp_path, capsys):
    s3.put(str(image_folder) + "/", url("images/"), recursive=True)
    s3.put_file(str(tiny_run / "model.onnx"), url("vision/model.onnx"))
    model = url("vision/model.onnx")
    assert main(["vision", "predict", "--model", model, url("images"), "--out", url("out/vision.jsonl")]) == 0
    out = pl.read_ndjson(s3.cat(url("out/vision.jsonl")))
    n_images = len(list(image_folder.rglob("*.png")))
    assert out.height == n_images and (out["error"].fill_null("") == "").all()
    assert all(p.startswith(url("images/")) for p in out["path"])  # the URLs, not the cache paths
    code = main(["vision", "predict", "--model", str(tiny_run / "model.onnx"), str(image_folder),
                 "--out", str(tmp_path / "local.jsonl")])
    assert code == 0
    same = pl.read_ndjson(tmp_path / "local.jsonl")
    assert out["label"].to_list() == same["label"].to_list()  # same predictions as from the local folder
    capsys.readouterr()
    assert main(["vision", "evaluate", "--model", model, "--data.path", url("images"), "--split", "all"]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["n"] == n_images and printed["data"] == url("images")


def test_serve_a_model_on_s3(s3, fraud_run):
    server = Server(f"{fraud_run}/model.onnx")  # returns once /readyz answers 200
    try:
        status, body = server.get("/readyz")
        assert status == 200
        row = json.loads(generate(1, 0.0, seed=3).drop("is_fraud").write_json())[0]  # as a client sends it
        status, answer = server.predict({"instances": [row]})
        assert status == 200 and 0 <= answer["predictions"][0]["score"] <= 1, answer
    finally:
        server.stop()


def test_a_changed_object_is_fetched_again(s3, tmp_path):
    first = tmp_path / "a.csv"
    first.write_text("x,y\n1,2\n")
    s3.put_file(str(first), url("cache/a.csv"))
    cached = remote.cached_file(url("cache/a.csv"))
    assert cached.read_text() == "x,y\n1,2\n" and cached.is_relative_to(remote.cache_root())
    first.write_text("x,y\n1,2\n3,4\n")
    s3.put_file(str(first), url("cache/a.csv"))
    assert remote.cached_file(url("cache/a.csv")).read_text() == "x,y\n1,2\n3,4\n"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "deepapps.core.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("model, needle", [
    ("s3://no-such-bucket-deepapps/model.onnx", "s3://no-such-bucket-deepapps/model.onnx: no such bucket"),
    (url("nothing/here.onnx"), url("nothing/here.onnx") + ": no such file or folder"),
])
def test_missing_bucket_or_key_is_one_line(s3, model, needle):
    assert_one_line_error(_cli("fraud", "predict", "--model", model, url("fraud/new.csv"), "--out", "x.csv"), needle)


def test_missing_data_and_output_bucket_are_one_line(s3, fraud_run):
    model = f"{fraud_run}/model.onnx"
    result = _cli("fraud", "evaluate", "--model", model, "--data.path", url("fraud/missing.csv"))
    assert_one_line_error(result, url("fraud/missing.csv") + ": no such file")
    result = _cli("fraud", "predict", "--model", model, url("fraud/new.csv"), "--out", "s3://no-such-bucket-deepapps/o.csv")
    assert_one_line_error(result, "s3://no-such-bucket-deepapps/o.csv: no such bucket")


def test_tables_read_urls_and_name_them(s3, tmp_path):
    from deepapps.core.data.tables import read_table, table_schema

    path = tmp_path / "t.tsv"
    path.write_text("a\tb\n1\tx\n2\ty\n")
    s3.put_file(str(path), url("tables/t.tsv"))
    assert read_table(url("tables/t.tsv")).to_dicts() == [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]
    assert table_schema(url("tables/t.tsv")).names() == ["a", "b"]
    with pytest.raises(DataError, match=r"^s3://deepapps-test/tables/t.tsv: no column 'c'"):
        read_table(url("tables/t.tsv"), columns=["c"])
    with pytest.raises(DataError, match=r"^s3://deepapps-test/tables/none.csv: no such file or folder$"):
        read_table(url("tables/none.csv"))


def test_bad_and_missing_credentials_are_one_line(s3, fraud_run, monkeypatch):
    import moto.settings
    import s3fs

    model = f"{fraud_run}/model.onnx"
    monkeypatch.setattr(moto.settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # moto now checks the keys
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAWRONGWRONGWRONG0")
    s3fs.S3FileSystem.clear_instance_cache()
    try:
        with pytest.raises(ConfigError, match=rf"^{model}: access denied; check the credentials"):
            remote.localize(model)
    finally:
        monkeypatch.undo()
        s3fs.S3FileSystem.clear_instance_cache()
    env = {"AWS_SHARED_CREDENTIALS_FILE": "/nonexistent", "AWS_CONFIG_FILE": "/nonexistent"}
    result = subprocess.run([sys.executable, "-m", "deepapps.core.cli", "fraud", "predict", "--model", model,
                             url("fraud/new.csv"), "--out", "x.csv"], capture_output=True, text=True, timeout=120,
                            env={k: v for k, v in __import__("os").environ.items()
                                 if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")} | env)
    assert_one_line_error(result, f"{model}: no credentials found", "AWS_ACCESS_KEY_ID")


def test_hdfs_goes_through_fsspec():
    """hdfs:// is one more fsspec URL: without libhdfs / a Hadoop classpath it fails in one line naming it."""
    with pytest.raises((ConfigError, DataError), match=r"^hdfs://namenode:8020/data/x.csv: "):
        remote.localize("hdfs://namenode:8020/data/x.csv")


def test_model_read_over_http(s3, fraud_run, tmp_path):
    """https?:// reads: a model served by a plain HTTP server is fetched, cached and loaded."""
    import functools
    import http.server
    import threading

    from deepapps.core.runtime.session import load_model

    s3.get_file(f"{fraud_run}/model.onnx", str(tmp_path / "model.onnx"))
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

    handler = functools.partial(Quiet, directory=str(tmp_path))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        model = load_model(f"{base}/model.onnx", "cpu", app="fraud")
        assert model.app == "fraud" and model.path.is_relative_to(remote.cache_root())
        assert model.path.read_bytes() == (tmp_path / "model.onnx").read_bytes()
        with pytest.raises(Exception, match=rf"^{base}/missing.onnx: no such file or folder$"):
            load_model(f"{base}/missing.onnx", "cpu")
    finally:
        httpd.shutdown()


def test_export_a_checkpoint_on_s3_to_s3(s3, fraud_run, capsys):
    """Train-side artifacts too: `export --ckpt s3://... --out s3://...` writes a model predict can load."""
    from deepapps.core.runtime.session import load_model

    capsys.readouterr()
    code = main(["fraud", "export", "--ckpt", f"{fraud_run}/checkpoints/best.ckpt", "--out", url("exported/m.onnx")])
    assert code == 0 and capsys.readouterr().out.strip() == url("exported/m.onnx")
    exported, fitted = load_model(url("exported/m.onnx"), "cpu"), load_model(f"{fraud_run}/model.onnx", "cpu")
    assert exported.contract.classification.threshold == pytest.approx(fitted.contract.classification.threshold)
    assert exported.contract.preprocess == fitted.contract.preprocess
