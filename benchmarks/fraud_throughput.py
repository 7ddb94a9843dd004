"""Fraud scoring throughput: `deepapps fraud predict` end to end (read, score, write), in one run.

    python benchmarks/fraud_throughput.py [--rows 1000000 10000000] [--arch mlp]

Generates synthetic transactions (Parquet), trains nothing: a freshly initialised network with
features fitted on the data is exported exactly as fit exports it (the speed does not depend
on the weights). Prints rows/s and peak RSS of a separate predict process per size, then the
ONNX Runtime vs PyTorch eager speed ratio at batch 1 and 4096.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import polars as pl
import torch

from apps.finance.fraud.config import TabularModelConfig
from apps.finance.fraud.features import FeatureSpec, encode
from apps.finance.fraud.model import create_model
from apps.finance.fraud.synth import generate
from apps.finance.tables import detect_columns
from core.export import export_onnx
from core.models.heads import WithProbabilities
from core.runtime.session import load_model
from timing import median_seconds  # benchmarks/timing.py (scripts run from this folder)


def make_data(rows: int, folder: Path) -> Path:
    """`rows` transactions as Parquet, written in 1M-row pieces so generation memory stays small."""
    path = folder / f"tx_{rows}.parquet"
    piece = min(rows, 1_000_000)
    parts = []
    for i in range(0, rows, piece):
        part = folder / f"part_{rows}_{i}.parquet"
        generate(min(piece, rows - i), 0.002, seed=i).drop("is_fraud").write_parquet(part)
        parts.append(part)
    pl.scan_parquet(parts).sink_parquet(path)
    for part in parts:
        part.unlink()
    return path


def predict_run(model: Path, data: Path, out: Path) -> tuple[float, float]:
    """(seconds, peak RSS MiB from /proc VmHWM, which exec resets) of `python -m apps.finance.fraud predict` in a child process."""
    code = ("import runpy, sys; sys.argv = ['deepapps'] + sys.argv[1:]\n"
            "try:\n    runpy.run_module('apps.finance.fraud', run_name='__main__')\n"
            "finally:\n    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
            "    print('PEAK_KB', hwm, file=sys.stderr)\n"
            "    print('TORCH_IMPORTED', 'torch' in sys.modules, file=sys.stderr)")
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code, "predict", "--model", str(model), str(data), "--out", str(out),
                           "--provider", "cpu"], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    if done.returncode:
        raise SystemExit(done.stderr)
    peak = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_KB")][0]
    assert "TORCH_IMPORTED False" in done.stderr, "predict imported torch"
    return seconds, peak / 1024



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--arch", default="mlp", choices=["mlp", "ft_transformer"])
    parser.add_argument("--folder", default=None, help="where the data goes (default: a temp folder)")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    folder = Path(args.folder or tempfile.mkdtemp(prefix="fraud-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"cpu cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; arch: {args.arch}")

    train = generate(200_000, 0.002, seed=0)
    cols = detect_columns(train.schema, "bench")
    spec = FeatureSpec.fit(train, cols, 1, None)
    net = create_model(spec, TabularModelConfig(arch=args.arch)).eval()
    enc = encode(train.head(4096), spec)
    inputs = (torch.from_numpy(enc.numeric.copy()), torch.from_numpy(enc.categorical.copy()))
    model_path = folder / f"fraud_{args.arch}.onnx"
    export_onnx(WithProbabilities(net, False), inputs, model_path, ["numeric", "categorical"],
                {"app": "fraud", "task": "binary", "labels": ["normal", "fraud"], "preprocess": spec.to_meta(),
                 "threshold": 0.5})

    for rows in args.rows:
        data = make_data(rows, folder)
        seconds, peak = predict_run(model_path, data, folder / "scores.parquet")
        print(f"predict {rows:>11,} rows: {seconds:6.2f} s end to end = {rows / seconds:,.0f} rows/s "
              f"(process start, read Parquet, score, write Parquet); peak RSS {peak:,.0f} MiB")
        data.unlink()

    model = load_model(model_path, "cpu", app="fraud")
    wrapped = WithProbabilities(net, False).eval()
    for batch in (1, 4096):
        feeds = {"numeric": enc.numeric[:batch], "categorical": enc.categorical[:batch]}
        tensors = (inputs[0][:batch], inputs[1][:batch])
        ort_s = median_seconds(lambda: model.run(feeds))
        with torch.inference_mode():
            torch_s = median_seconds(lambda: wrapped(*tensors))
        print(f"batch {batch:>5}: ORT {ort_s * 1e3:8.3f} ms, torch eager {torch_s * 1e3:8.3f} ms, "
              f"ORT speed-up x{torch_s / ort_s:.2f} ({batch / ort_s:,.0f} rows/s ORT)")
    print(f"benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
