"""int8 copies of an exported model for every app (onnxruntime.quantization), each one measured.

An app's Training says how its models quantise (`Training.int8_method`): `static` (QDQ,
per-channel int8 weights, uint8 activations calibrated on real validation inputs; conv image and
signal networks), `dynamic` (int8 weights of MatMul/Gemm, activations quantised on the fly;
transformers) or `None` with the measured reason (a family int8 does not help). Every copy is
scored against its fp32 parent on the validation split with the app's Serving.evaluate, on the
app's monitored metric, and refused (not written) when it loses more than the tolerance.

Torch-free: `deepapps nlp quantize` runs it without torch; the calibration inputs come in as numpy.
"""

from __future__ import annotations

import contextlib
import io
import logging
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from deepapps.core.contract import METADATA_KEY, read_metadata, set_metadata
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.runtime.io import atomic_write

log = logging.getLogger("deepapps")

STATIC, DYNAMIC = "static", "dynamic"
CALIBRATION_METHODS = ("entropy", "percentile", "minmax")
CALIBRATION_SIZE = 256
"""Validation inputs the static calibration sees (fewer when the split is smaller)."""
CALIBRATION_BATCH = 16


@dataclass(frozen=True)
class Int8Method:
    """How an app's models become int8: `method` is `static`, `dynamic` or None (not offered).

    Attributes:
        method: `static` (QDQ with calibration), `dynamic`, or None.
        reason: one line: why this method; for None, the measured figure that rules int8 out.
        calibration: static only: `entropy`, `percentile` or `minmax` (onnxruntime's calibrators).
    """

    method: str | None
    reason: str
    calibration: str = "entropy"

    def __post_init__(self):
        if self.method not in (STATIC, DYNAMIC, None):
            raise ValueError(f"int8 method must be 'static', 'dynamic' or None, not {self.method!r}")
        if self.calibration not in CALIBRATION_METHODS:
            raise ValueError(f"calibration must be one of {CALIBRATION_METHODS}, not {self.calibration!r}")

    @property
    def precision(self) -> str:
        """What the contract's `export.precision` says of the copy."""
        if self.method == STATIC:
            return f"int8 (static QDQ, per-channel int8 weights, uint8 activations, {self.calibration} calibration)"
        return "int8 (dynamic, per-channel int8 weights)"


@dataclass
class Int8Result:
    """One measured int8 copy (what metrics.json's `int8` and the contract record)."""

    file: str
    method: str
    precision: str
    metric: str
    fp32: float
    int8: float
    loss_points: float
    tolerance: float
    calibration_inputs: int | None
    size_mb: dict

    def to_dict(self) -> dict:
        return dict(self.__dict__)

    @property
    def markdown(self) -> str:
        """The model card's section."""
        how = (f"static QDQ, calibrated on {self.calibration_inputs} validation inputs" if self.method == STATIC
               else "dynamic (weights int8, activations quantised at run time)")
        return (f"`{self.file}`: {self.precision}; {how}. Validation {self.metric}: fp32 {self.fp32:.4f}, "
                f"int8 {self.int8:.4f} (loss {self.loss_points:+.2f} points, allowed {self.tolerance:g}). "
                f"Size {self.size_mb['fp32']} MB -> {self.size_mb['int8']} MB.")


class ArrayReader:
    """onnxruntime CalibrationDataReader over real graph inputs (numpy), in batches."""

    def __init__(self, names: Sequence[str], arrays: Sequence[np.ndarray], batch: int = CALIBRATION_BATCH):
        self.names, self.arrays, self.batch, self.start = list(names), list(arrays), batch, 0

    def get_next(self) -> dict | None:
        if self.start >= len(self.arrays[0]):
            return None
        stop = self.start + self.batch
        feeds = {n: a[self.start : stop] for n, a in zip(self.names, self.arrays)}
        self.start = stop
        return feeds

    def rewind(self) -> None:
        self.start = 0


def equal_batches(arrays: list[np.ndarray], batch: int = CALIBRATION_BATCH) -> list[np.ndarray]:
    """The rows of whole calibration batches (the entropy and percentile calibrators stack the
    batches' activations, so a short last batch breaks them); fewer than `batch` rows: all."""
    n = len(arrays[0])
    keep = n - n % batch if n >= batch else n
    return [a[:keep] for a in arrays]


def quantize_proto(src: str | Path, method: Int8Method, calibration: Sequence[np.ndarray] | None = None,
                   input_names: Sequence[str] | None = None) -> onnx.ModelProto:
    """The int8 graph of the fp32 file `src` (its metadata not yet set).

    Args:
        src: the fp32 .onnx file.
        method: `static` or `dynamic` (Training.int8_method).
        calibration: static: real graph inputs (one array per graph input, validation rows).
        input_names: the graph inputs the calibration arrays feed (default: the graph's, in order).
    """
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_dynamic,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    with tempfile.TemporaryDirectory() as tmp, _quiet():
        staged = Path(tmp) / "model.int8.onnx"
        if method.method == DYNAMIC:
            quantize_dynamic(str(src), str(staged), weight_type=QuantType.QInt8, per_channel=True)
        elif method.method == STATIC:
            if not calibration or len(calibration[0]) == 0:
                raise DataError("static int8 needs real validation inputs to calibrate on; none were given")
            pre = Path(tmp) / "model.pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=False)
            graph = onnx.load(str(pre), load_external_data=False).graph
            names = list(input_names or [i.name for i in graph.input])
            outputs = {o.name for o in graph.output}
            # the head (the layer before Softmax/Sigmoid), the activation and whatever writes a graph
            # output stay fp32: uint8 logits or probabilities would come in coarse steps (1/255)
            heads = {i for n in graph.node if n.op_type in ("Softmax", "Sigmoid") for i in n.input}
            keep_fp32 = [n.name for n in graph.node if n.name and (n.op_type in ("Softmax", "Sigmoid")
                                                                    or (outputs | heads) & set(n.output))]
            calibrate = {"entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile,
                         "minmax": CalibrationMethod.MinMax}[method.calibration]
            quantize_static(
                str(pre), str(staged), ArrayReader(names, calibration), quant_format=QuantFormat.QDQ,
                per_channel=True, weight_type=QuantType.QInt8, activation_type=QuantType.QUInt8,
                calibrate_method=calibrate, nodes_to_exclude=keep_fp32,
                extra_options={"CalibTensorRangeSymmetric": False},
            )
        else:
            raise ConfigError(f"int8: {method.reason}")
        return onnx.load(str(staged))


def quantize_and_check(src: str | Path, out: str | Path, method: Int8Method, evaluate, data_path: str | None,
                       metric: str, higher_is_better: bool = True, tolerance: float = 1.0,
                       calibration: Sequence[np.ndarray] | None = None, app: str | None = None) -> Int8Result:
    """Write the int8 copy of `src` to `out` only when it keeps the fp32 file's validation metric.

    Args:
        src: the fp32 model (a deepapps .onnx file with its contract).
        out: the int8 file (conventionally `model.int8.onnx`); nothing is written on refusal.
        method: how to quantise (Training.int8_method); None: refused with its reason.
        evaluate: the app's `Serving.evaluate(model, data_path, split)`.
        data_path: the labelled data the model was fit on (its validation split is scored).
        metric: the monitored metric's name in the evaluation (`macro_f1`, `auroc`, `mse`, ...).
        higher_is_better: the metric's direction (`trainer.monitor_mode == "max"`).
        tolerance: the largest loss allowed, in points (hundredths) of the metric.
        calibration: static: real validation graph inputs.
        app: the app whose model it is (load_model refuses another's).

    Raises:
        ConfigError: int8 is not offered for the app, or the copy loses more than `tolerance`.
        DataError: no data to calibrate or score on.
    """
    from deepapps.core.runtime.session import load_model

    src, out = Path(src), Path(out)
    if method.method is None:
        raise ConfigError(f"--int8: {method.reason}")
    if not data_path:
        raise DataError("--int8: the int8 copy is scored on the validation split; the data is needed (--data.path)")
    fp32 = load_model(src, provider="cpu", app=app)
    before = _metric(evaluate(fp32, data_path, "val").metrics, metric, src.name)
    proto = quantize_proto(src, method, calibration)
    original = read_metadata(src)
    proto_bytes = _with_metadata(proto, original, {"precision": method.precision})
    int8 = load_model(out, provider="cpu", app=app, model_bytes=proto_bytes)
    after = _metric(evaluate(int8, data_path, "val").metrics, metric, out.name)
    loss = 100.0 * ((before - after) if higher_is_better else (after - before))
    if not loss <= tolerance:  # NaN refuses too
        raise ConfigError(f"--int8: {out.name} refused: validation {metric} {after:.4f} (int8) vs {before:.4f} (fp32), "
                          f"a loss of {loss:.2f} points > --int8_tolerance {tolerance:g}; not written")
    result = Int8Result(
        file=out.name, method=method.method, precision=method.precision, metric=metric, fp32=before, int8=after,
        loss_points=round(loss, 4), tolerance=tolerance,
        calibration_inputs=len(calibration[0]) if method.method == STATIC and calibration else None,
        size_mb={"fp32": round(src.stat().st_size / 2**20, 2), "int8": round(len(proto_bytes) / 2**20, 2)},
    )
    record = {"precision": method.precision, "int8": {k: v for k, v in result.to_dict().items() if k != "file"}}
    final = _with_metadata(onnx.load_from_string(proto_bytes), original, record)
    atomic_write(out, lambda tmp: Path(tmp).write_bytes(final))
    log.info("int8: %s written (%s val %s %.4f vs fp32 %.4f)", out.name, method.method, metric, after, before)
    return result


def _with_metadata(proto: onnx.ModelProto, original: dict, export: dict) -> bytes:
    """`proto` with the fp32 file's contract, its `export` section updated; serialised."""
    meta = dict(original)
    meta["export"] = dict(meta.get("export", {})) | export
    set_metadata(proto, meta)
    assert any(p.key == METADATA_KEY for p in proto.metadata_props)
    return proto.SerializeToString()


def _metric(metrics: dict, name: str, file: str) -> float:
    value = metrics.get(name)
    if not isinstance(value, (int, float)):
        known = ", ".join(k for k, v in metrics.items() if isinstance(v, (int, float)))
        raise ConfigError(f"--int8: {file}: the evaluation has no metric {name!r} (the monitored one); it has {known}")
    return float(value)


class _quiet:
    """onnxruntime.quantization logs every skipped node at INFO and advice at WARNING, and its
    calibrators print progress to stdout (which carries a command's result)."""

    def __enter__(self):
        self.root = logging.getLogger()
        self.level, self.root.level = self.root.level, logging.ERROR
        self.stdout = contextlib.redirect_stdout(io.StringIO())
        self.stdout.__enter__()

    def __exit__(self, *exc):
        self.stdout.__exit__(*exc)
        self.root.setLevel(self.level)


def export_int8(app, training, built, cfg, src: str | Path, out: str | Path | None = None) -> Int8Result:
    """The int8 copy of an app's exported model (`fit --export_int8`, `export --int8`).

    The method is the app's (`training.int8_method(cfg)`); static calibration takes
    `CALIBRATION_SIZE` real validation inputs from `built.datamodule`; the copy is scored on the
    validation split on `cfg.trainer.monitor` and refused beyond `cfg.int8_tolerance` points.

    Raises:
        ConfigError: int8 not offered for the app, or the copy refused (one line, both figures).
        DataError: the data is not at hand (a checkpoint exported without its data).
    """
    src = Path(src)
    method = training.int8_method(cfg)
    if method.method is None:
        raise ConfigError(f"--int8: {method.reason}")
    if built.datamodule is None:
        raise DataError(f"--int8: the data ({cfg.data.path}) is needed to calibrate and score the int8 copy")
    calibration = None
    if method.method == STATIC:
        calibration = equal_batches([np.ascontiguousarray(t.numpy()) for t in built.example_inputs(CALIBRATION_SIZE)])
    return quantize_and_check(
        src, Path(out) if out else src.with_suffix(".int8.onnx"), method, app.load_serving().evaluate,
        cfg.data.path, cfg.trainer.monitor.removeprefix("val/"), cfg.trainer.monitor_mode == "max",
        cfg.int8_tolerance, calibration, app.name,
    )
