"""Batch scoring on Spark: a pandas UDF that opens one ONNX Runtime session per executor process.

    deepapps vision predict --engine spark --model model.onnx --out scored.parquet images.parquet
    # or, from a PySpark job:
    from deepapps.core.spark import score_dataframe
    scored = score_dataframe(spark.read.parquet("s3a://bucket/images/"), "model.onnx", column="image")

The input column holds what the app's HTTP adapter accepts per item (image bytes for vision);
every other column is kept. Output columns: `prediction` (JSON) and `error` (empty when fine).
Paths are handed to Spark as they are, so `hdfs://`, `s3a://` and local paths work alike; the
model file is fetched with fsspec and shipped to the executors with `SparkContext.addFile`.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Iterator
from functools import lru_cache

from deepapps.core.errors import DeepappsError

OUTPUT_COLUMNS = ("prediction", "error")


def score_dataframe(frame, model_path: str, column: str | None, batch_size: int = 256):
    """A Spark DataFrame with `prediction` and `error` columns added (lazy, like any transformation).

    `column` holds one item per row; None hands the app each row as a dict of its columns
    (a transaction, for fraud)."""
    from pyspark import SparkFiles
    from pyspark.sql.types import StringType, StructField, StructType

    if column is not None and column not in frame.columns:
        raise DeepappsError(f"input has no column {column!r} (columns: {frame.columns})")
    spark = frame.sparkSession
    local = _local_copy(model_path)
    spark.sparkContext.addFile(local)
    name = os.path.basename(local)
    schema = StructType(frame.schema.fields + [StructField(c, StringType()) for c in OUTPUT_COLUMNS])

    def score(batches: Iterator) -> Iterator:
        model, runtime = _open(SparkFiles.get(name))
        for batch in batches:
            for start in range(0, len(batch), batch_size):
                chunk = batch.iloc[start : start + batch_size].copy()
                items = chunk[column].tolist() if column is not None else chunk.to_dict("records")
                chunk["prediction"], chunk["error"] = _score_items(model, runtime, items)
                yield chunk

    return frame.mapInPandas(score, schema)


def score_parquet(input_path: str, output_path: str, model_path: str, column: str | None,
                  master: str = "local[*]") -> int:
    """Read Parquet, score, write Parquet; returns the number of rows written."""
    from pyspark.sql import SparkSession

    # local workers must run this interpreter (with onnxruntime), not whatever `python3` is on PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    spark = SparkSession.builder.master(master).appName("deepapps-score").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        scored = score_dataframe(spark.read.parquet(input_path), model_path, column)
        scored.write.mode("overwrite").parquet(output_path)
        return spark.read.parquet(output_path).count()
    finally:
        spark.stop()


def _score_items(model, runtime, values: list) -> tuple[list[str | None], list[str]]:
    decoded, predictions, errors = [], [None] * len(values), [""] * len(values)
    for i, value in enumerate(values):
        try:
            decoded.append((i, runtime.decode_item(model, bytes(value) if isinstance(value, bytearray) else value)))
        except DeepappsError as exc:
            errors[i] = str(exc)
    if decoded:
        for (i, _), result in zip(decoded, runtime.run_items(model, [x for _, x in decoded])):
            predictions[i] = json.dumps(result)
    return predictions, errors


@lru_cache(maxsize=4)
def _open(path: str):
    """One session per executor process and model file."""
    from deepapps.core.registry import get_app
    from deepapps.core.runtime.session import load_model

    model = load_model(path, provider="auto")
    return model, get_app(model.app).load_serving()


def _local_copy(path: str) -> str:
    """A local file for `path` (fetched with fsspec when it is a URL such as s3:// or hdfs://)."""
    if "://" not in path or path.startswith("file://"):
        return path.removeprefix("file://")
    import fsspec

    target = os.path.join(tempfile.mkdtemp(prefix="deepapps-"), os.path.basename(path))
    with fsspec.open(path, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    return target
