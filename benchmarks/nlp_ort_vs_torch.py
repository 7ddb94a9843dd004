"""Text classifier speed, side by side in one process: PyTorch eager vs ORT fp32 vs ORT int8.

    python benchmarks/nlp_ort_vs_torch.py --model runs/nlp/<run>/model.onnx [--int8 model.int8.onnx]
        [--shapes 1x64 32x128] [--repeats 20]

Torch eager is the same fine-tuned network, rebuilt from the run's best checkpoint. Inputs are
real token ids (a tokenised review repeated to the length), identical for every engine. Prints
the median latency per batch and the ratios the nlp issue asks for.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

# Calls are interleaved in one process: torch's OpenMP workers must sleep between calls, or they
# spin on the cores while ONNX Runtime runs (this halved ORT's speed at 2 threads in a test).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import torch  # noqa: E402  (after the OpenMP setting)
from timing import interleaved_median_ms  # benchmarks/timing.py (scripts run from this folder)


def with_threads(model, threads: int):
    """The same model on a session with `threads` intra-op threads (torch gets as many)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    model.session = ort.InferenceSession(str(model.path), options, providers=["CPUExecutionProvider"])
    return model


def main() -> None:
    from deepapps.apps.nlp import APP
    from deepapps.apps.nlp.runtime import tokenizer_of
    from deepapps.core.runtime.session import load_model
    from deepapps.core.training.checkpoints import app_config, load_checkpoint, read_checkpoint

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--int8", help="default: <model>.int8.onnx when it exists")
    parser.add_argument("--ckpt", help="default: checkpoints/best.ckpt beside the model")
    parser.add_argument("--shapes", nargs="+", default=["1x64", "32x128"])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2, help="torch threads = ORT intra-op threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model_path = Path(args.model)
    int8_path = Path(args.int8) if args.int8 else model_path.with_suffix(".int8.onnx")
    ckpt = Path(args.ckpt) if args.ckpt else model_path.parent / "checkpoints" / "best.ckpt"
    fp32 = with_threads(load_model(model_path, "cpu", app="nlp"), args.threads)
    int8 = with_threads(load_model(int8_path, "cpu", app="nlp"), args.threads) if int8_path.is_file() else None
    cfg = app_config(APP, read_checkpoint(ckpt))
    task, _ = load_checkpoint(APP, ckpt, cfg, with_data=False)
    net = task.net.eval()
    real = tokenizer_of(fp32).encode("an honest review of a product that mostly works as described " * 20).ids
    print(f"torch {torch.__version__} and ONNX Runtime, {args.threads} threads each, calls interleaved; "
          f"model {model_path}")
    print(f"{'batch x tokens':>15} {'torch ms':>9} {'ort fp32 ms':>11} {'ort int8 ms':>11} {'fp32/eager':>10} {'int8/fp32':>9}")
    for shape in args.shapes:
        b, t = (int(x) for x in shape.split("x"))
        ids = np.tile(np.resize(np.asarray(real, np.int64), t), (b, 1))  # (B, T)
        mask = np.ones_like(ids)
        feeds = {"input_ids": ids, "attention_mask": mask}
        ti, tm = torch.from_numpy(ids), torch.from_numpy(mask)
        calls = {"eager": lambda: net(ti, tm).softmax(-1), "fp32": lambda: fp32.run(feeds)}
        if int8:
            calls["int8"] = lambda: int8.run(feeds)
        with torch.inference_mode():
            ms = interleaved_median_ms(calls, args.repeats)
        eager, ort32, ort8 = ms["eager"], ms["fp32"], ms.get("int8", float("nan"))
        print(f"{shape:>15} {eager:9.2f} {ort32:11.2f} {ort8:11.2f} {eager / ort32:9.2f}x {ort32 / ort8:8.2f}x")


if __name__ == "__main__":
    main()
