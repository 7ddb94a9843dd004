"""Spark local mode: `predict --engine spark` scores a Parquet dataset like the local predict does,
for every app's model, row for row; a bad row is an error row; Parquet in, Parquet out.

One SparkSession (local[2]) serves the whole module: `score_parquet` uses the active session and
leaves it running, so each test pays for a job, not for a JVM.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepapps.core.cli import main

pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")
pytest.importorskip("pandas")
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("Spark needs a Java runtime (JDK 17+)", allow_module_level=True)


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("deepapps-tests")
               .config("spark.sql.shuffle.partitions", "2").config("spark.ui.enabled", "false").getOrCreate())
    yield session
    session.stop()


def spark_predict(app: str, model: Path, rows: pl.DataFrame, folder: Path, *options: str) -> pl.DataFrame:
    """Write `rows` to Parquet, score them with `--engine spark`, read the Parquet output back (by id)."""
    source, out = folder / "in.parquet", folder / "scored"
    rows.write_parquet(source)
    assert main([app, "predict", "--engine", "spark", "--spark-master", "local[2]", "--model", str(model),
                 "--out", str(out), *options, str(source)]) == 0
    scored = pl.read_parquet(out / "*.parquet").sort("id")
    assert scored.columns == [*rows.columns, "prediction", "error"] and len(scored) == len(rows)
    return scored


def predictions(scored: pl.DataFrame) -> list[dict]:
    """The good rows' predictions (JSON decoded); every good row has one and no error."""
    good = scored.filter(pl.col("error") == "")
    assert good["prediction"].null_count() == 0
    return [json.loads(p) for p in good["prediction"]]


def error_of(scored: pl.DataFrame, row_id: int) -> str:
    row = scored.filter(pl.col("id") == row_id)
    assert row["prediction"][0] is None
    return row["error"][0]


def local_predict(app: str, model: Path, folder: Path, *inputs: str) -> pl.DataFrame:
    out = folder / "local.parquet"
    assert main([app, "predict", "--model", str(model), "--out", str(out), *inputs]) == 0
    return pl.read_parquet(out)


def assert_same_classes(remote: list[dict], local: pl.DataFrame) -> None:
    """Spark's predictions equal local predict's rows: labels, and each class probability (`p_<label>`
    columns) or the top one (`probability`)."""
    assert [p["label"] for p in remote] == local["label"].to_list()
    names = list(remote[0]["probabilities"])
    if all(f"p_{n}" in local.columns for n in names):
        for n in names:
            assert np.allclose([p["probabilities"][n] for p in remote], local[f"p_{n}"].to_list(), atol=2e-6), n
    else:
        assert np.allclose([max(p["probabilities"].values()) for p in remote], local["probability"].to_list(),
                           atol=2e-6)


@pytest.mark.parametrize("name", ["vision", "healthcare"])
def test_image_models_on_spark_equal_local_predict(spark, app_models, image_folder, name, tmp_path):
    paths = sorted(image_folder.rglob("*.png"))[::3]
    rows = pl.DataFrame({"id": list(range(len(paths))), "image": [p.read_bytes() for p in paths]})
    rows = rows.vstack(pl.DataFrame({"id": [999], "image": [b"not an image"]}))
    scored = spark_predict(name, app_models[name], rows, tmp_path)
    assert "image" in error_of(scored, 999)
    local = local_predict(name, app_models[name], tmp_path, *map(str, paths))
    remote = predictions(scored)
    assert_same_classes(remote, local)


def test_ecg_model_on_spark_equals_local_predict(spark, app_models, tmp_path):
    from deepapps.apps.healthcare.synthetic import synthetic_ecg

    signals, _ = synthetic_ecg(6, 140, seed=1)
    table = pl.DataFrame({f"s{i}": signals[:, i].astype(float) for i in range(140)})
    table.write_csv(tmp_path / "signals.csv")
    rows = pl.DataFrame({"id": list(range(len(signals))) + [999],
                         "signal": [list(map(float, s)) for s in signals] + [[1.0, float("nan")]]})
    scored = spark_predict("healthcare", app_models["ecg"], rows, tmp_path, "--spark-column", "signal")
    assert "signal" in error_of(scored, 999)
    local = local_predict("healthcare", app_models["ecg"], tmp_path, str(tmp_path / "signals.csv"))
    remote = predictions(scored)
    assert_same_classes(remote, local)


def test_nlp_model_on_spark_equals_local_predict(spark, app_models, tmp_path):
    texts = ["a great product", "terrible, broke after a day", "it is fine I guess", "loved every minute"]
    (tmp_path / "texts.txt").write_text("\n".join(texts) + "\n")
    rows = pl.DataFrame({"id": list(range(len(texts))) + [999], "text": texts + ["   "]})
    scored = spark_predict("nlp", app_models["nlp"], rows, tmp_path)
    assert "empty" in error_of(scored, 999)
    local = local_predict("nlp", app_models["nlp"], tmp_path, str(tmp_path / "texts.txt"))
    remote = predictions(scored)
    assert_same_classes(remote, local)


def test_fraud_model_on_spark_equals_local_predict(spark, app_models, tmp_path):
    from deepapps.apps.finance.fraud.synth import generate

    table = generate(40, 0.2, seed=3).drop("is_fraud")
    column = next(c for c, t in table.schema.items() if t.is_float())
    bad = table.head(1).with_columns(pl.lit(float("inf")).alias(column))
    rows = pl.concat([table, bad]).with_row_index("id").with_columns(pl.col("id").cast(pl.Int64))
    rows = rows.with_columns(pl.when(pl.col("id") == len(table)).then(999).otherwise(pl.col("id")).alias("id"))
    scored = spark_predict("fraud", app_models["fraud"], rows, tmp_path)
    assert column in error_of(scored, 999) or "inf" in error_of(scored, 999)
    table.write_parquet(tmp_path / "transactions.parquet")
    local = local_predict("fraud", app_models["fraud"], tmp_path, str(tmp_path / "transactions.parquet"))
    remote = predictions(scored)
    assert len(remote) == len(local) == len(table)
    assert np.allclose([p["score"] for p in remote], local["score"].to_list(), atol=2e-6)
    assert [p["decision"] for p in remote] == local["decision"].to_list()


def test_forecast_model_on_spark_equals_local_predict(spark, app_models, tmp_path):
    from deepapps.apps.finance.forecast.series import read_frame
    from deepapps.core.runtime.session import load_model

    kind = load_model(str(app_models["forecast"])).contract.forecast
    pre = load_model(str(app_models["forecast"])).contract.preprocess
    frame = read_frame("builtin:co2").tail(200)
    histories, lasts, ends = [], [], [200, 180, 150]
    for end in ends:  # three series: the same history cut at three points
        part = frame.head(end)
        part.write_csv(tmp_path / f"history{end}.csv")
        histories.append(part[kind.targets[0]].tail(kind.look_back).cast(pl.Float64).to_list())
        lasts.append(str(part[pre["timestamp"]].cast(pl.Datetime("us"))[-1]).replace(" ", "T"))
    rows = pl.DataFrame({"id": [0, 1, 2, 999], "history": [*histories, [1.0, 2.0]],
                         "last_timestamp": [*lasts, lasts[0]]})
    scored = spark_predict("forecast", app_models["forecast"], rows, tmp_path)
    assert "history" in error_of(scored, 999)
    remote = predictions(scored)
    for end, result in zip(ends, remote):
        local = local_predict("forecast", app_models["forecast"], tmp_path, str(tmp_path / f"history{end}.csv"))
        assert np.allclose(np.asarray(result["p50"]).ravel(), local.sort("step")["p50"].to_numpy(), atol=1e-4)
        assert result["timestamps"] == [str(t) for t in local.sort("step")["timestamp"].to_list()]
