"""PyTorch eager vs ONNX Runtime on the healthcare app's served graph, side by side in one process.

    python benchmarks/healthcare_ort_vs_torch.py [--task image|signal|all] [--sizes 64 128] [--batches 1 32]
                                                 [--repeats 20] [--threads N]

The graph is exactly what `deepapps healthcare fit` exports (HealthcareTraining.build and .served).
Images: EfficientNet-Lite0, grey uint8 NHWC in (repeated to 3 channels inside), logits /
temperature -> softmax, with and without flip TTA (which runs the backbone twice). ECG signals
(configs/ecg.yaml, 140-sample ECG5000 beats, 5 classes): resnet1d and fcn (width 32) with
z-normalisation in the graph, and EfficientNet-Lite0 on the log-spectrogram (DFT conv1d front
end, 64x64). Prints the median latency per batch for both and the ORT/torch speed-up.
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

from deepapps.apps.healthcare.config import HealthcareFitConfig  # noqa: E402
from deepapps.apps.healthcare.training import HealthcareTraining  # noqa: E402
from deepapps.core.contract import Classification, problem_type  # noqa: E402
from deepapps.core.training.export import export_onnx  # noqa: E402
from deepapps.core.training.interface import Saved  # noqa: E402


def _served(cfg, labels: list[str], preprocess: dict, tta: bool = False):
    """(built, served module) as fit exports them, random weights, temperature 1.3."""
    training = HealthcareTraining()
    saved = Saved({}, Classification(labels, problem_type(len(labels), False)), preprocess)
    built = training.build(cfg, saved, with_data=False)
    return built, training.served(built, {"temperature": 1.3, "clinical": {"tta_flip": tta}}).module.eval()


def served_model(size: int, tta: bool, backbone: str):
    cfg = HealthcareFitConfig()
    cfg.data.image_size, cfg.data.crop_pct, cfg.model.backbone, cfg.clinical.tta_flip = size, 1.0, backbone, tta
    return _served(cfg, ["normal", "pneumonia"], {}, tta)


def served_signal_model(backbone: str):
    cfg = HealthcareFitConfig(task="signal")
    cfg.model.backbone, cfg.signal.length, cfg.signal.width = backbone, 140, 32
    return _served(cfg, ["normal", "r_on_t_pvc", "pvc", "sp_or_eb", "unclassified"], {"length": 140})


def time_pair(eager, session, name: str, batch_input: np.ndarray, repeats: int) -> tuple[float, float]:
    tensor = torch.from_numpy(batch_input)
    with torch.inference_mode():
        t_torch = median_seconds(lambda: eager(tensor), repeats)
    t_ort = median_seconds(lambda: session.run(None, {name: batch_input}), repeats)
    return t_torch, t_ort


def ort_session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def signal_rows(args, rng: np.random.Generator, tmp: str) -> None:
    print(f"{'ECG model':>28} {'batch':>5} {'torch eager ms':>15} {'ORT ms':>10} {'ORT speed-up':>13}")
    for backbone in ("resnet1d", "fcn", "tf_efficientnet_lite0"):
        built, eager = served_signal_model(backbone)
        path = Path(tmp) / f"ecg_{backbone}.onnx"
        meta = {"app": "healthcare", "task": "multiclass", "labels": built.labels,
                "inputs": [i.to_json() for i in built.inputs], "preprocess": built.preprocess}
        export_onnx(eager, built.dummy_inputs(4), path, ["signal"], meta)
        session = ort_session(path, args.threads)
        label = backbone if backbone in ("resnet1d", "fcn") else "spectrogram + lite0 (64 px)"
        for batch in args.batches:
            signals = rng.standard_normal((batch, 140)).astype(np.float32)
            t_torch, t_ort = time_pair(eager, session, "signal", signals, args.repeats)
            print(f"{label:>28} {batch:>5} {t_torch * 1e3:>15.2f} {t_ort * 1e3:>10.2f} {t_torch / t_ort:>12.2f}x",
                  flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="all", choices=["image", "signal", "all"])
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 1,
                        help="threads for both (1 gives steadier ratios on a busy machine)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    print(f"image backbone {args.backbone} (grey input), {args.threads} CPU threads each, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__} (CPU provider), load average {os.getloadavg()[0]:.1f}")
    with tempfile.TemporaryDirectory() as tmp:
        if args.task in ("signal", "all"):
            signal_rows(args, rng, tmp)
        if args.task == "signal":
            return
        print(f"{'size':>4} {'TTA':>4} {'batch':>5} {'torch eager ms':>15} {'ORT ms':>10} {'ORT speed-up':>13}")
        for size in args.sizes:
            for tta in (False, True):
                built, eager = served_model(size, tta, args.backbone)
                path = Path(tmp) / f"m{size}{tta}.onnx"
                meta = {"app": "healthcare", "task": "binary", "labels": built.labels,
                        "inputs": [i.to_json() for i in built.inputs], "preprocess": built.preprocess}
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
