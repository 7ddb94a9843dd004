"""The default fit against a tune of the same data in a stated wall-time budget (not a timed test).

    python benchmarks/tune_vs_default.py [--budget 600] [--trials 20] [--cases fraud vision] [--folder DIR]

For each case, one run of each, side by side on the same data and the same splits:
  default  `deepapps <app> fit --data.path DATA` (the app's defaults; its wall time is printed)
  tune     `deepapps <app> tune --data.path DATA --tune.trials N --tune.timeout BUDGET --tune.refit`
           (TPE over the app's configs/search_space.yaml; the search stops at N trials or at the
           budget, whichever comes first, then fits the best config)
and prints the test metric of each model file (`metrics.json` `test`, scored on the ONNX graph),
the validation objective, the trials run and the wall times. The test split is never read by
the search. Cases:
  fraud   ../shared/data/creditcard/creditcard_subset.csv (ULB credit-card subset), AUPRC
  vision  ../shared/data/hymenoptera (ants/bees), accuracy; EfficientNet-Lite0 at 224 px
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

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPAPPS_SHARED", REPO.parent / "shared"))

CASES = {
    "fraud": {
        "app": "fraud", "data": SHARED / "data/creditcard/creditcard_subset.csv", "metric": "auprc",
        "fit": ["--data.batch_size", "128", "--trainer.max_epochs", "15"],
        "tune": ["--data.batch_size", "128", "--trainer.max_epochs", "15"],
    },
    "vision": {
        "app": "vision", "data": SHARED / "data/hymenoptera", "metric": "accuracy",
        "fit": [],  # the `auto` defaults: 224 px, flips, 12 epochs (2 frozen), the head started at the probe
        "tune": ["--trainer.max_epochs", "4"],  # short trials: the search has the default fit's budget
    },
}


def run(command: list[str]) -> float:
    """Run a deepapps command; returns its wall time (s). Output goes to the terminal."""
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "deepapps.core.cli", *command], check=True, cwd=REPO)
    return time.perf_counter() - started


def test_metric(run_dir: Path, metric: str) -> tuple[float | None, float | None]:
    metrics = json.loads((run_dir / "metrics.json").read_text())
    test = metrics.get("test", {}).get(metric)
    val = metrics.get("val", {}).get(metric)
    return test, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=600.0, help="seconds the search may take (then the refit)")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--cases", nargs="+", default=list(CASES), choices=list(CASES))
    parser.add_argument("--folder", help="where the runs go (default: a temporary folder)")
    args = parser.parse_args()
    folder = Path(args.folder or tempfile.mkdtemp(prefix="tune-vs-default-"))
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; runs in {folder}")
    rows = []
    for name in args.cases:
        case = CASES[name]
        if not case["data"].exists():
            print(f"{name}: skipped ({case['data']} is absent)")
            continue
        data = ["--data.path", str(case["data"])]
        default_dir, tune_dir = folder / name / "default", folder / name / "tune"
        fit_s = run([case["app"], "fit", *data, *case["fit"], "--run_dir", str(default_dir)])
        tune_s = run([case["app"], "tune", *data, *case["tune"], "--run_dir", str(tune_dir),
                      "--tune.trials", str(args.trials), "--tune.timeout", str(args.budget), "--tune.refit"])
        summary = json.loads((tune_dir / "refit" / "metrics.json").read_text())["search"]
        rows.append((name, case["metric"], test_metric(default_dir, case["metric"]),
                     test_metric(tune_dir / "refit", case["metric"]), fit_s, tune_s, summary))
    print()
    print("| case | metric | default test (val) | tuned test (val) | trials (complete/pruned/failed) | "
          "default fit s | tune + refit s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, metric, (d_test, d_val), (t_test, t_val), fit_s, tune_s, summary in rows:
        states = summary["states"]
        print(f"| {name} | {metric} | {d_test:.4f} ({d_val:.4f}) | {t_test:.4f} ({t_val:.4f}) | "
              f"{summary['trials']} ({states['COMPLETE']}/{states['PRUNED']}/{states['FAIL']}) | "
              f"{fit_s:.0f} | {tune_s:.0f} |")
        print(f"  best params ({name}): {summary['best_params']}")


if __name__ == "__main__":
    main()
