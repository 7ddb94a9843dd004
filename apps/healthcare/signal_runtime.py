"""Serving side of the ECG task (no torch): predict on UCR/CSV/Parquet signal files, evaluate on
the held-out split, and the HTTP adapter. The model's graph does the whole front end; this
module only reads rows, checks them (length, NaN) and feeds float32 samples.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
import polars as pl

from deepapps.apps.healthcare.signals import SignalRow, SignalSettings, open_signal_source, read_signal_rows, signal_error
from deepapps.core.errors import DataError
from deepapps.core.runtime.evaluation import ClassificationEvaluation, evaluation_head, split_indices
from deepapps.core.runtime.interface import Predictions
from deepapps.core.runtime.session import OnnxModel

FAMILY = "signal_classification"


def is_signal_model(model: OnnxModel) -> bool:
    """Whether a healthcare model is the ECG (signal) kind: its contract's family says so."""
    return model.contract.family == FAMILY


def signal_length(model: OnnxModel) -> int:
    return int(model.contract.preprocess["length"])


def score_signals(model: OnnxModel, signals: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Probabilities (N, K) for (N, L) signals."""
    name = model.contract.inputs[0].name
    signals = np.ascontiguousarray(signals, dtype=np.float32)
    out = [model.run({name: signals[i: i + batch_size]}) for i in range(0, len(signals), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)), np.float32)


def predict(model: OnnxModel, args: argparse.Namespace, decide) -> Predictions:
    """One row per signal: path, row, id, label (at the stored threshold), p_<class>, error.

    A row of the wrong length or with NaN becomes an error row; a missing or unreadable file
    is one error row when other inputs are usable.

    Raises:
        DataError: no input holds a single usable signal (one line; exit 2).
    """
    length = signal_length(model)
    label_column = args.label_column or (model.contract.preprocess.get("label_column") or "label")
    rows: list[SignalRow] = []
    for path in args.inputs:
        try:
            rows += read_signal_rows(str(path), label_column, None, length, args.id_column)
        except DataError as exc:
            if len(args.inputs) == 1:
                raise
            rows.append(SignalRow(str(path), None, error=str(exc)))
    good = [r for r in rows if not r.error]
    if not good:
        first = rows[0].error if rows else "no inputs"
        raise DataError(f"{', '.join(map(str, args.inputs))}: no usable signal in {len(rows)} rows (first: {first})")
    probs = score_signals(model, np.stack([r.samples for r in good]), max(1, args.batch_size))
    scored = {id(r): p for r, p in zip(good, probs)}
    schema = {"path": pl.String, "row": pl.Int64, "id": pl.String, "label": pl.String} | {
        f"p_{n}": pl.Float64 for n in model.labels} | {"error": pl.String}
    table = []
    for r in rows:
        p = scored.get(id(r))
        out = {"path": r.path, "row": r.row, "id": r.id, "error": r.error}
        if p is not None:
            out |= {"label": decide(p)} | {f"p_{n}": round(float(v), 6) for n, v in zip(model.labels, p)}
        table.append(out)
    failures = len(rows) - len(good)
    if failures:
        more = f" (and {failures - 1} more)" if failures > 1 else ""
        print(f"error: {next(r.error for r in rows if r.error)}{more}", file=sys.stderr)
    return Predictions.of(pl.DataFrame([{k: r.get(k) for k in schema} for r in table], schema=schema), failures)


def evaluate(model: OnnxModel, data_path: str, split: str = "test", batch_size: int = 256) -> ClassificationEvaluation:
    """Accuracy, macro-F1, balanced accuracy, AUC, per-class and the confusion matrix on `split`,
    re-split from the file exactly as fit did (settings and class names from the model); `all`:
    every signal of the file (e.g. a UCR _TEST file)."""
    from deepapps.core.metrics import classification_metrics

    contract = model.contract
    settings = SignalSettings.from_dict(contract.train.data_config)
    source = open_signal_source(data_path, settings, contract.preprocess.get("label_values"), model.labels)
    if source.length != signal_length(model):
        raise DataError(f"{data_path}: {source.length} samples per signal, the model takes {signal_length(model)}")
    indices = split_indices(source.splits, len(source.targets), split, data_path, "signal")
    probs = score_signals(model, source.signals[indices], batch_size)
    targets = source.targets[indices]
    metrics = evaluation_head(split, data_path, len(indices)) | classification_metrics(
        contract.task, targets, probs, model.labels)
    return ClassificationEvaluation(metrics, targets, probs, model.labels, contract.task)


# --- HTTP serving adapter: {"signal": [floats]} -------------------------------------------------


def decode_item(model: OnnxModel, item: dict | bytes) -> np.ndarray:
    """A request item `{"signal": [x0, x1, ...]}` -> float32 samples, checked like predict's rows."""
    if not isinstance(item, dict) or set(item) != {"signal"} or not isinstance(item["signal"], list):
        fields = sorted(item) if isinstance(item, dict) else type(item).__name__
        raise DataError(f'expected {{"signal": [numbers]}}, got {fields}')
    try:
        samples = np.asarray([np.nan if v is None else float(v) for v in item["signal"]], dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError("signal: every sample must be a number") from None
    error = signal_error(samples, signal_length(model))
    if error:
        raise DataError(f"signal: {error}")
    return samples.astype(np.float32)


def run_items(model: OnnxModel, items: list[np.ndarray], decide) -> list[dict]:
    probs = score_signals(model, np.stack(items), batch_size=max(1, len(items)))
    return [{"label": decide(p), "threshold": model.contract.classification.threshold,
             "probabilities": {name: round(float(v), 6) for name, v in zip(model.labels, p)}} for p in probs]
