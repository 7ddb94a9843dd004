"""PyTorch eager vs ONNX Runtime on the same exported forecaster, side by side in one process.

    python benchmarks/forecast_ort_vs_torch.py [--models dlinear patchtst rnn] [--look-back 336]
        [--horizon 96] [--channels 7] [--batches 1 256]

Freshly initialised networks (speed does not depend on the weights), exported exactly as fit
exports them (z-score + RevIN inside, quantile output). Prints the median latency per batch of
windows for both and the ORT/torch speed-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from core.export import export_onnx
from core.forecast_config import ForecastModelConfig
from core.models.forecasters import ServedForecaster, create_forecaster
from core.runtime.session import load_model
from timing import median_seconds  # benchmarks/timing.py (scripts run from this folder)



def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["dlinear", "patchtst", "rnn"])
    parser.add_argument("--look-back", type=int, default=336)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--channels", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()
    torch.set_num_threads(os.cpu_count() or 1)
    rng = np.random.default_rng(0)
    L, H, C = args.look_back, args.horizon, args.channels
    print(f"L={L} H={H} C={C}, {os.cpu_count()} CPU threads, torch {torch.__version__}")
    print(f"{'model':>9} {'batch':>5} {'torch eager ms':>15} {'ORT ms':>10} {'ORT speed-up':>13}")
    for name in args.models:
        torch.manual_seed(0)
        net = create_forecaster(ForecastModelConfig(name=name), L, H, C, [0.0] * C, [1.0] * C)
        eager = ServedForecaster(net).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(eager, (torch.randn(4, L, C),), path, ["history"], {"app": "forecast"},
                        output_names=["quantiles"])
            model = load_model(path, provider="cpu")
            for batch in args.batches:
                x = rng.standard_normal((batch, L, C)).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.inference_mode():
                    t_torch = median_seconds(lambda: eager(xt), args.repeats)
                t_ort = median_seconds(lambda: model.run({"history": x}), args.repeats)
                print(f"{name:>9} {batch:>5} {1000 * t_torch:>15.2f} {1000 * t_ort:>10.2f} {t_torch / t_ort:>12.2f}x")


if __name__ == "__main__":
    main()
