"""PyTorch eager vs ONNX Runtime on the same exported forecaster, side by side in one process.

    python benchmarks/forecast_ort_vs_torch.py [--models rlinear dlinear patchtst rnn] [--look-back 336]
        [--horizon 96] [--channels 7] [--batches 1 256] [--threads 1]

Freshly initialised networks (speed does not depend on the weights), exported exactly as fit
exports them: z-score + RevIN inside, quantile output with the per-step interval calibration
(random factors). Prints the median latency per batch of windows for both, timed in turns of
`--block` calls each, and the ORT/torch speed-up.
"""

from __future__ import annotations

import argparse
import os
import tempfile
from pathlib import Path

import numpy as np

# neither engine's idle threads may spin while the other runs: OMP PASSIVE here, no spinning in ORT below
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
import onnxruntime as ort  # noqa: E402
import torch  # noqa: E402

from deepapps.core.training.export import export_onnx  # noqa: E402
from deepapps.apps.finance.forecast.config import ForecastModelConfig  # noqa: E402
from deepapps.apps.finance.forecast.models import create_forecaster
from deepapps.apps.finance.forecast.models.forecaster import ServedForecaster  # noqa: E402
from timing import interleaved_median_ms  # noqa: E402  (benchmarks/timing.py; run from this folder)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["rlinear", "dlinear", "patchtst", "rnn"])
    parser.add_argument("--look-back", type=int, default=336)
    parser.add_argument("--horizon", type=int, default=96)
    parser.add_argument("--channels", type=int, default=7)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads = ORT intra-op threads; with more than 1, the two engines' thread "
                             "pools interfere in one process (see apps/finance/forecast/README.md)")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--block", type=int, default=10, help="calls of one engine per turn (1: strictly alternate)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    L, H, C = args.look_back, args.horizon, args.channels
    print(f"L={L} H={H} C={C}, {args.threads} threads each, turns of {args.block} calls, torch {torch.__version__}, "
          f"onnxruntime {ort.__version__}")
    print(f"{'model':>9} {'batch':>5} {'torch eager ms':>15} {'ORT ms':>10} {'ORT speed-up':>13}")
    for name in args.models:
        torch.manual_seed(0)
        cfg = ForecastModelConfig(name=name)
        net = create_forecaster(cfg, L, H, C, [0.0] * C, [1.0] * C)
        calibration = (0.8 + 0.4 * torch.rand(H, len(cfg.quantiles))).tolist()
        eager = ServedForecaster(net, (), calibration, cfg.quantiles.index(0.5)).eval()
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.onnx"
            export_onnx(eager, (torch.randn(4, L, C),), path, ["history"], {"app": "forecast"},
                        output_names=["quantiles"])
            options = ort.SessionOptions()
            options.intra_op_num_threads = args.threads
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # as OMP PASSIVE for torch
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            for batch in args.batches:
                x = rng.standard_normal((batch, L, C)).astype(np.float32)
                xt = torch.from_numpy(x)
                with torch.inference_mode():
                    ms = interleaved_median_ms({"torch": lambda: eager(xt),
                                                "ort": lambda: session.run(None, {"history": x})}, args.repeats,
                                               block=args.block)
                print(f"{name:>9} {batch:>5} {ms['torch']:>15.2f} {ms['ort']:>10.2f} {ms['torch'] / ms['ort']:>12.2f}x")


if __name__ == "__main__":
    main()
