"""Serving side of the image classification family (vision, healthcare): ONNX Runtime only.

`ImageServing` is vision's Serving; healthcare composes the functions below with its own readers.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import polars as pl

from deepapps.core.errors import DataError
from deepapps.core.runtime.evaluation import ClassificationEvaluation, evaluation_head, split_indices
from deepapps.core.runtime.images import ImageSpec, decode_image, list_images, open_image, to_model_input
from deepapps.core.runtime.interface import Predictions, Serving, positive_int
from deepapps.core.runtime.session import OnnxModel

if TYPE_CHECKING:
    from deepapps.core.data.image_sources import ImageSource


def add_predict_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("inputs", nargs="+", help="image files and/or folders (searched recursively)")
    parser.add_argument("--top-k", "--top_k", dest="top_k", type=positive_int, default=3, help="labels kept per image")
    parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=32)


def score_images(model: OnnxModel, images: list[np.ndarray], batch_size: int = 32) -> np.ndarray:
    """Probabilities (N, K) for preprocessed uint8 (H, W, C) images."""
    name = model.contract.inputs[0].name
    out = [model.run({name: np.stack(images[i : i + batch_size])}) for i in range(0, len(images), batch_size)]
    return np.concatenate(out) if out else np.zeros((0, len(model.labels)), np.float32)


def predict(model: OnnxModel, args: argparse.Namespace) -> Predictions:
    """Score every image; unreadable ones become error rows."""
    spec = ImageSpec.from_meta(model.contract.preprocess)
    paths = list_images(args.inputs)
    rows: list[dict] = []
    top_k = max(1, min(args.top_k, len(model.labels)))
    for start in range(0, len(paths), args.batch_size):
        batch, ok = [], []
        for path in paths[start : start + args.batch_size]:
            try:
                batch.append(to_model_input(open_image(path, spec.channels), spec))
                ok.append(path)
            except DataError as exc:
                print(f"error: {exc}", file=sys.stderr)
                rows.append(_row(path, error=str(exc)))
        if batch:
            probs = score_images(model, batch, args.batch_size)
            rows += [_prediction_row(p, pr, model, top_k) for p, pr in zip(ok, probs)]
    order = {str(p): i for i, p in enumerate(paths)}
    rows.sort(key=lambda r: order[r["path"]])
    return Predictions.of(pl.DataFrame(rows, schema=_SCHEMA), sum(1 for r in rows if r["error"]))


_SCHEMA = {"path": pl.String, "label": pl.String, "probability": pl.Float64,
           "top_labels": pl.String, "top_probabilities": pl.String, "error": pl.String}


def _row(path: Path, error: str = "", **values: object) -> dict:
    return {"path": str(path), "label": None, "probability": None, "top_labels": None,
            "top_probabilities": None, "error": error} | values


def _prediction_row(path: Path, probs: np.ndarray, model: OnnxModel, top_k: int) -> dict:
    top = np.argsort(-probs)[:top_k]
    best = prediction(probs, model)
    label = best["label"] if "label" in best else ";".join(best["labels"])
    return _row(
        path, label=label, probability=round(float(best.get("probability", probs.max())), 6),
        top_labels=";".join(model.labels[i] for i in top),
        top_probabilities=";".join(f"{probs[i]:.6f}" for i in top),
    )


# --- HTTP serving adapter (core.serving): one item in, one JSON-able dict out ---------------


def decode_item(model: OnnxModel, item: dict | bytes) -> np.ndarray:
    """A request item (`{"image": "<base64>"}` or an uploaded file's bytes) -> model pixels.

    Raises:
        DataError: one line saying what is wrong with the item.
    """
    if isinstance(item, dict):
        if set(item) != {"image"} or not isinstance(item["image"], str):
            raise DataError(f"expected {{\"image\": \"<base64>\"}}, got fields {sorted(item)}")
        try:
            item = base64.b64decode(item["image"], validate=True)
        except (binascii.Error, ValueError):
            raise DataError("image: not valid base64") from None
    spec = ImageSpec.from_meta(model.contract.preprocess)
    return to_model_input(decode_image(item, spec.channels), spec)


def run_items(model: OnnxModel, items: list[np.ndarray]) -> list[dict]:
    """One ONNX Runtime call for a micro-batch of decoded items."""
    probs = score_images(model, items, batch_size=max(1, len(items)))
    return [prediction(p, model) for p in probs]


def prediction(probs: np.ndarray, model: OnnxModel) -> dict:
    """Label(s), top probability and every class probability for one item."""
    kind = model.contract.classification
    labels = kind.labels
    out = {"probabilities": {name: round(float(p), 6) for name, p in zip(labels, probs)}}
    if kind.multilabel:
        threshold = 0.5 if kind.threshold is None else np.asarray(kind.threshold)
        return {"labels": [labels[i] for i in np.flatnonzero(probs >= threshold)]} | out
    top = int(np.argmax(probs))
    return {"label": labels[top], "probability": round(float(probs[top]), 6)} | out


def evaluate(
    model: OnnxModel, data_path: str, split: str = "test", batch_size: int = 32,
    open_source: Callable[[str], ImageSource] | None = None,
) -> ClassificationEvaluation:
    """Metrics of the ONNX model on `split` of the data, split exactly as in fit; `all`: every
    image (of every given split too). The data's labels may be a subset of the model's.

    Args:
        open_source: data path -> ImageSource, for an app that reads its data its own way;
            default: `open_image_source` with the split settings stored in the model (not
            strict: evaluate scores data of one class, or too small for fit's splits).
    """
    from deepapps.core.metrics import classification_metrics

    source = (open_source or model_source(model))(data_path)
    all_targets = model_targets(source.labels, source.targets, model.labels, data_path)
    indices = split_indices(source.splits, len(source.refs), split, data_path, "image")
    spec = ImageSpec.from_meta(model.contract.preprocess)
    images = [to_model_input(source.load(int(i)), spec) for i in indices]
    probs = score_images(model, images, batch_size)
    targets = all_targets[indices]
    problem = model.contract.task
    metrics = evaluation_head(split, data_path, len(indices)) | classification_metrics(
        problem, targets, probs, model.labels)
    return ClassificationEvaluation(metrics, targets, probs, model.labels, problem)


def model_source(model: OnnxModel, attribute_columns: list[str] | None = None) -> Callable[[str], ImageSource]:
    """data path -> ImageSource opened with the split settings stored in the model (not strict),
    with the sensitive-attribute columns `attribute_columns` (fairness by group)."""
    from deepapps.core.data.image_sources import SplitSettings, open_image_source

    data_cfg = model.contract.train.data_config
    settings = SplitSettings(
        data_cfg.get("val_fraction", 0.15), data_cfg.get("test_fraction", 0.15), data_cfg.get("split_seed", 0)
    )
    return partial(open_image_source, split=settings, path_column=data_cfg.get("path_column", "path"),
                   label_column=data_cfg.get("label_column", "label"), strict=False,
                   attribute_columns=attribute_columns)


def group_values(model: OnnxModel, data_path: str, split: str, columns: list[str],
                 open_source: Callable[[str], ImageSource] | None = None) -> dict[str, list]:
    """The sensitive-attribute columns (manifest columns) of the images `evaluate` scores, in its order.

    Args:
        open_source: data path -> ImageSource holding `columns` in its `attributes`; default:
            `model_source(model, columns)`.

    Raises:
        ConfigError: the data is not a manifest; DataError: a column is not in it.
    """
    source = (open_source or model_source(model, columns))(data_path)
    indices = split_indices(source.splits, len(source.refs), split, data_path, "image")
    return {c: [source.attributes[c][int(i)] for i in indices] for c in columns}


def model_targets(labels: list[str], targets: np.ndarray, model_labels: list[str], data_path: str) -> np.ndarray:
    """The data's targets as class ids (or multi-hot columns) of the model's labels: the data
    may hold fewer classes than the model (a folder without one class), never others."""
    if labels == model_labels:
        return targets
    unknown = [name for name in labels if name not in model_labels]
    if unknown:
        raise DataError(f"{data_path}: labels {unknown} are not among the model's {model_labels}")
    index = np.asarray([model_labels.index(name) for name in labels], dtype=np.int64)
    if targets.ndim == 1:
        return index[targets]
    out = np.zeros((len(targets), len(model_labels)), dtype=targets.dtype)
    out[:, index] = targets
    return out


class ImageServing(Serving):
    """Vision: predict image files and folders, evaluate image datasets, serve base64 images."""

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        add_predict_arguments(parser)

    def predict(self, model: OnnxModel, args: argparse.Namespace) -> Predictions:
        return predict(model, args)

    def evaluate(self, model: OnnxModel, data_path: str, split: str = "test") -> ClassificationEvaluation:
        return evaluate(model, data_path, split)

    def group_values(self, model: OnnxModel, data_path: str, split: str, columns: list[str]) -> dict[str, list]:
        return group_values(model, data_path, split, columns)

    def decode_item(self, model: OnnxModel, item: dict | bytes) -> np.ndarray:
        return decode_item(model, item)

    def run_items(self, model: OnnxModel, items: list[np.ndarray]) -> list[dict]:
        return run_items(model, items)
