"""PyTorch eager vs ONNX Runtime on the same exported vision model, side by side in one process.

    python benchmarks/vision_ort_vs_torch.py [--backbone resnet18] [--size 224] [--batches 1 32]

Prints median latency per batch for both, the ORT/torch speed-up, and the predict cold start
(process start to first prediction written, `deepapps vision predict` on one image).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from deepapps.core.training.export import export_onnx
from deepapps.core.training.backbones import create_timm_model, data_config
from deepapps.core.training.heads import WithProbabilities
from deepapps.core.training.image_model import ImageClassifier
from deepapps.core.runtime.session import load_model
from timing import median_seconds  # benchmarks/timing.py (scripts run from this folder)



def cold_start(model: Path, image: Path, runs: int = 3) -> float:
    """Median wall time of `deepapps vision predict` on one image, process start to exit."""
    cmd = [sys.executable, "-m", "deepapps.apps.vision", "predict", "--model", str(model), str(image)]
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        subprocess.run(cmd, check=True, capture_output=True)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="resnet18", help="timm model name")
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)

    backbone, _ = create_timm_model(args.backbone, 0, pretrained=None)
    cfg = data_config(backbone)
    net = ImageClassifier(backbone, 10, cfg["mean"], cfg["std"]).eval()
    eager = WithProbabilities(net, multilabel=False).eval()
    rng = np.random.default_rng(0)

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "model.onnx"
        example = torch.from_numpy(rng.integers(0, 256, (4, args.size, args.size, 3), dtype=np.uint8))
        meta = {"app": "vision", "family": "image_classification", "task": "multiclass",
                "labels": [str(i) for i in range(10)], "inputs": [{"name": "pixels", "dtype": "uint8"}],
                "outputs": [{"name": "probabilities", "dtype": "float32"}],
                "preprocess": {"size": args.size, "crop_pct": cfg["crop_pct"],
                               "interpolation": cfg["interpolation"], "channels": 3}}
        export_onnx(eager, (example,), path, ["pixels"], meta)
        session = load_model(path, provider="cpu")

        print(f"{args.backbone} @ {args.size}px, {os.cpu_count()} CPU threads, torch {torch.__version__}, "
              f"{session.provider_note}")
        print(f"{'batch':>5} {'torch eager ms':>15} {'ORT ms':>10} {'ORT speed-up':>13}")
        for batch in args.batches:
            pixels = rng.integers(0, 256, (batch, args.size, args.size, 3), dtype=np.uint8)
            tensor = torch.from_numpy(pixels)
            with torch.inference_mode():
                t_torch = median_seconds(lambda: eager(tensor), args.repeats)
            t_ort = median_seconds(lambda: session.run({"pixels": pixels}), args.repeats)
            print(f"{batch:>5} {t_torch * 1e3:>15.1f} {t_ort * 1e3:>10.1f} {t_torch / t_ort:>12.2f}x")

        image = Path(tmp) / "one.png"
        Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8)).save(image)
        print(f"predict cold start (process start to CSV on stdout, median of 3): {cold_start(path, image):.2f} s")


if __name__ == "__main__":
    main()
