"""Serving side of fraud (ONNX Runtime + polars, never torch): evaluate and streaming predict."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import polars as pl

from deepapps.apps.finance.fraud.config import TabularDataConfig
from deepapps.apps.finance.fraud.features import (
    BUILTIN, LABELS, Encoded, FeatureSpec, check_columns, encode, load_source, row_thresholds,
    targets,
)
from deepapps.apps.finance.fraud.parquet import large_parquet, parquet_files, read_split, split_batches
from deepapps.apps.finance.fraud.scoring import decision_metrics, fraud_metrics
from deepapps.apps.finance.fraud.tables import Columns, split_frame, tidy_frame
from deepapps.core.data.tables import scan_table, table_schema
from deepapps.core.errors import DataError, DeepappsError
from deepapps.core.runtime.evaluation import ClassificationEvaluation, evaluation_head
from deepapps.core.runtime.interface import Predictions, Serving, positive_int
from deepapps.core.runtime.io import atomic_write
from deepapps.core.runtime.session import OnnxModel

CHUNK = 262_144
ORT_BATCH = 8_192  # rows per ONNX Runtime call: the (batch, 128) activations stay in cache
# Batch scoring: threads that sleep instead of spinning between calls leave the cores to polars
# (reading, writing); spinning halved the graph's speed on a shared 2-core machine
BATCH_SESSION = {"session.intra_op.allow_spinning": "0"}
OUTPUTS = {".parquet": "sink_parquet", ".csv": "sink_csv", ".jsonl": "sink_ndjson"}


def feeds(model: OnnxModel, enc: Encoded, rows: np.ndarray | slice = slice(None)) -> dict[str, np.ndarray]:
    out = {"numeric": np.ascontiguousarray(enc.numeric[rows])}
    if "categorical" in model.input_names:
        out["categorical"] = np.ascontiguousarray(enc.categorical[rows])
    return out


def score(model: OnnxModel, enc: Encoded, rows: np.ndarray | slice = slice(None), batch: int = ORT_BATCH) -> np.ndarray:
    """(N, 2) probabilities of the encoded rows."""
    f = feeds(model, enc, rows)
    n = len(f["numeric"])
    out = [model.run({k: v[i:i + batch] for k, v in f.items()}) for i in range(0, n, batch)]
    return np.concatenate(out) if out else np.zeros((0, 2), np.float32)


def predict_file(model: OnnxModel, input: str | Path, out: str | Path, chunk_size: int = CHUNK,
                 threshold: float | None = None, keep: list[str] | None = None) -> dict:
    """Score `input` chunk by chunk into `out` (written atomically). Returns counts and speed.

    Output columns: the kept columns (default: the id columns; `row`, the input row number, when
    there are none), `score` (fraud probability),
    `decision` (score >= threshold), `error` (why a row could not be scored, else null).
    """
    suffix = Path(out).suffix.lower()
    if suffix not in OUTPUTS:
        raise DataError(f"{out}: unsupported output type {suffix!r}; use .parquet, .csv or .jsonl")
    if chunk_size < 1:
        raise DeepappsError(f"--chunk-size {chunk_size}: must be at least 1")
    spec = FeatureSpec.from_meta(model.contract.preprocess)
    rule = model.contract.details.get("group_thresholds") if threshold is None else None  # --threshold: one for all
    threshold = model.contract.classification.threshold if threshold is None else threshold
    threshold = 0.5 if threshold is None else float(threshold)
    names = tidy_frame(scan_table(input), numbers=False).collect_schema().names()
    extra = check_columns(names, spec, str(input))
    keep = [c for c in spec.ids if c in names] if keep is None else keep
    missing = [c for c in keep if c not in names]
    if missing:
        raise DataError(f"{input}: --keep column(s) not found: {', '.join(missing)}")
    ignored = [c for c in extra if c not in keep]
    if ignored:
        print(f"ignored columns ({len(ignored)}): {', '.join(ignored)}", file=sys.stderr)
    start = time.perf_counter()
    try:
        stats = _stream(model, spec, input, out, chunk_size, (threshold, rule), keep, string_numeric=False)
    except (pl.exceptions.ComputeError, pl.exceptions.InvalidOperationError):
        # a CSV whose numeric column holds text further down: read those columns as text, flag bad rows
        stats = _stream(model, spec, input, out, chunk_size, (threshold, rule), keep, string_numeric=True)
    stats["seconds"] = time.perf_counter() - start
    stats["rows_per_s"] = stats["rows"] / stats["seconds"] if stats["seconds"] else 0.0
    return stats


def _stream(model, spec, input, out, chunk_size, decision: tuple[float, dict | None], keep, string_numeric: bool) -> dict:
    """One pass: polars reads chunks, each is scored as it arrives and the output sink (a
    polars streaming sink fed by a Python source) writes it while the next chunk is scored."""
    from polars.io.plugins import register_io_source

    lf = scan_table(input, spec.numeric if string_numeric else ())
    lf = tidy_frame(lf, missing_values(model), numbers=False)  # as fit read its table
    schema = table_schema(input, lf)
    columns = list(dict.fromkeys([*keep, *spec.numeric, *spec.categorical]))
    stats = {"rows": 0, "bad": 0, "flagged": 0, "unknown": {}, "first_error": None}
    out_schema = {c: schema[c] for c in keep} if keep else {"row": pl.Int64}
    out_schema |= {"score": pl.Float32, "decision": pl.Boolean, "error": pl.String}

    def scored(*_) -> Iterator[pl.DataFrame]:
        for chunk in _chunks(lf.select(columns), Path(input).suffix.lower() != ".csv", chunk_size):
            yield _score_chunk(model, spec, chunk, decision, keep, stats)
        if stats["rows"] == 0:  # raised inside the sink: the temporary file is removed
            raise DataError(f"{input}: empty table (no rows)")

    sink = getattr(register_io_source(scored, schema=out_schema), OUTPUTS[Path(out).suffix.lower()])
    atomic_write(out, lambda tmp: sink(tmp))
    return stats


def missing_values(model: OnnxModel) -> list[str]:
    """The text values fit read as missing (`data.missing_values`; `?` for models made before it)."""
    return list(model.contract.train.data_config.get("missing_values", ["?"]))


def _chunks(lf: pl.LazyFrame, parquet: bool, size: int) -> Iterator[pl.DataFrame]:
    """Row chunks of a scan. Parquet: one sliced read per chunk (only the row groups it needs),
    which keeps peak memory flat (collect_batches read ahead to ~400 MiB on a 10M-row file);
    CSV cannot seek to a row, so it streams with collect_batches."""
    if not parquet:
        yield from lf.collect_batches(chunk_size=size)
        return
    offset = 0
    while True:
        chunk = lf.slice(offset, size).collect()
        if chunk.height:
            yield chunk
        if chunk.height < size:
            return
        offset += size


def _score_chunk(model, spec, chunk: pl.DataFrame, decision: tuple[float, dict | None], keep: list[str],
                 stats: dict) -> pl.DataFrame:
    """Scores and decisions of one chunk; `decision`: (threshold, the per-group rule or None)."""
    threshold, rule = decision
    enc = encode(chunk, spec)
    bad = enc.bad
    scores = np.full(chunk.height, np.nan, np.float32)
    ok = np.flatnonzero(~bad) if bad.any() else slice(None)
    scores[ok] = score(model, enc, ok)[:, 1]
    decision = scores >= row_thresholds(enc, spec, rule, threshold)
    stats["rows"] += chunk.height
    stats["bad"] += int(bad.sum())
    if bad.any() and stats["first_error"] is None:
        stats["first_error"] = f"row {stats['rows'] - chunk.height + int(np.argmax(bad))}: {enc.first_error}"
    stats["flagged"] += int(decision.sum())
    for k, v in enc.unknown.items():
        stats["unknown"][k] = stats["unknown"].get(k, 0) + v
    stats["unknown"] = {k: v for k, v in stats["unknown"].items() if v}
    out = pl.DataFrame({"score": pl.Series(scores, dtype=pl.Float32).fill_nan(None), "decision": pl.Series(decision),
                        "error": enc.errors.cast(pl.String)})
    if keep:
        out = pl.concat([chunk.select(keep), out], how="horizontal")
    else:  # no id column: the input row number (0-based) lets the caller join back
        first = stats["rows"] - chunk.height
        out = out.with_columns(pl.int_range(first, first + chunk.height, dtype=pl.Int64).alias("row")).select(
            "row", "score", "decision", "error")
    if bad.any():
        out = out.with_columns(decision=pl.when(pl.col("error").is_null()).then(pl.col("decision")))
    return out


def streamed_input(data: TabularDataConfig, data_path: str) -> bool:
    """Read a split without loading the table: a Parquet file above the streaming threshold, a folder of
    them, or a Parquet input of a model fit with `--data.streaming true`."""
    if data_path == BUILTIN:
        return False
    fit_streaming = str(data.streaming).lower() == "true" and parquet_files(data_path) is not None
    return fit_streaming or large_parquet(data_path)[0] or Path(data_path).is_dir()


def evaluated_rows(model: OnnxModel, data_path: str, split: str, group_columns: list[str] | None = None,
                   read: list[str] | None = None) -> pl.DataFrame | Iterator[pl.DataFrame]:
    """The rows of `split` of labelled data, read and split exactly as fit did; `all`: every row.

    Args:
        group_columns: columns that must be in the data too (DataError naming the missing ones).
        read: for a Parquet input above the streaming threshold (or a folder of them), return the split's
            rows as record batches of these columns, in file order (`parquet.split_batches`: no row of the
            table is held) instead of one frame in the split's order.
    """
    contract = model.contract
    spec = FeatureSpec.from_meta(contract.preprocess)
    data = TabularDataConfig(**contract.train.data_config)
    streamed = split != "all" and streamed_input(data, data_path)
    df = (tidy_frame(pl.scan_parquet(data_path).head(0).collect(), data.missing_values, numbers=False) if streamed
          else load_source(data_path, data))
    if spec.label not in df.columns:
        raise DataError(f"{data_path}: label column {spec.label!r} not found")
    check_columns(df.columns, spec, data_path)
    if group_columns:
        from deepapps.core.fairness import check_group_columns

        check_group_columns(df.columns, group_columns, data_path)
    columns = Columns(label=spec.label, time=spec.time if spec.time in df.columns else None)
    if data.split == "random" and contract.schema_version < 2 and group_columns is None:
        print(f"warning: {model.path} was made by deepapps 0.1, whose random split differs; its {split} rows are "
              "re-split by today's rule and may include rows it trained on", file=sys.stderr)
    if split == "all":
        part = df
    elif streamed and read is not None:
        if split not in ("train", "val", "test"):
            raise DeepappsError(f"--split {split}: choose all, train, val or test")
        return split_batches(data_path, data, columns, split, read)
    elif streamed:
        part = read_split(data_path, data, columns, split)
        if part is None:
            raise DeepappsError(f"--split {split}: choose all, train, val or test")
    else:
        frames = split_frame(df, columns, data.split, data.val_fraction, data.test_fraction, data.split_seed)
        if split not in frames:
            raise DeepappsError(f"--split {split}: choose all or one of {sorted(frames)}")
        part = frames[split]
    if part.height == 0:
        raise DataError(f"{data_path}: the {split} split is empty (--split all scores every row)")
    return part


def score_batches(model: OnnxModel, batches: Iterator[pl.DataFrame], spec: FeatureSpec, data_path: str,
                  split: str, notes: list[str]) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """(0/1 targets, (N, 2) probabilities, unseen categories) of record batches of labelled rows; only the
    targets and probabilities are kept (9 bytes a row). `notes` gets each note of `targets` once.

    Raises:
        DataError: rows with bad values (all counted, the first named), or no row at all.
    """
    y, probs, unknown, bad, first = [], [], {}, 0, None
    for frame in batches:
        enc = encode(frame, spec)
        if enc.bad.any():
            bad, first = bad + int(enc.bad.sum()), first or enc.first_error
            continue
        seen: list[str] = []
        y.append(targets(frame, spec.label, data_path, spec.positive, seen)[0].astype(np.uint8))
        notes.extend(n for n in seen if n not in notes)
        probs.append(score(model, enc).astype(np.float32))
        for k, v in enc.unknown.items():
            unknown[k] = unknown.get(k, 0) + v
    if bad:
        raise DataError(f"{data_path}: {bad} rows have bad values (first: {first})")
    if not y:
        raise DataError(f"{data_path}: the {split} split is empty (--split all scores every row)")
    return np.concatenate(y).astype(np.int64), np.concatenate(probs), unknown


class FraudServing(Serving):
    """Streams tables of transactions (larger than memory) to an output table; one row per request item."""

    spark_column = None  # a transaction is a whole row
    session_config = BATCH_SESSION
    writes_output = True

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("inputs", nargs=1, metavar="input",
                            help="CSV or Parquet table of transactions (raw columns, as in training)")
        parser.add_argument("--chunk-size", "--chunk_size", dest="chunk_size", type=positive_int, default=CHUNK,
                            help=f"rows scored per chunk (default {CHUNK}); memory stays flat whatever the file size")
        parser.add_argument("--threshold", type=float, default=None,
                            help="decision threshold (default: the cost-based one stored in the model)")
        parser.add_argument("--keep", nargs="*", default=None, help="input columns copied to the output (default: ids)")

    def predict(self, model: OnnxModel, args: argparse.Namespace) -> Predictions:
        """Stream `args.inputs[0]` into `args.out`: score, decision and error per row (bad rows flagged)."""
        stats = predict_file(model, args.inputs[0], args.out, args.chunk_size, args.threshold, args.keep)
        message = (f"wrote {stats['rows']} rows to {args.out} ({stats['rows_per_s']:,.0f} rows/s); "
                   f"flagged as fraud: {stats['flagged']}; bad rows: {stats['bad']}")
        if stats["unknown"]:
            unseen = ", ".join(f"{k}={v}" for k, v in stats["unknown"].items())
            message += f"\nunseen categories (scored as unknown): {unseen}"
        if stats["first_error"]:
            message += f"\nerror: {args.inputs[0]}: {stats['first_error']} (and every row with an error)"
        return Predictions(None, stats["bad"], stats["rows"], message)

    def evaluate(self, model: OnnxModel, data_path: str, split: str = "test") -> ClassificationEvaluation:
        """Metrics of the ONNX model on `split` of the data, split exactly as in fit; `all`: every row."""
        contract = model.contract
        spec = FeatureSpec.from_meta(contract.preprocess)
        part = evaluated_rows(model, data_path, split, read=[spec.label, *spec.numeric, *spec.categorical])
        notes: list[str] = []
        if isinstance(part, pl.DataFrame):
            y, _ = targets(part, spec.label, data_path, spec.positive, notes)
            enc = encode(part, spec)
            if enc.bad.any():
                raise DataError(f"{data_path}: {int(enc.bad.sum())} rows have bad values (first: {enc.first_error})")
            probs, unknown = score(model, enc), enc.unknown
            thresholds = row_thresholds(enc, spec, contract.details.get("group_thresholds"), contract.classification.threshold)
        else:  # streamed: record batch by record batch, keeping the targets and probabilities only
            y, probs, unknown = score_batches(model, part, spec, data_path, split, notes)
            thresholds = contract.classification.threshold
            if contract.details.get("group_thresholds"):
                notes.append("streamed evaluate: decision figures at the model's one threshold, not its per-group ones")
        for note in notes:
            print(f"deepapps: note: {note}", file=sys.stderr)
        decision, threshold = contract.details.get("decision", {}), contract.classification.threshold
        metrics = evaluation_head(split, data_path, len(y)) | fraud_metrics(y, probs[:, 1], decision.get("fpr", 0.01),
                                                                              decision.get("top_k", 100))
        if threshold is not None:
            metrics["decision"] = decision_metrics(y, probs[:, 1], thresholds, decision.get("cost_missed", 100.0),
                                                   decision.get("cost_review", 5.0))
        metrics["unknown_categories"] = unknown
        if notes:
            metrics["notes"] = notes
        return ClassificationEvaluation(metrics, y, probs, LABELS, problem="binary")

    def group_values(self, model: OnnxModel, data_path: str, split: str, columns: list[str]) -> dict[str, list]:
        """The group columns of the rows `evaluate` scores (the same table, split and order)."""
        part = evaluated_rows(model, data_path, split, columns, read=columns)
        if not isinstance(part, pl.DataFrame):  # streamed: the rows and order of evaluate's batches
            part = pl.concat(list(part))
        return {c: part[c].to_list() for c in columns}

    def decode_item(self, model: OnnxModel, item: dict) -> Encoded:
        """One transaction as a JSON object of raw column values -> its model inputs (one row)."""
        if not isinstance(item, dict):
            raise DataError("expected a JSON object of column: value")
        spec = FeatureSpec.from_meta(model.contract.preprocess)
        check_columns(list(item), spec, "row")
        columns = [*spec.numeric, *spec.categorical]
        for c in columns:
            if not isinstance(item[c], (str, int, float, bool, type(None))):
                raise DataError(f"column {c!r}: expected a number, a text or null, got {type(item[c]).__name__}")
        row = pl.DataFrame({c: [item[c]] for c in columns}, strict=False)
        enc = encode(row, spec)
        if enc.bad.any():
            raise DataError(enc.first_error)
        return enc

    def run_items(self, model: OnnxModel, items: list[Encoded]) -> list[dict]:
        """One ONNX Runtime call for a micro-batch of transactions."""
        batch = Encoded(np.concatenate([e.numeric for e in items]), np.concatenate([e.categorical for e in items]),
                        pl.Series([None] * len(items), dtype=pl.String), {})
        scores = score(model, batch)[:, 1]
        threshold = model.contract.classification.threshold
        threshold = 0.5 if threshold is None else float(threshold)
        spec = FeatureSpec.from_meta(model.contract.preprocess)
        thresholds = np.broadcast_to(row_thresholds(batch, spec, model.contract.details.get("group_thresholds"), threshold),
                                     scores.shape)
        return [{"score": round(float(s), 6), "decision": bool(s >= t)} for s, t in zip(scores, thresholds)]
