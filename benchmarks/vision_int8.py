"""Static int8 (core.training.quantize) on real backbones: speed and accuracy on hymenoptera.

    python benchmarks/vision_int8.py [--data /work/shared/data/hymenoptera] [--backbones tf_efficientnet_lite0 resnet18]
        [--epochs 3] [--work /tmp/vision_int8]

For each backbone: fine-tune at 224 px with `deepapps vision fit` (EfficientNet-Lite0 from the
shared ImageNet weights; a backbone without local weights trains from random init), then for each
calibration method (entropy, percentile, minmax) quantise the fitted model.onnx and report:
accuracy on the val and test splits (int8 vs fp32, Serving.evaluate), ORT latency at batch 32
and 1 (int8 vs fp32) and torch eager at batch 1.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from deepapps.core.contract import read_metadata, set_metadata
from deepapps.core.runtime.image_classification import ImageServing
from deepapps.core.runtime.session import load_model
from deepapps.core.training.quantize import (
    CALIBRATION_METHODS,
    CALIBRATION_SIZE,
    STATIC,
    Int8Method,
    equal_batches,
    quantize_proto,
)

sys.path.insert(0, str(Path(__file__).parent))
from timing import interleaved_median_ms, median_seconds

SHARED_WEIGHTS = Path("/work/shared/weights")
NO_SPIN = {"session.intra_op.allow_spinning": "0"}
"""ORT threads otherwise spin after a call and take the cores from torch's next call (timed in turn)."""


def fit(backbone: str, data: str, run_dir: Path, epochs: int) -> Path:
    """`deepapps vision fit` at 224 px (skipped when run_dir already holds a model)."""
    if (run_dir / "model.onnx").is_file():
        return run_dir
    weights = SHARED_WEIGHTS / backbone / "model.safetensors"
    cmd = [sys.executable, "-m", "deepapps.apps.vision", "fit", "--data.path", data, "--model.backbone", backbone,
           "--model.pretrained", str(weights) if weights.is_file() else "null", "--data.image_size", "224",
           "--data.val_fraction", "0.3", "--data.batch_size", "16", "--trainer.max_epochs", str(epochs),
           "--trainer.patience", str(epochs), "--trainer.accelerator", "cpu", "--run_dir", str(run_dir)]
    subprocess.run(cmd, check=True)
    return run_dir


def calibration_inputs(run_dir: Path) -> list[np.ndarray]:
    """The validation images export_int8 calibrates on (the run's own split)."""
    from deepapps.core.cli import parse_config
    from deepapps.core.registry import get_app
    from deepapps.core.training.checkpoints import read_checkpoint, restore

    app = get_app("vision")
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    _, _, cfg, _ = parse_config(app, "export", ["--ckpt", str(ckpt)], with_ckpt=True)
    _, built = restore(app, read_checkpoint(ckpt), cfg, with_data=True)
    return equal_batches([np.ascontiguousarray(t.numpy()) for t in built.example_inputs(CALIBRATION_SIZE)]), built


def speed_only(backbone: str, data: str, methods: list[str], repeats: int) -> None:
    """int8 vs fp32 ORT and torch eager for a backbone with random weights (no local weights to fine-tune)."""
    from PIL import Image

    from deepapps.core.runtime.images import ImageSpec, to_model_input
    from deepapps.core.training.backbones import create_timm_model, data_config
    from deepapps.core.training.export import export_onnx
    from deepapps.core.training.heads import WithProbabilities
    from deepapps.core.training.image_model import ImageClassifier

    net, _ = create_timm_model(backbone, 0, None)
    cfg = data_config(net)
    eager = WithProbabilities(ImageClassifier(net, 2, cfg["mean"], cfg["std"]).eval(), multilabel=False).eval()
    spec = ImageSpec(224, cfg["crop_pct"], cfg["interpolation"])
    files = sorted(Path(data).glob("train/*/*"))[:: max(1, len(sorted(Path(data).glob("train/*/*"))) // 128)][:128]
    images = np.stack([to_model_input(Image.open(f), spec) for f in files])
    meta = {"app": "vision", "family": "image_classification", "task": "binary", "labels": ["a", "b"],
            "inputs": [{"name": "pixels", "dtype": "uint8"}], "outputs": [{"name": "probabilities", "dtype": "float32"}],
            "preprocess": spec.to_meta()}
    b32, b1 = images[:32], images[:1]
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "model.onnx"
        export_onnx(eager, (torch.from_numpy(images[:4]),), src, ["pixels"], meta)
        fp32 = load_model(src, "cpu", session_config=NO_SPIN)
        print(f"\n{backbone} @ 224 px (random init: no local weights, speed only; calibrated on {len(images)} "
              f"hymenoptera train images); {fp32.provider_note}")
        print("| calibration | ORT int8 b32 ms | int8/fp32 b32 | ORT int8 b1 ms | vs torch eager b1 |")
        print("|---|---|---|---|---|")
        for method in methods:
            proto = quantize_proto(src, Int8Method(STATIC, backbone, calibration=method), equal_batches([images]))
            set_metadata(proto, read_metadata(src))
            model = load_model(Path(tmp) / "q.onnx", "cpu", session_config=NO_SPIN, model_bytes=proto.SerializeToString())
            big = interleaved_median_ms({"fp32": lambda: fp32.run({"pixels": b32}),
                                         "int8": lambda: model.run({"pixels": b32})}, repeats)
            one = interleaved_median_ms({"fp32": lambda: fp32.run({"pixels": b1}),
                                         "int8": lambda: model.run({"pixels": b1}),
                                         "eager": lambda: _eager(eager, b1)}, repeats * 3)
            print(f"| {method} | {big['int8']:.0f} (fp32 {big['fp32']:.0f}) | {big['fp32'] / big['int8']:.2f}x | "
                  f"{one['int8']:.1f} (fp32 {one['fp32']:.1f}) | {one['eager'] / one['int8']:.2f}x "
                  f"(eager {one['eager']:.1f}) |", flush=True)


def _eager(module, pixels: np.ndarray):
    with torch.inference_mode():
        return module(torch.from_numpy(pixels))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="/work/shared/data/hymenoptera")
    parser.add_argument("--backbones", nargs="+", default=["tf_efficientnet_lite0", "resnet18"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--work", default="/tmp/vision_int8")
    parser.add_argument("--methods", nargs="+", default=list(CALIBRATION_METHODS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--speed-without-weights", type=bool, default=True,
                        help="a backbone without local pretrained weights: time it (random init, calibrated on "
                             "the data's images), no fit and no accuracy")
    args = parser.parse_args()
    evaluate = ImageServing().evaluate
    rng = np.random.default_rng(0)
    print(f"{os.cpu_count()} CPU cores, torch {torch.__version__} ({torch.get_num_threads()} threads)")
    for backbone in args.backbones:
        if not (SHARED_WEIGHTS / backbone / "model.safetensors").is_file() and args.speed_without_weights:
            speed_only(backbone, args.data, args.methods, args.repeats)
            continue
        run_dir = fit(backbone, args.data, Path(args.work) / backbone, args.epochs)
        src = run_dir / "model.onnx"
        calibration, built = calibration_inputs(run_dir)
        fp32 = load_model(src, "cpu", app="vision", session_config=NO_SPIN)
        base = {s: evaluate(fp32, args.data, s).metrics for s in ("val", "test")}
        b32 = rng.integers(0, 256, (32, 224, 224, 3), dtype=np.uint8)
        b1 = b32[:1]
        t32 = median_seconds(lambda: fp32.run({"pixels": b32}), args.repeats)
        t1 = median_seconds(lambda: fp32.run({"pixels": b1}), args.repeats * 3)
        from deepapps.core.training.heads import WithProbabilities

        eager = WithProbabilities(built.net.eval(), multilabel=False).eval()
        with torch.inference_mode():
            x1 = torch.from_numpy(b1)
            te1 = median_seconds(lambda: eager(x1), args.repeats * 3)
        print(f"\n{backbone} @ 224 px: {len(calibration[0])} calibration images; fp32 val acc "
              f"{base['val']['accuracy']:.4f} test acc {base['test']['accuracy']:.4f} (n={base['test']['n']}); "
              f"fp32 ORT b32 {t32 * 1e3:.0f} ms, b1 {t1 * 1e3:.1f} ms; torch eager b1 {te1 * 1e3:.1f} ms; {fp32.provider_note}")
        print("| calibration | val acc int8 | test acc int8 | test loss pts | ORT b32 ms | int8/fp32 b32 | ORT b1 ms | "
              "vs torch eager b1 |")
        print("|---|---|---|---|---|---|---|---|")
        for method in args.methods:
            proto = quantize_proto(src, Int8Method(STATIC, backbone, calibration=method), calibration)
            set_metadata(proto, read_metadata(src))
            with tempfile.TemporaryDirectory() as tmp:
                model = load_model(Path(tmp) / "model.int8.onnx", "cpu", app="vision", session_config=NO_SPIN,
                                   model_bytes=proto.SerializeToString())
                m = {s: evaluate(model, args.data, s).metrics for s in ("val", "test")}
                big = interleaved_median_ms({"fp32": lambda: fp32.run({"pixels": b32}),
                                             "int8": lambda: model.run({"pixels": b32})}, args.repeats)
                one = interleaved_median_ms({"fp32": lambda: fp32.run({"pixels": b1}),
                                             "int8": lambda: model.run({"pixels": b1}),
                                             "eager": lambda: _eager(eager, b1)}, args.repeats * 3)
            loss = 100 * (base["test"]["accuracy"] - m["test"]["accuracy"])
            print(f"| {method} | {m['val']['accuracy']:.4f} | {m['test']['accuracy']:.4f} | {loss:+.2f} | "
                  f"{big['int8']:.0f} (fp32 {big['fp32']:.0f}) | {big['fp32'] / big['int8']:.2f}x | "
                  f"{one['int8']:.1f} (fp32 {one['fp32']:.1f}) | {one['eager'] / one['int8']:.2f}x "
                  f"(eager {one['eager']:.1f}) |", flush=True)


if __name__ == "__main__":
    main()
