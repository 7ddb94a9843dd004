"""The project's performance table in one run: every app, ORT fp32 and int8 against torch eager.

    python benchmarks/run_all.py [--folder DIR] [--real DIR ...] [--repeats 10] [--seconds 5]

For a tiny fitted model of every app (fitted into `--folder` on the first run, as
benchmarks/serve_soak.py does, and reused), and for any real run folders given with `--real`
(e.g. benchmarks/vision_int8.py's EfficientNet-Lite0 / ResNet-18 fits on hymenoptera):

- torch eager (the served module, rebuilt from the checkpoint), ORT fp32 and ORT int8 at batch 1
  and a large batch (32 images / signals / texts, 8192 fraud rows, 256 forecast windows), timed
  interleaved so load on a shared machine falls on all three alike;
- the int8 copy's validation loss on the monitored metric (core.training.quantize; for apps whose
  Training offers no int8 method, the dynamic copy is timed anyway to show why);
- predict cold start (process start to exit, one input) and served throughput (`deepapps serve`,
  8 keep-alive clients, one instance per request).

Prints the machine, versions, thread settings and the ONNX Runtime provider that ran, then one
Markdown table (README.md's performance section is this table).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).parent))

from serve_soak import body_for, fit_models
from timing import interleaved_median_ms

LARGE = {"image_classification": 32, "signal_classification": 32, "text_classification": 32,
         "tabular_classification": 8192, "forecasting": 256}
ENTRY = {"vision": "deepapps.apps.vision", "healthcare": "deepapps.apps.healthcare", "nlp": "deepapps.apps.nlp",
         "fraud": "deepapps.apps.finance.fraud", "forecast": "deepapps.apps.finance.forecast"}


def restore_run(app_name: str, run_dir: Path):
    """(app, training, cfg, built with data, the served torch module) of a fitted run."""
    from deepapps.core.cli import parse_config
    from deepapps.core.registry import get_app
    from deepapps.core.training.checkpoints import (
        load_checkpoint,
        post_fit_state,
        read_checkpoint,
    )

    app = get_app(app_name)
    ckpt = run_dir / "checkpoints" / "best.ckpt"
    _, _, cfg, _ = parse_config(app, "export", ["--ckpt", str(ckpt)], with_ckpt=True)
    _, built = load_checkpoint(app, ckpt, cfg, with_data=True)
    training = app.load_training()
    served = training.served(built, post_fit_state(read_checkpoint(ckpt))).module.eval()
    return app, training, cfg, built, served


def batch_of(example: tuple, n: int) -> tuple[np.ndarray, ...]:
    """`n` rows tiled from real example inputs (numpy)."""
    return tuple(np.ascontiguousarray(np.resize(t.numpy(), (n, *t.shape[1:])).astype(t.numpy().dtype))
                 for t in example)


def int8_copy(app, training, cfg, built, src: Path, out: Path) -> tuple[Path | None, str]:
    """The app's int8 copy (tolerance lifted: the loss is reported, not judged) and a note;
    for an app without an int8 method, the dynamic copy (timed only)."""
    from deepapps.core.contract import read_metadata, set_metadata
    from deepapps.core.training.quantize import (
        DYNAMIC,
        Int8Method,
        export_int8,
        quantize_proto,
    )

    method = training.int8_method(cfg)
    if method.method is None:
        proto = quantize_proto(src, Int8Method(DYNAMIC, "benchmark"))
        set_metadata(proto, read_metadata(src))
        out.write_bytes(proto.SerializeToString())
        return out, "not offered (dynamic timed)"
    cfg.int8_tolerance = 1e9
    result = export_int8(app, training, built, cfg, src, out)
    return out, f"{method.method}: val {result.metric} loss {result.loss_points:.2f} pts"


def cold_start(app_name: str, model: Path, run_dir: Path, tmp: Path) -> float | None:
    """Seconds from process start to exit of `deepapps <app> predict` on one input (median of 3)."""
    samples = sorted((run_dir / "samples").glob("*")) if (run_dir / "samples").is_dir() else []
    if app_name == "nlp":
        inputs = ["--text", "the kettle is lovely, would buy again"]
    elif samples:
        inputs = [str(samples[0])]
    else:
        return None
    cmd = [sys.executable, "-m", ENTRY[app_name], "predict", "--model", str(model), "--provider", "cpu", *inputs,
           "--out", str(tmp / "predictions.csv")]
    times = []
    for _ in range(3):
        start = time.perf_counter()
        if subprocess.run(cmd, capture_output=True).returncode != 0:
            return None
        times.append(time.perf_counter() - start)
    return float(np.median(times))


def served_throughput(name: str, model: Path, seconds: float) -> float | None:
    """Requests/s of `deepapps serve` under 8 keep-alive clients (None, with a line on stderr, if it fails)."""
    from deepapps.core.serving.loadgen import run_load

    from tests.helpers import Server

    try:
        server = Server(model)
    except RuntimeError as exc:
        print(f"{name}: serve did not start: {str(exc)[:200]}", file=sys.stderr)
        return None
    try:
        body = body_for(name, server)
        url = f"http://127.0.0.1:{server.port}/v1/predict"
        run_load(url, body, clients=4, seconds=1.0)
        result = run_load(url, body, clients=8, seconds=seconds)
        return result.throughput if result.errors == 0 else None
    finally:
        server.stop()


def row(name: str, app_name: str, run_dir: Path, args, tmp: Path) -> dict:
    import torch
    from deepapps.core.runtime.session import load_model

    app, training, cfg, built, served = restore_run(app_name, run_dir)
    src = run_dir / "model.onnx"
    try:
        int8_path, note = int8_copy(app, training, cfg, built, src, tmp / f"{name}.int8.onnx")
    except Exception as exc:  # a benchmark reports a failed copy and goes on
        print(f"{name}: int8 failed: {str(exc).splitlines()[0][:200]}", file=sys.stderr)
        int8_path, note = src, "int8 failed (fp32 timed twice)"
    fp32 = load_model(src, "cpu", app=app_name, session_config=NO_SPIN)
    int8 = load_model(int8_path, "cpu", app=app_name, session_config=NO_SPIN)
    names = [i.name for i in built.inputs]
    example = built.example_inputs(64)
    large = LARGE[built.family]
    out = {"name": name, "family": built.family, "backbone": built.backbone, "int8": note, "large": large,
           "provider": fp32.provider_note}
    for batch in (1, large):
        feeds = batch_of(example, batch)
        tensors = tuple(torch.from_numpy(a) for a in feeds)

        def eager():
            with torch.inference_mode():
                return served(*tensors)

        ms = interleaved_median_ms({
            "eager": eager, "fp32": lambda: fp32.run(dict(zip(names, feeds))),
            "int8": lambda: int8.run(dict(zip(names, feeds))),
        }, repeats=args.repeats)
        out[batch if batch == 1 else "large_ms"] = ms
    out["cold_s"] = cold_start(app_name, src, run_dir, tmp)
    out["served_rps"] = served_throughput(name, src, args.seconds) if name in SERVE_BODIES else None
    return out


NO_SPIN = {"session.intra_op.allow_spinning": "0"}
"""ORT's threads otherwise spin after each call and take the cores from torch's next call (timed in turn)."""
SERVE_BODIES = ("vision", "healthcare", "ecg", "nlp", "fraud", "forecast")


def versions() -> str:
    import onnxruntime
    import torch

    return (f"{platform.processor() or platform.machine()} ({os.cpu_count()} cores), {platform.system()}; "
            f"Python {platform.python_version()}, torch {torch.__version__} ({torch.get_num_threads()} intra-op "
            f"threads), onnxruntime {onnxruntime.__version__} (intra-op threads = cores, spinning off); "
            f"load average at start {os.getloadavg()[0]:.1f}")


def markdown(rows: list[dict]) -> str:
    lines = ["| model | graph | eager b1 ms | ORT fp32 b1 | ORT int8 b1 | large batch | eager ms | ORT fp32 ms | "
             "ORT int8 ms | fp32 vs eager (b1 / large) | int8 vs fp32 (b1 / large) | int8 | cold start s | served req/s |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        one, big = r[1], r["large_ms"]
        cold = f"{r['cold_s']:.2f}" if r["cold_s"] is not None else "n/a"
        rps = f"{r['served_rps']:.0f}" if r["served_rps"] is not None else "n/a"
        lines.append(
            f"| {r['name']} | {r['backbone']} | {one['eager']:.2f} | {one['fp32']:.2f} | {one['int8']:.2f} | "
            f"{r['large']} | {big['eager']:.1f} | {big['fp32']:.1f} | {big['int8']:.1f} | "
            f"{one['eager'] / one['fp32']:.2f}x / {big['eager'] / big['fp32']:.2f}x | "
            f"{one['fp32'] / one['int8']:.2f}x / {big['fp32'] / big['int8']:.2f}x | {r['int8']} | {cold} | {rps} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--folder", default=None, help="where the tiny models live (default: a temporary folder)")
    parser.add_argument("--real", nargs="*", default=[], help="more vision run folders (e.g. /tmp/vision_int8/resnet18)")
    parser.add_argument("--apps", nargs="*", default=list(SERVE_BODIES))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--seconds", type=float, default=5.0, help="served-throughput load per model")
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="deepapps-bench-"))
    models = fit_models(folder)
    print(versions())
    app_of = {"ecg": "healthcare"}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.apps:
            rows.append(row(name, app_of.get(name, name), models[name].parent, args, Path(tmp)))
            print(f"{name}: done ({rows[-1]['provider']})", file=sys.stderr, flush=True)
        for run_dir in map(Path, args.real):
            rows.append(row(f"vision {run_dir.name}", "vision", run_dir, args, Path(tmp)))
            rows[-1]["served_rps"] = served_throughput("vision", run_dir / "model.onnx", args.seconds)
    print(f"ONNX Runtime {', '.join(sorted({r['provider'] for r in rows}))}; "
          f"median of {args.repeats} interleaved calls; tiny models: apps/*/configs/tiny.yaml")
    print(markdown(rows))
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2, default=str))


if __name__ == "__main__":
    main()
