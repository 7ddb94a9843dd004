"""PyTorch eager vs ONNX Runtime on the healthcare app's served graph, side by side in one process.

    python benchmarks/healthcare_ort_vs_torch.py [--sizes 64 128] [--batches 1 32] [--repeats 20] [--threads N]

The graph is exactly what `deepapps healthcare fit` exports (apps.healthcare.pipeline.build):
EfficientNet-Lite0, grey uint8 NHWC in (repeated to 3 channels inside), logits / temperature ->
softmax, with and without flip TTA (which runs the backbone twice). Prints the median latency
per batch for both and the ORT/torch speed-up.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import onnxruntime as ort
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from vision_ort_vs_torch import median_seconds  # noqa: E402

from apps.healthcare.config import HealthcareFitConfig  # noqa: E402
from apps.healthcare.pipeline import build  # noqa: E402
from core.export import export_onnx  # noqa: E402


def served_model(size: int, tta: bool, backbone: str):
    cfg = HealthcareFitConfig()
    cfg.data.image_size, cfg.data.crop_pct, cfg.model.backbone, cfg.clinical.tta_flip = size, 1.0, backbone, tta
    built = build(cfg, pretrained=None, labels=["normal", "pneumonia"], with_data=False)
    return built, built.export_module(temperature=1.3).eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for both (1 gives steadier ratios on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"{args.backbone}, grey input, {args.threads} CPU threads each, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__} (CPU provider), load average {os.getloadavg()[0]:.1f}")
    print(f"{'size':>4} {'TTA':>4} {'batch':>5} {'torch eager ms':>15} {'ORT ms':>10} {'ORT speed-up':>13}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            for tta in (False, True):
                built, eager = served_model(size, tta, args.backbone)
                path = Path(tmp) / f"m{size}{tta}.onnx"
                meta = {"app": "healthcare", "task": "binary", "labels": built.labels, "inputs": built.inputs,
                        "preprocess": built.preprocess}
                export_onnx(eager, built.dummy_inputs(4), path, ["pixels"], meta)
                options = ort.SessionOptions()
                options.intra_op_num_threads = args.threads
                session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
                for batch in args.batches:
                    pixels = rng.integers(0, 256, (batch, size, size, 1), dtype=np.uint8)
                    tensor = torch.from_numpy(pixels)
                    with torch.inference_mode():
                        t_torch = median_seconds(lambda: eager(tensor), args.repeats)
                    t_ort = median_seconds(lambda: session.run(None, {"pixels": pixels}), args.repeats)
                    print(f"{size:>4} {'flip' if tta else 'no':>4} {batch:>5} {t_torch * 1e3:>15.2f} "
                          f"{t_ort * 1e3:>10.2f} {t_torch / t_ort:>12.2f}x", flush=True)


if __name__ == "__main__":
    main()
