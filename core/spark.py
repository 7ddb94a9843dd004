"""Batch scoring on Spark: a pandas UDF that opens one ONNX Runtime session per executor process.

    deepapps vision predict --engine spark --model model.onnx --out scored.parquet images.parquet
    # or, from a PySpark job:
    from deepapps.core.spark import score_dataframe
    scored = score_dataframe(spark.read.parquet("s3a://bucket/images/"), "model.onnx", column="image")

The input column holds what the app's HTTP adapter accepts per item (image bytes for vision, a
string for nlp; a list, such as an ECG's samples, becomes `{column: [...]}`);
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
    local = _shipped_copy(_local_copy(model_path))
    name = os.path.basename(local)
    if not any(f.endswith("/" + name) for f in spark.sparkContext.listFiles):  # added once per session
        spark.sparkContext.addFile(local)
    schema = StructType(frame.schema.fields + [StructField(c, StringType()) for c in OUTPUT_COLUMNS])

    def score(batches: Iterator) -> Iterator:
        model, runtime = _open(SparkFiles.get(name))
        for batch in batches:
            for start in range(0, len(batch), batch_size):
                chunk = batch.iloc[start : start + batch_size].copy()
                items = ([_item(column, _plain(v)) for v in chunk[column]] if column is not None else
                         [{k: _plain(v) for k, v in row.items()} for row in chunk.to_dict("records")])
                chunk["prediction"], chunk["error"] = _score_items(model, runtime, items)
                yield chunk

    return frame.mapInPandas(score, schema)


def score_parquet(input_path: str, output_path: str, model_path: str, column: str | None,
                  master: str = "local[*]") -> int:
    """Read Parquet, score, write Parquet; returns the number of rows written.

    An active SparkSession (a PySpark job, a test) is used as it is and left running; otherwise one
    is started on `master` and stopped at the end."""
    from pyspark.sql import SparkSession

    # local workers must run this interpreter (with onnxruntime), not whatever `python3` is on PATH
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    spark = active or SparkSession.builder.master(master).appName("deepapps-score").getOrCreate()
    spark.sparkContext.setLogLevel("ERROR")
    try:
        scored = score_dataframe(spark.read.parquet(input_path), model_path, column)
        scored.write.mode("overwrite").parquet(output_path)
        return spark.read.parquet(output_path).count()
    finally:
        if active is None:
            spark.stop()


def _item(column: str, value):
    """A column's cell as a request item: bytes and text as they are (an image, a review); a list
    (an ECG's samples) as the JSON object naming it, `{column: [...]}`."""
    return {column: value} if isinstance(value, list) else value


def _plain(value):
    """A pandas cell as the JSON-like value a request item holds: numpy scalars and arrays (Parquet
    lists, nested too) become Python numbers and lists; NaN stays a float; bytearray becomes bytes."""
    if isinstance(value, bytearray):
        return bytes(value)
    if hasattr(value, "tolist") and not isinstance(value, (bytes, str)):  # numpy scalar or array
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def _score_items(model, runtime, values: list) -> tuple[list[str | None], list[str]]:
    decoded, predictions, errors = [], [None] * len(values), [""] * len(values)
    for i, value in enumerate(values):
        try:
            decoded.append((i, runtime.decode_item(model, value)))
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


def _shipped_copy(path: str) -> str:
    """A copy of the model named by its content (`<sha256[:16]>-model.onnx`): Spark ships files by
    name, and one session may score several models that are all called model.onnx."""
    import hashlib
    import shutil

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    name = f"{digest.hexdigest()[:16]}-{os.path.basename(path)}"
    target = os.path.join(tempfile.gettempdir(), "deepapps-spark", name)
    if not os.path.isfile(target):
        os.makedirs(os.path.dirname(target), exist_ok=True)
        partial = f"{target}.{os.getpid()}.part"
        shutil.copyfile(path, partial)
        os.replace(partial, target)
    return target


def _local_copy(path: str) -> str:
    """A local file for `path` (fetched with fsspec when it is a URL such as s3:// or hdfs://)."""
    if "://" not in path or path.startswith("file://"):
        return path.removeprefix("file://")
    import fsspec

    target = os.path.join(tempfile.mkdtemp(prefix="deepapps-"), os.path.basename(path))
    with fsspec.open(path, "rb") as src, open(target, "wb") as dst:
        dst.write(src.read())
    return target
