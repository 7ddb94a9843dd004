"""Serving side of the healthcare app (no torch): predict on PNG/JPEG/DICOM/folders/.npz at the
stored threshold, and evaluate by the MedMNIST protocol plus threshold and calibration metrics.
ECG models (their metadata says so) go to apps/healthcare/signal_runtime.py.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import sys

import numpy as np
import polars as pl
from PIL import Image

from deepapps.apps.healthcare import signal_runtime
from deepapps.apps.healthcare.clinical import operating_point, per_class_specificity
from deepapps.apps.healthcare.data import MedicalDataSettings, list_inputs, open_medical_source
from deepapps.apps.healthcare.dicom import is_dicom, open_medical_image, read_dicom
from deepapps.core.contract import Classification
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.runtime import image_classification
from deepapps.core.runtime.evaluation import ClassificationEvaluation
from deepapps.core.runtime.image_classification import score_images
from deepapps.core.runtime.images import ImageSpec, to_model_input
from deepapps.core.runtime.interface import Predictions, Serving, positive_int
from deepapps.core.runtime.session import OnnxModel


def decision(model: OnnxModel, override: float | None = None):
    """probabilities -> label, by the model's stored threshold (or `override`); see `decide_label`."""
    kind = model.contract.classification
    return decide_label(kind, override if override is not None else kind.threshold)


def decide_label(kind: Classification, threshold):
    """probabilities -> label: the positive class when its probability reaches the threshold
    (binary), the labels over their thresholds (multi-label, `;`-joined), else the most probable."""
    labels, task, positive = kind.labels, kind.problem, kind.positive_index
    if task == "binary" and threshold is not None:
        return lambda p: labels[positive] if p[positive] >= threshold else labels[1 - positive]
    if task == "multilabel":
        cut = np.broadcast_to(np.asarray(0.5 if threshold is None else threshold, dtype=float), (len(labels),))
        return lambda p: ";".join(labels[i] for i in np.flatnonzero(p >= cut))
    return lambda p: labels[int(np.argmax(p))]


class HealthcareServing(Serving):
    """Medical images (PNG/JPEG/DICOM/.npz) and ECG signals, labelled at the stored threshold."""

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("inputs", nargs="+",
                            help="PNG/JPEG/DICOM files, folders (searched recursively), "
                                 "FILE.npz[:train|val|test] (default test); "
                                 "for an ECG model: UCR .txt, CSV or Parquet files of one signal per row")
        parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=32)
        parser.add_argument("--threshold", type=float, default=None,
                            help="probability threshold for the positive class (default: the one stored in the model)")
        parser.add_argument("--window-center", "--window_center", dest="window_center", type=float, default=None,
                            help="DICOM window centre (default: the model's, else each file's)")
        parser.add_argument("--window-width", "--window_width", dest="window_width", type=float, default=None,
                            help="DICOM window width (default: the model's, else each file's)")
        parser.add_argument("--label-column", "--label_column", dest="label_column", default=None,
                            help="ECG CSV/Parquet: a label column to leave out of the samples (default: the model's)")
        parser.add_argument("--id-column", "--id_column", dest="id_column", default=None,
                            help="ECG CSV/Parquet: a column reported as the row id (not a sample)")

    def predict(self, model: OnnxModel, args: argparse.Namespace) -> Predictions:
        """One row per input: path, label at the threshold, a probability per class, error."""
        if args.threshold is not None and not 0 <= args.threshold <= 1:
            raise ConfigError(f"--threshold {args.threshold}: a probability between 0 and 1")
        if signal_runtime.is_signal_model(model):
            return signal_runtime.predict(model, args, decision(model, args.threshold))
        spec = ImageSpec.from_meta(model.contract.preprocess)
        dicom = model.contract.preprocess.get("dicom") or {}
        center = args.window_center if args.window_center is not None else dicom.get("window_center")
        width = args.window_width if args.window_width is not None else dicom.get("window_width")
        items = list_inputs(args.inputs, lambda path: open_medical_image(path, spec.channels, center, width))
        decide = decision(model, args.threshold)
        rows: list[dict] = []
        batch_size = max(1, args.batch_size)
        for start in range(0, len(items), batch_size):
            batch = items[start : start + batch_size]
            out: list[dict] = [{}] * len(batch)
            loaded: list[tuple[int, np.ndarray]] = []
            for j, item in enumerate(batch):
                try:
                    if item.error:
                        raise DataError(item.error)
                    loaded.append((j, to_model_input(item.load(), spec)))
                except DataError as exc:
                    print(f"error: {exc}", file=sys.stderr)
                    out[j] = {"path": item.name, "error": str(exc)}
            if loaded:
                for (j, _), probs in zip(loaded, score_images(model, [x for _, x in loaded], batch_size)):
                    out[j] = {"path": batch[j].name, "label": decide(probs), "error": ""} | {
                        f"p_{name}": round(float(p), 6) for name, p in zip(model.labels, probs)}
            rows += out
        schema = {"path": pl.String, "label": pl.String} | {f"p_{n}": pl.Float64 for n in model.labels}
        schema |= {"error": pl.String}
        table = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)
        return Predictions.of(table, sum(1 for r in rows if r["error"]))

    def evaluate(self, model: OnnxModel, data_path: str, split: str = "test",
                 batch_size: int = 32) -> ClassificationEvaluation:
        """MedMNIST protocol (ACC at argmax, AUC one-vs-rest macro, per class) on `split`, plus
        sensitivity/specificity at the stored threshold, per-class specificity, ECE and Brier.
        ECG models add balanced accuracy (signal_runtime.evaluate)."""
        if signal_runtime.is_signal_model(model):
            evaluation = signal_runtime.evaluate(model, data_path, split)
        else:
            settings = MedicalDataSettings.from_dict(model.contract.train.data_config)
            evaluation = image_classification.evaluate(
                model, data_path, split, batch_size,
                open_source=lambda path: open_medical_source(path, settings, strict=False),
            )
        from deepapps.core.metrics import calibration_metrics  # scikit-learn: evaluate only, never predict

        metrics, targets, probs, task = evaluation.metrics, evaluation.targets, evaluation.probs, evaluation.problem
        calibration = calibration_metrics(task, targets, probs)
        metrics |= {"ece": calibration["ece"], "brier": calibration["brier"], "reliability": calibration["bins"]}
        threshold = model.contract.classification.threshold
        if task == "binary" and threshold is not None:
            k = model.contract.classification.positive_index
            point = operating_point(targets == k, probs[:, k], threshold)
            metrics |= {"sensitivity": point["sensitivity"], "specificity": point["specificity"],
                        "at_threshold": point | {"positive_label": model.labels[k]}}
        elif task == "multilabel" and threshold is not None:
            cuts = np.broadcast_to(np.asarray(threshold, dtype=float), (len(model.labels),))
            metrics["at_threshold"] = {name: operating_point(targets[:, j] == 1, probs[:, j], cuts[j])
                                       for j, name in enumerate(model.labels)}
        if task != "multilabel":
            specificity = per_class_specificity(targets, probs.argmax(1), len(model.labels))
            for name, value in zip(model.labels, specificity):
                metrics["per_class"][name]["specificity"] = value
        return evaluation

    def group_values(self, model: OnnxModel, data_path: str, split: str, columns: list[str]) -> dict[str, list]:
        """The sensitive-attribute columns of a manifest's images `evaluate` scores (not the split's
        patient column); ECG models: refused."""
        if signal_runtime.is_signal_model(model):
            raise ConfigError("--group-columns: fairness by group is offered for image manifests, not ECG signals")
        settings = MedicalDataSettings.from_dict(model.contract.train.data_config)
        return image_classification.group_values(
            model, data_path, split, columns,
            open_source=lambda path: open_medical_source(path, settings, strict=False, attribute_columns=columns))

    def decode_item(self, model: OnnxModel, item: dict | bytes) -> np.ndarray:
        """A request item (`{"image": "<base64>"}` or uploaded bytes; PNG/JPEG/DICOM) -> model pixels;
        for an ECG model `{"signal": [numbers]}` -> float32 samples."""
        if signal_runtime.is_signal_model(model):
            return signal_runtime.decode_item(model, item)
        raw = item
        if isinstance(item, dict) and isinstance(item.get("image"), str):
            try:
                raw = base64.b64decode(item["image"], validate=True)
            except (binascii.Error, ValueError):
                raw = None  # the vision adapter says what is wrong
        if isinstance(raw, bytes) and is_dicom(raw):
            spec = ImageSpec.from_meta(model.contract.preprocess)
            dicom = model.contract.preprocess.get("dicom") or {}
            grey = read_dicom(raw, dicom.get("window_center"), dicom.get("window_width"))
            return to_model_input(Image.fromarray(grey), spec)
        return image_classification.decode_item(model, item)

    def run_items(self, model: OnnxModel, items: list[np.ndarray]) -> list[dict]:
        """One ONNX Runtime call for a micro-batch; each label decided at the stored threshold."""
        decide = decision(model)
        if signal_runtime.is_signal_model(model):
            return signal_runtime.run_items(model, items, decide)
        probs = score_images(model, items, batch_size=max(1, len(items)))
        return [{"label": decide(p), "threshold": model.contract.classification.threshold,
                 "probabilities": {name: round(float(v), 6) for name, v in zip(model.labels, p)}} for p in probs]
