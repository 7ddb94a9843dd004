"""Test MSE of forecast models scored two ways: every stride-1 window (ours) and as the published
ETT tables score it (a test loader with `drop_last=True`, which skips the last, hardest windows).

    python benchmarks/forecast_scoring.py --data ../../shared/data/ett/ETTh1.csv MODEL.onnx [MODEL.onnx ...]
        [--drop-last-batches 32 128]

Each model's median on the z-scale of its training statistics, on the validation and test windows
its own metadata defines; with several models (same data, look-back and horizon), also their
average, i.e. an ensemble. The papers' loaders use test batch 32 (DLinear) or 128 (PatchTST, ETTh).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from deepapps.apps.finance.forecast.runtime import forecast, split_windows
from deepapps.core.runtime.session import load_model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+")
    parser.add_argument("--data", required=True, help="the series the models were trained on")
    parser.add_argument("--drop-last-batches", type=int, nargs="+", default=[32, 128])
    args = parser.parse_args()
    medians, actual = {}, {}
    for path in args.models:
        model = load_model(path, "cpu", app="forecast")
        m = model.contract.forecast.median_index
        medians[path] = {}
        for split in ("val", "test"):
            w = split_windows(model, args.data, split)
            pred = forecast(model, w.x, 256, w.calendar, w.covariates)[..., m].astype(np.float64)
            medians[path][split] = (pred - w.mean) / w.std  # (N, H, C) z-scale
            actual[split] = (w.y - w.mean) / w.std
    rows = {Path(p).parent.name or p: v for p, v in medians.items()}
    if len(rows) > 1:
        rows[f"average of {len(rows)}"] = {s: np.mean([v[s] for v in medians.values()], axis=0) for s in ("val", "test")}
    n = len(actual["test"])
    kept = {b: n // b * b for b in args.drop_last_batches}
    print(f"MSE (z-scale). test: all {n} windows; " + "; ".join(f"drop_last {b}: first {k}" for b, k in kept.items()))
    print(f"{'model':>28} {'val':>8} {'test':>8}" + "".join(f" {f'drop_last {b}':>13}" for b in kept))
    for name, pred in rows.items():
        mse = {s: float(np.mean((pred[s] - actual[s]) ** 2)) for s in ("val", "test")}
        dropped = [float(np.mean((pred["test"][:k] - actual["test"][:k]) ** 2)) for k in kept.values()]
        print(f"{name:>28} {mse['val']:>8.4f} {mse['test']:>8.4f}" + "".join(f" {d:>13.4f}" for d in dropped))

if __name__ == "__main__":
    main()
