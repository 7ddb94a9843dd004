"""`deepapps import`: wrap a classifier exported elsewhere (tf2onnx, Keras, ...) into a deepapps model.

The foreign graph is framed by a preprocessing graph (uint8 NHWC pixels -> scale, mean/std,
layout) and, for logits, a softmax, then given the deepapps metadata, so predict, evaluate and
serve treat it like a model trained here. Torch-free: only `onnx` and ONNX Runtime.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, compose, helper

from deepapps.core import __version__
from deepapps.core.contract import Classification, ModelContract, Provenance, TensorSpec, problem_type, write_model
from deepapps.core.errors import ConfigError, ModelFileError

PIXELS, PROBABILITIES = "pixels", "probabilities"
FAMILY = "image_classification"  # the apps whose models this makes


def import_classifier(
    foreign: Path, out: Path, app: str, labels: list[str], size: int, mean: list[float], std: list[float],
    scale: float = 255.0, layout: str = "NCHW", outputs: str = "logits", crop_pct: float = 1.0,
    interpolation: str = "bilinear",
) -> ModelContract:
    """Write `out`: the foreign classifier behind deepapps preprocessing, with its contract.

    Args:
        foreign: ONNX classifier taking float pixels (N, 3, H, W) or (N, H, W, 3).
        labels: class names, in the order of the foreign model's outputs.
        size: square input size the foreign model expects.
        mean, std: per-channel normalisation after dividing by `scale`.
        layout: the foreign input's layout, NCHW or NHWC.
        outputs: `logits` (a softmax is added) or `probabilities` (kept as they are).
        crop_pct, interpolation: how predict resizes images before the graph.

    Returns:
        The contract written.
    """
    try:
        model = onnx.load(str(foreign))
        onnx.checker.check_model(model)
    except Exception as exc:  # onnx raises several types for bad files
        raise ModelFileError(f"{foreign}: not a valid ONNX model ({str(exc).splitlines()[0][:200]})") from None
    if len(model.graph.input) != 1 or len(model.graph.output) != 1:
        raise ModelFileError(f"{foreign}: expected one input and one output, found "
                             f"{len(model.graph.input)} and {len(model.graph.output)}")
    if layout not in ("NCHW", "NHWC") or outputs not in ("logits", "probabilities"):
        raise ConfigError("--layout must be NCHW or NHWC, --outputs logits or probabilities")
    if len(mean) != 3 or len(std) != 3:
        raise ConfigError("--mean and --std need 3 values (one per RGB channel)")
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    pre = _preprocessing(model.graph.input[0].name, mean, std, scale, layout, opset, model.ir_version)
    post = _postprocessing(model.graph.output[0].name, outputs, opset, model.ir_version)
    merged = compose.merge_models(pre, model, io_map=[(pre.graph.output[0].name, model.graph.input[0].name)],
                                  prefix2="foreign/")
    merged = compose.merge_models(merged, post, io_map=[(merged.graph.output[0].name, post.graph.input[0].name)])
    onnx.checker.check_model(merged)
    _check_outputs(merged, size, len(labels), foreign)
    contract = ModelContract(
        app=app, family=FAMILY, kind=Classification(labels, problem_type(len(labels), False)),
        inputs=[TensorSpec(PIXELS, "uint8", ["batch", size, size, 3], "NHWC")],
        outputs=[TensorSpec(PROBABILITIES, "float32")],
        preprocess={"size": size, "crop_pct": crop_pct, "interpolation": interpolation, "channels": 3,
                    "mean": mean, "std": std, "scale": scale, "layout": "NHWC", "dtype": "uint8",
                    "in_graph": f"divide by {scale:g}, normalise with mean/std, NHWC->{layout}"},
        train=Provenance(imported_from=str(foreign), extra={"foreign_outputs": outputs}),
        version=__version__, created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        export={"opset": opset, "imported": True},
    )
    write_model(out, merged, contract)
    return contract


def _preprocessing(target: str, mean, std, scale, layout, opset, ir_version) -> onnx.ModelProto:
    """uint8 (N, S, S, 3) -> float, / scale, - mean, / std, -> the foreign layout."""
    shape = [1, 1, 1, 3]
    inits = [
        helper.make_tensor("pre/scale", TensorProto.FLOAT, [], [scale]),
        helper.make_tensor("pre/mean", TensorProto.FLOAT, shape, mean),
        helper.make_tensor("pre/std", TensorProto.FLOAT, shape, std),
    ]
    nodes = [
        helper.make_node("Cast", [PIXELS], ["pre/float"], to=TensorProto.FLOAT),
        helper.make_node("Div", ["pre/float", "pre/scale"], ["pre/scaled"]),
        helper.make_node("Sub", ["pre/scaled", "pre/mean"], ["pre/centred"]),
        helper.make_node("Div", ["pre/centred", "pre/std"], ["pre/normalised"]),
    ]
    last = "pre/normalised"
    if layout == "NCHW":
        nodes.append(helper.make_node("Transpose", [last], ["pre/nchw"], perm=[0, 3, 1, 2]))
        last = "pre/nchw"
    graph = helper.make_graph(
        nodes, "deepapps_preprocess",
        [helper.make_tensor_value_info(PIXELS, TensorProto.UINT8, ["batch", None, None, 3])],
        [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)], initializer=inits,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def _postprocessing(source: str, outputs: str, opset: int, ir_version: int) -> onnx.ModelProto:
    node = (helper.make_node("Softmax", ["post/in"], [PROBABILITIES], axis=-1) if outputs == "logits"
            else helper.make_node("Identity", ["post/in"], [PROBABILITIES]))
    graph = helper.make_graph(
        [node], "deepapps_postprocess", [helper.make_tensor_value_info("post/in", TensorProto.FLOAT, None)],
        [helper.make_tensor_value_info(PROBABILITIES, TensorProto.FLOAT, ["batch", None])],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir_version)


def _check_outputs(model: onnx.ModelProto, size: int, n_labels: int, foreign: Path) -> None:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    pixels = np.random.default_rng(0).integers(0, 256, (2, size, size, 3), dtype=np.uint8)
    try:
        probs = session.run(None, {PIXELS: pixels})[0]
    except Exception as exc:  # ORT's errors name the node that failed
        raise ModelFileError(f"{foreign}: does not run on ({size}, {size}) images: {str(exc).splitlines()[0][:200]}") from None
    if probs.shape != (2, n_labels):
        raise ConfigError(f"{foreign}: outputs {probs.shape[-1]} scores per image, but {n_labels} labels were given")
    if not np.allclose(probs.sum(-1), 1.0, atol=1e-3):
        raise ConfigError(f"{foreign}: outputs do not sum to 1; pass --outputs logits")


def main(argv: list[str]) -> int:
    """`deepapps import --app vision --onnx FOREIGN.onnx --labels a,b,c [options]`."""
    from deepapps.core.cli import OneLineParser
    from deepapps.core.registry import discover_apps
    from deepapps.core.runtime.interface import positive_int

    parser = OneLineParser(prog="deepapps import", allow_abbrev=False,
                           description="wrap a classifier exported by another framework into a deepapps model")
    apps = {name: spec for name, spec in discover_apps().items() if spec.family == FAMILY}
    parser.add_argument("--app", choices=list(apps), help="the app whose model it becomes (default: the general one)",
                        default=next((name for name, spec in apps.items() if spec.family_default), None))
    parser.add_argument("--onnx", required=True, type=Path, help="the foreign .onnx classifier")
    parser.add_argument("--labels", required=True, help="comma-separated class names, or @FILE with one per line")
    parser.add_argument("--size", type=positive_int, default=224, help="square input size in pixels")
    parser.add_argument("--mean", default="0.485,0.456,0.406", help="per-channel mean after scaling")
    parser.add_argument("--std", default="0.229,0.224,0.225", help="per-channel std after scaling")
    parser.add_argument("--scale", type=float, default=255.0, help="pixels are divided by this first")
    parser.add_argument("--layout", default="NCHW", help="the foreign input layout: NCHW or NHWC (Keras)")
    parser.add_argument("--outputs", default="logits", help="logits (adds softmax) or probabilities")
    parser.add_argument("--crop-pct", dest="crop_pct", type=float, default=1.0)
    parser.add_argument("--out", type=Path, help="default: FOREIGN.deepapps.onnx")
    args = parser.parse_args(argv)
    if args.app is None:
        raise ConfigError("deepapps import: give --app (one of: " + ", ".join(apps) + ")")
    if args.labels.startswith("@"):
        try:
            text = Path(args.labels[1:]).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--labels {args.labels}: cannot read {args.labels[1:]} ({type(exc).__name__})") from None
        labels = [line.strip() for line in text.splitlines() if line.strip()]
    else:
        labels = [label.strip() for label in args.labels.split(",") if label.strip()]
    if len(labels) < 2 or len(set(labels)) != len(labels):
        raise ConfigError(f"--labels: need two or more distinct class names, got {labels[:5]}")
    if not (args.scale > 0 and 0 < args.crop_pct <= 1):
        raise ConfigError("--scale must be positive and --crop-pct in (0, 1]")
    try:
        mean, std = [float(x) for x in args.mean.split(",")], [float(x) for x in args.std.split(",")]
    except ValueError:
        raise ConfigError("--mean/--std: comma-separated numbers expected") from None
    if any(not s > 0 for s in std):
        raise ConfigError(f"--std {args.std}: every value must be positive")
    out = args.out or args.onnx.with_suffix(".deepapps.onnx")
    import_classifier(args.onnx, out, args.app, labels, args.size, mean, std, args.scale, args.layout,
                      args.outputs, args.crop_pct)
    print(out)
    return 0
