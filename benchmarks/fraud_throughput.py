"""Fraud scoring throughput: `deepapps fraud predict` end to end (read, score, write), in one run.

    python benchmarks/fraud_throughput.py [--rows 1000000 10000000] [--arch mlp] [--folder DIR]

Generates synthetic transactions (Parquet), trains nothing: a freshly initialised network with
features fitted on the data is exported exactly as fit exports it (the speed does not depend
on the weights). Prints, per size, rows/s, CPU seconds and peak RSS of a separate predict
process; then where the time goes (polars read, encoding, the ONNX graph alone, the write);
then the ONNX Runtime vs PyTorch eager speed ratio at batch 1 and 4096. The load average is
printed with every timing: the machine may be shared.
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

from deepapps.apps.finance.fraud.config import TabularModelConfig
from deepapps.apps.finance.fraud.features import FeatureSpec, encode
from deepapps.apps.finance.fraud.model import create_model, served_module
from deepapps.apps.finance.fraud.synth import generate
from deepapps.apps.finance.fraud.tables import detect_columns
from deepapps.core.training.export import export_onnx
from deepapps.core.runtime.session import load_model
from timing import median_seconds  # benchmarks/timing.py (scripts run from this folder)

CHILD = """import runpy, sys
sys.argv = ['deepapps'] + sys.argv[1:]
try:
    runpy.run_module('deepapps.apps.finance.fraud', run_name='__main__')
finally:
    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]
    print('PEAK_KB', hwm, file=sys.stderr)
    print('TORCH_IMPORTED', 'torch' in sys.modules, file=sys.stderr)
"""


def load() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def make_data(rows: int, folder: Path) -> Path:
    """`rows` transactions as Parquet (kept for the next run), generated in 1M-row pieces."""
    path = folder / f"tx_{rows}.parquet"
    if path.is_file():
        return path
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


def predict_run(model: Path, data: Path, out: Path, chunk_size: int | None) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MiB) of `deepapps fraud predict` in a child process.

    Peak RSS is the child's VmHWM (ru_maxrss would carry the parent's across exec).
    """
    extra = ["--chunk-size", str(chunk_size)] if chunk_size else []
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", CHILD, "predict", "--model", str(model), str(data), "--out", str(out),
                           "--provider", "cpu", *extra], capture_output=True, text=True)
    seconds = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode:
        raise SystemExit(done.stderr)
    peak = [int(line.split()[1]) for line in done.stderr.splitlines() if line.startswith("PEAK_KB")][0]
    assert "TORCH_IMPORTED False" in done.stderr, "predict imported torch"
    cpu = after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime
    return seconds, cpu, peak / 1024


def stages(model_path: Path, data: Path, out: Path, chunk: int = 262_144) -> None:
    """Each step of predict alone on the same file, in this process."""
    from deepapps.apps.finance.fraud.runtime import BATCH_SESSION, score

    model = load_model(model_path, "cpu", app="fraud", session_config=BATCH_SESSION)
    spec = FeatureSpec.from_meta(model.contract.preprocess)
    columns = [*spec.ids, *spec.numeric, *spec.categorical]
    lf = pl.scan_parquet(data).select(columns)
    timed = {}
    start = time.perf_counter()
    rows = sum(c.height for c in lf.collect_batches(chunk_size=chunk))
    timed["read (polars collect_batches)"] = time.perf_counter() - start
    start = time.perf_counter()
    encoded = [encode(c, spec) for c in lf.head(chunk * 2).collect_batches(chunk_size=chunk)]
    timed["encode (numerics, category codes, row errors)"] = (time.perf_counter() - start) * rows / (2 * chunk)
    enc = encoded[0]
    score(model, enc)  # warm-up
    start = time.perf_counter()
    for e in encoded:
        score(model, e)
    timed["ONNX graph alone"] = (time.perf_counter() - start) * rows / (2 * chunk)
    frame = pl.scan_parquet(data).select(spec.ids).collect().with_columns(
        score=pl.lit(0.5, pl.Float32), decision=pl.lit(True), error=pl.lit(None, pl.String))
    start = time.perf_counter()
    frame.write_parquet(out)
    timed["write output Parquet"] = time.perf_counter() - start
    for name, seconds in timed.items():
        print(f"  {name:<46} {seconds:6.3f} s for {rows:,} rows = {rows / seconds:>12,.0f} rows/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000])
    parser.add_argument("--arch", default="mlp", choices=["mlp", "ft_transformer"])
    parser.add_argument("--chunk-size", type=int, default=None, help="predict --chunk-size (default: predict's)")
    parser.add_argument("--repeats", type=int, default=1, help="predict runs per size (the best is printed too)")
    parser.add_argument("--folder", default=None, help="where the data goes (default: a temp folder); kept for reruns")
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    folder = Path(args.folder or tempfile.mkdtemp(prefix="fraud-bench-"))
    folder.mkdir(parents=True, exist_ok=True)
    print(f"cpu cores: {os.cpu_count()}; torch threads: {torch.get_num_threads()}; arch: {args.arch}; {load()}")

    train = generate(200_000, 0.002, seed=0)
    cols = detect_columns(train.schema, "bench")
    spec = FeatureSpec.fit(train, cols, 1, None)
    net = create_model(spec, TabularModelConfig(arch=args.arch))
    enc = encode(train.head(4096), spec)
    inputs = (torch.from_numpy(enc.numeric.copy()), torch.from_numpy(enc.categorical.copy()))
    with torch.no_grad():
        net.train()(*inputs)  # batch-norm statistics from data, as after training
    net.eval()
    model_path = folder / f"fraud_{args.arch}.onnx"
    export_onnx(served_module(net), inputs, model_path, ["numeric", "categorical"],
                {"app": "fraud", "family": "tabular_classification", "task": "binary", "labels": ["normal", "fraud"],
                 "inputs": [{"name": "numeric", "dtype": "float32"}, {"name": "categorical", "dtype": "int64"}],
                 "outputs": [{"name": "probabilities", "dtype": "float32"}], "preprocess": spec.to_meta(),
                 "threshold": 0.5})

    for rows in args.rows:
        data = make_data(rows, folder)
        for _ in range(args.repeats):
            seconds, cpu, peak = predict_run(model_path, data, folder / "scores.parquet", args.chunk_size)
            print(f"predict {rows:>11,} rows: {seconds:6.2f} s end to end = {rows / seconds:>10,.0f} rows/s "
                  f"(process start, read Parquet, score, write Parquet); CPU {cpu:6.2f} s "
                  f"(= {rows / cpu:,.0f} rows per CPU-second); peak RSS {peak:,.0f} MiB; {load()}")
    print(f"where the time goes ({args.rows[0]:,} rows, in process; {load()}):")
    stages(model_path, make_data(args.rows[0], folder), folder / "stage.parquet")

    import onnxruntime as ort

    from deepapps.apps.finance.fraud.runtime import BATCH_SESSION

    for threads in (1, os.cpu_count() or 1):  # 1 thread: the per-core ratio, least disturbed by other load
        torch.set_num_threads(threads)
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        for key, value in BATCH_SESSION.items():
            options.add_session_config_entry(key, value)
        session = ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
        for name, module in (("as trained", net), ("as exported, batch norm folded", served_module(net).net)):
            wrapped = module.eval()
            for batch in (1, 4096):
                feeds = {"numeric": enc.numeric[:batch], "categorical": enc.categorical[:batch]}
                tensors = (inputs[0][:batch], inputs[1][:batch])
                ort_s = median_seconds(lambda: session.run(None, feeds))
                with torch.inference_mode():
                    torch_s = median_seconds(lambda: wrapped(*tensors).softmax(-1))
                print(f"{threads} thread(s), batch {batch:>5}: ORT {ort_s * 1e3:8.3f} ms, torch eager ({name}) "
                      f"{torch_s * 1e3:8.3f} ms: ORT x{torch_s / ort_s:.2f} ({batch / ort_s:,.0f} rows/s ORT); {load()}")
    print(f"benchmark process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB")


if __name__ == "__main__":
    main()
