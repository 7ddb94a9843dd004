"""torch -> ONNX: the served module, onnx.checker, an ORT-vs-torch parity check, the contract.

Like timm's onnx_export.py, an export is never trusted until ONNX Runtime has reproduced the
PyTorch outputs on a real batch.
"""

from __future__ import annotations

import hashlib
import logging
import warnings
from dataclasses import asdict
from datetime import datetime, timezone
from io import BytesIO
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from torch import nn

from deepapps.core import __version__
from deepapps.core.contract import ModelContract, Provenance, copy_with_metadata, read_metadata, set_metadata
from deepapps.core.data.fingerprint import fingerprint
from deepapps.core.errors import ExportParityError
from deepapps.core.runtime.io import atomic_write
from deepapps.core.training.interface import Built, Training

log = logging.getLogger(__name__)

OPSET = 18
OUTPUT_NAME = "probabilities"
PARITY_TOLERANCE = 1e-4


def export_graph(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], input_names: list[str],
    output_names: list[str] | None = None, dynamic_axes: dict[str, dict[int, str]] | None = None,
    tolerance: float = PARITY_TOLERANCE, name: str = "model.onnx",
) -> tuple[onnx.ModelProto, dict]:
    """Export `model` as it will be served and check it; nothing is written.

    Args:
        model: inputs -> served outputs (e.g. logits + softmax).
        example_inputs: a real batch; also used for the parity check.
        input_names: graph input names, one per example input.
        output_names: graph output names; default `probabilities`.
        dynamic_axes: per input and output, the dynamic axes; default makes axis 0 `batch`.
        tolerance: largest allowed |onnx - torch| over every output.
        name: the file it is meant for (error messages).

    Returns:
        (the checked ModelProto, the contract's `export` section: opset, torch, parity).

    Raises:
        ExportParityError: ONNX Runtime's outputs differ from torch's by more than tolerance.
    """
    model = model.eval().cpu().float()
    output_names = output_names or [OUTPUT_NAME]
    example_inputs = tuple(x.cpu() for x in example_inputs)
    axes = dynamic_axes or {n: {0: "batch"} for n in [*input_names, *output_names]}
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
        raise ExportParityError(f"{name}: ONNX Runtime differs from torch by {diff:.2e} (> {tolerance:.0e}); not written")
    log.info("exported %s (parity max abs diff %.2e)", name, diff)
    return proto, {"opset": OPSET, "torch": torch.__version__, "parity_max_abs_diff": diff,
                   "parity_batch": int(len(example_inputs[0]))}


def export_onnx(
    model: nn.Module, example_inputs: tuple[torch.Tensor, ...], out: str | Path, input_names: list[str],
    metadata: dict, output_names: list[str] | None = None, dynamic_axes: dict[str, dict[int, str]] | None = None,
    tolerance: float = PARITY_TOLERANCE,
) -> dict:
    """`export_graph`, then write `out` atomically with `metadata` (a raw document) plus the
    version, time and export sections; returns the document written. For tools and tests: apps
    export through `export_model`, whose metadata is a checked contract."""
    proto, info = export_graph(model, example_inputs, input_names, output_names, dynamic_axes, tolerance, str(out))
    metadata = metadata | {"version": __version__, "created": _now(), "export": info}
    set_metadata(proto, metadata)
    atomic_write(out, lambda tmp: onnx.save(proto, str(tmp)))
    return metadata


def export_model(app: str, training: Training, built: Built, cfg, config: dict, state: dict, metrics: dict,
                 name: str = "model.onnx") -> tuple[onnx.ModelProto, ModelContract]:
    """The app's served module for post-fit `state`, exported and checked, with its contract
    (the same for fit and `export --ckpt`). Nothing is written."""
    served = training.served(built, state)
    proto, info = export_graph(
        served.module, built.example_inputs(8), [i.name for i in built.inputs], [o.name for o in built.outputs],
        built.dynamic_axes, built.parity_tolerance, name,
    )
    data = built.datamodule.summary() if built.datamodule is not None else {}
    if built.datamodule is not None:  # evaluate --split auto tells the training data from other data by it
        data = data | {"fingerprint": fingerprint(cfg.data.path)}
    contract = ModelContract(
        app=app, family=built.family, kind=served.kind, inputs=built.inputs, outputs=built.outputs,
        preprocess=built.preprocess, metrics=metrics,
        train=Provenance(
            data={k: data[k] for k in ("source", "sizes", "notes", "fingerprint") if k in data},
            data_config=asdict(cfg.data), backbone=built.backbone, pretrained=built.weights,
            config_sha256=hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest(),
        ),
        version=__version__, created=_now(), export=info,
        details=served.details | ({"privacy": state["privacy"]} if state.get("privacy") else {}),
    )
    return proto, contract


def parity(model_bytes: bytes, inputs: tuple[torch.Tensor, ...], names: list[str], expected: list[np.ndarray]) -> float:
    """Max abs difference between ONNX Runtime (CPU) and `expected` over all outputs."""
    session = ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])
    got = session.run(None, {n: x.numpy() for n, x in zip(names, inputs)})
    return max(float(np.max(np.abs(g.astype(np.float64) - e.astype(np.float64)))) for g, e in zip(got, expected))


def convert_fp16(src: str | Path, out: str | Path) -> Path:
    """Half-precision copy for GPU serving: weights and math in fp16, uint8/fp32 I/O kept."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    original = read_metadata(src)
    half = convert_float_to_float16(onnx.load(str(src)), keep_io_types=True)
    return copy_with_metadata(half, out, original,
                              lambda meta: meta | {"export": meta.get("export", {}) | {"precision": "fp16"}})


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
