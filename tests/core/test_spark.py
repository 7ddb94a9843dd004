"""Spark local mode: the pandas UDF scores a Parquet dataset like the local predict does."""

from __future__ import annotations

import json

import polars as pl
import pytest

from deepapps.core.cli import main

pytest.importorskip("pyspark")


@pytest.mark.slow
def test_spark_scores_parquet_like_local_predict(tiny_run, image_folder, tmp_path):
    paths = sorted(image_folder.rglob("*.png"))
    rows = pl.DataFrame({"id": list(range(len(paths))), "image": [p.read_bytes() for p in paths]})
    rows = rows.vstack(pl.DataFrame({"id": [999], "image": [b"not an image"]}))
    rows.write_parquet(tmp_path / "images.parquet")
    model = str(tiny_run / "model.onnx")
    out = tmp_path / "scored"
    assert main(["vision", "predict", "--engine", "spark", "--spark-master", "local[2]", "--model", model,
                 "--out", str(out), str(tmp_path / "images.parquet")]) == 0
    scored = pl.read_parquet(out / "*.parquet").sort("id")
    assert scored.columns == ["id", "image", "prediction", "error"] and len(scored) == len(paths) + 1
    assert "not an image" in scored.filter(pl.col("id") == 999)["error"][0]
    assert main(["vision", "predict", "--model", model, "--out", str(tmp_path / "local.csv"), str(image_folder)]) == 0
    local = pl.read_csv(tmp_path / "local.csv")["label"].to_list()
    spark_labels = [json.loads(p)["label"] for p in scored.filter(pl.col("id") < 999)["prediction"]]
    assert spark_labels == local
