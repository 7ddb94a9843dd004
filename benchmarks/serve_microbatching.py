"""HTTP throughput of `deepapps serve` with micro-batching on vs off, side by side in one run.

    python benchmarks/serve_microbatching.py --model runs/quickstart/model.onnx [--clients 32] [--seconds 30]

Starts the real server twice on loopback (--max-batch 1, then --max-batch N), drives each with
the same bounded load (one image per request), and prints throughput, p50/p99 latency, errors,
the server's memory before/after, and the throughput ratio.
"""

from __future__ import annotations

import argparse
import base64
import json
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
from PIL import Image

from deepapps.core.runtime.session import load_model
from deepapps.core.serving.loadgen import run_load


def start(model: str, port: int, max_batch: int, max_wait_ms: float) -> subprocess.Popen:
    process = subprocess.Popen(
        [sys.executable, "-m", "deepapps.core.cli", "serve", "--model", model, "--port", str(port), "--provider", "cpu",
         "--max-batch", str(max_batch), "--max-wait-ms", str(max_wait_ms)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    for _ in range(300):
        try:
            if urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1).status == 200:
                return process
        except OSError:
            time.sleep(0.2)
    raise RuntimeError("server did not start")


def rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(l for l in status.splitlines() if l.startswith("VmRSS")).split()[1]) / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--max-batch", type=int, default=32)
    parser.add_argument("--max-wait-ms", type=float, default=5.0)
    args = parser.parse_args()

    size = load_model(args.model, "cpu").contract.preprocess["size"]
    pixels = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
    path = Path("/tmp/deepapps_bench.png")
    Image.fromarray(pixels).save(path)
    body = json.dumps({"instances": [{"image": base64.b64encode(path.read_bytes()).decode()}]}).encode()

    results = {}
    for label, max_batch in (("off (max-batch 1)", 1), (f"on (max-batch {args.max_batch})", args.max_batch)):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        server = start(args.model, port, max_batch, args.max_wait_ms)
        try:
            run_load(f"http://127.0.0.1:{port}/v1/predict", body, clients=4, seconds=2)  # warm-up
            before = rss_mib(server.pid)
            result = run_load(f"http://127.0.0.1:{port}/v1/predict", body, clients=args.clients, seconds=args.seconds)
            print(f"micro-batching {label}: {result}; server RSS {before:.0f} -> {rss_mib(server.pid):.0f} MiB")
            results[max_batch] = result
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait()
    off, on = results[1], results[args.max_batch]
    print(f"throughput ratio on/off: {on.throughput / off.throughput:.2f}x "
          f"({args.clients} clients, {args.seconds:g} s each, {size}px model)")


if __name__ == "__main__":
    main()
