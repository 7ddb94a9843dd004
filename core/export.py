"""torch -> ONNX: probabilities head, metadata, onnx.checker and an ORT-vs-torch parity check.

Like timm's onnx_export.py, an export is never trusted until ONNX Runtime has reproduced
the PyTorch outputs on a real batch.
"""

from __future__ import annotations

import json
import logging
import warnings
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from deepapps.core import __version__
from deepapps.core.errors import ExportParityError
from deepapps.core.runtime.io import atomic_write
from deepapps.core.runtime.session import METADATA_KEY

log = logging.getLogger(__name__)

OPSET = 18
OUTPUT_NAME = "probabilities"
PARITY_TOLERANCE = 1e-4


def export_onnx(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], out: str | Path,
    input_names: list[str], metadata: dict, output_names: list[str] | None = None,
    dynamic_axes: dict[str, dict[int, str]] | None = None, tolerance: float = PARITY_TOLERANCE,
) -> dict:
    """Export `model` as it will be served, check it, and write it atomically to `out`.

    Args:
        model: inputs -> served outputs (e.g. `Built.export_module()`: logits + softmax).
        example_inputs: a real batch; also used for the parity check.
        out: destination .onnx path.
        input_names: graph input names, one per example input.
        metadata: the deepapps JSON stored in metadata_props (see DESIGN: the ONNX contract).
        output_names: graph output names; default `probabilities`.
        dynamic_axes: per input and output, the dynamic axes; default makes axis 0 `batch`.
        tolerance: largest allowed |onnx - torch| over every output.

    Returns:
        The metadata written, with `export.parity_max_abs_diff` filled in.

    Raises:
        ExportParityError: ONNX Runtime's outputs differ from torch's by more than tolerance.
    """
    model = model.eval().cpu().float()
    output_names = output_names or [OUTPUT_NAME]
    example_inputs = tuple(x.cpu() for x in example_inputs)
    axes = dynamic_axes or {name: {0: "batch"} for name in [*input_names, *output_names]}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notice
        expected = model(*example_inputs)
        expected = [t.numpy() for t in (expected if isinstance(expected, (tuple, list)) else [expected])]
        buffer = BytesIO()
        torch.onnx.export(
            model, example_inputs, buffer, input_names=input_names, output_names=output_names,
            dynamic_axes=axes, opset_version=OPSET, dynamo=False,
        )
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto, full_check=True)
    diff = parity(proto.SerializeToString(), example_inputs, input_names, expected)
    if not diff <= tolerance:
        raise ExportParityError(
            f"{out}: ONNX Runtime differs from torch by {diff:.2e} (> {tolerance:.0e}); not written"
        )
    metadata = metadata | {
        "version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "export": {"opset": OPSET, "torch": torch.__version__, "parity_max_abs_diff": diff,
                   "parity_batch": int(len(example_inputs[0]))},
    }
    set_metadata(proto, metadata)
    atomic_write(out, lambda tmp: onnx.save(proto, str(tmp)))
    log.info("exported %s (parity max abs diff %.2e)", out, diff)
    return metadata


def parity(model_bytes: bytes, inputs: tuple[torch.Tensor, ...], names: list[str], expected: list[np.ndarray]) -> float:
    """Max abs difference between ONNX Runtime (CPU) and `expected` over all outputs."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
    return max(float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64)))) for g, e in zip(got, expected))


def set_metadata(proto: onnx.ModelProto, metadata: dict) -> None:
    """Store the deepapps JSON in metadata_props (replacing an earlier value)."""
    for i in reversed(range(len(proto.metadata_props))):
        if proto.metadata_props[i].key == METADATA_KEY:
            del proto.metadata_props[i]
    entry = proto.metadata_props.add()
    entry.key, entry.value = METADATA_KEY, json.dumps(metadata, default=_jsonable)
    proto.producer_name, proto.producer_version = "deepapps", __version__


def read_metadata(path: str | Path) -> dict:
    proto = onnx.load(str(path), load_external_data=False)
    for entry in proto.metadata_props:
        if entry.key == METADATA_KEY:
            return json.loads(entry.value)
    return {}


def convert_fp16(src: str | Path, out: str | Path) -> Path:
    """Half-precision copy for GPU serving: weights and math in fp16, uint8/fp32 I/O kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    proto = onnx.load(str(src))
    half = convert_float_to_float16(proto, keep_io_types=True)
    meta = read_metadata(src)
    meta["export"] = meta.get("export", {}) | {"precision": "fp16"}
    set_metadata(half, meta)
    onnx.checker.check_model(half)
    return atomic_write(out, lambda tmp: onnx.save(half, str(tmp)))


def _jsonable(obj: object) -> object:
    return obj.tolist() if hasattr(obj, "tolist") else str(obj)
