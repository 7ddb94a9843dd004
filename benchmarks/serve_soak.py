"""Soak and overload runs of `deepapps serve`, one tiny model of every app (not a timed test).

    python benchmarks/serve_soak.py [--seconds 60] [--clients 32] [--folder DIR]

Soak: `--clients` keep-alive clients post one valid instance each for `--seconds` to each app's
server; prints requests, errors (must be 0), p50/p99 latency and the server's RSS before and after.
Overload: 128 clients against a server with --max-concurrency 4 and --max-queue 8; prints how many
requests were shed with 503 and the RSS, which stays flat instead of growing with the backlog.
The tiny models are fitted into `--folder` on the first run (about a minute) and reused.
"""

from __future__ import annotations

import argparse
import base64
import io
import json
import platform
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from deepapps.core.cli import main as deepapps  # noqa: E402
from deepapps.core.serving.loadgen import run_load  # noqa: E402
from tests.helpers import Server  # noqa: E402  (the loopback server helper of the tests)

CONFIGS = REPO / "apps"


def fit_models(folder: Path) -> dict[str, Path]:
    from tests.apps.nlp_helpers import make_tiny_bert

    tiny = {
        "vision": ("vision", ["--config", str(CONFIGS / "vision/configs/tiny.yaml")]),
        "healthcare": ("healthcare", ["--config", str(CONFIGS / "healthcare/configs/tiny.yaml")]),
        "ecg": ("healthcare", ["--config", str(CONFIGS / "healthcare/configs/ecg_tiny.yaml")]),
        "nlp": ("nlp", ["--config", str(CONFIGS / "nlp/configs/tiny.yaml"), "--export_int8", "false",
                        "--model.pretrained", str(folder / "bert")]),
        "fraud": ("fraud", ["--config", str(CONFIGS / "finance/fraud/configs/tiny.yaml"), "--baselines", "false"]),
        "forecast": ("forecast", ["--config", str(CONFIGS / "finance/forecast/configs/tiny.yaml")]),
    }
    models = {}
    for name, (app, args) in tiny.items():
        model = folder / name / "model.onnx"
        if not model.is_file():
            if name == "nlp" and not (folder / "bert").is_dir():
                make_tiny_bert(folder / "bert")
            assert deepapps([app, "fit", "--run_dir", str(folder / name), *args]) == 0, name
        models[name] = model
    return models


def instance(name: str, meta: dict) -> dict:
    """One valid request instance for a model, from its metadata."""
    from PIL import Image

    pre = meta["preprocess"]
    if name in ("vision", "healthcare"):
        buffer = io.BytesIO()
        Image.new("RGB", (64, 48), (120, 80, 200)).save(buffer, format="PNG")
        return {"image": base64.b64encode(buffer.getvalue()).decode()}
    if name == "ecg":
        return {"signal": [0.0] * pre["length"]}
    if name == "nlp":
        return {"text": "the kettle is lovely, would buy again"}
    if name == "fraud":
        return {c: 1.0 for c in pre["numeric"]} | {c: "x" for c in pre["categorical"]}
    return {"history": [[float(i % 52)] * len(pre["targets"]) for i in range(pre["look_back"])]}


def body_for(name: str, server: Server) -> bytes:
    meta = json.loads(server.get("/v1/metadata")[1])
    return json.dumps({"instances": [instance(name, meta)]}).encode()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--overload-clients", type=int, default=128)
    parser.add_argument("--folder", help="where the tiny models live (default: a temporary folder)")
    parser.add_argument("--apps", nargs="+", default=["vision", "healthcare", "ecg", "nlp", "fraud", "forecast"])
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="deepapps-soak-"))
    models = fit_models(folder)
    print(f"{platform.processor() or platform.machine()}, Python {platform.python_version()}; "
          f"{args.clients} clients x {args.seconds:g} s per app, one instance per request")
    print(f"{'app':<11} {'requests':>9} {'req/s':>7} {'errors':>6} {'p50 ms':>8} {'p99 ms':>8} {'RSS MiB before -> after':>24}")
    for name in args.apps:
        server = Server(models[name])
        try:
            body = body_for(name, server)
            run_load(f"http://127.0.0.1:{server.port}/v1/predict", body, clients=4, seconds=2.0)  # warm up
            before = server.rss_kib() / 1024
            result = run_load(f"http://127.0.0.1:{server.port}/v1/predict", body, clients=args.clients,
                              seconds=args.seconds)
            after = server.rss_kib() / 1024
        finally:
            server.stop()
        print(f"{name:<11} {result.requests:>9} {result.throughput:>7.0f} {result.errors + result.shed:>6} "
              f"{result.p50_ms:>8.1f} {result.p99_ms:>8.1f} {before:>13.0f} -> {after:<8.0f}")
    server = Server(models["vision"], "--max-concurrency", "4", "--max-queue", "8")
    try:
        body = body_for("vision", server)
        before = server.rss_kib() / 1024
        result = run_load(f"http://127.0.0.1:{server.port}/v1/predict", body, clients=args.overload_clients,
                          seconds=min(args.seconds, 30.0))
        after = server.rss_kib() / 1024
    finally:
        server.stop()
    print(f"overload (vision, {args.overload_clients} clients, --max-concurrency 4 --max-queue 8): {result}; "
          f"RSS {before:.0f} -> {after:.0f} MiB")


if __name__ == "__main__":
    main()
