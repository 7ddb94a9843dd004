"""Fraud training on Parquet larger than memory: the streaming DataModule at 1M, 5M and 20M rows.

    nice python benchmarks/fraud_train_scale.py [--rows 1000000 5000000 20000000] [--folder DIR]
        [--max-steps N] [--batch-size 4096] [--threads 1] [--stages all|train] [--in-memory]

Writes synthetic credit-card-like Parquet files (`Time`, `V1`..`V28` float32, `Amount`, `Class` at
0.17% fraud, like the Kaggle credit-card data), in 1M-row chunks (never the whole file in memory),
kept in `--folder` for the next run. Then, per size, a child process builds the fraud app's
streaming DataModule (`--data.streaming true`: split from the keys, statistics column by column),
trains the default MLP for one epoch (or `--max-steps`) with Lightning on the CPU, then does
what fit does after training, every split streamed: validation and test in torch, the cost
threshold on validation (post_fit), the ONNX export and the ONNX Runtime evaluation on test
(`--stages train` stops after the epoch). Prints per size: the preparation time, train rows/s
of the epoch, the time of the rest, and the child's peak RSS (VmHWM) after training and at the
end; CPU seconds too (the process's, all threads): on a shared machine rows per CPU second is
the steadier figure. `--in-memory` also runs the in-memory DataModule for comparison. The load average
is printed with every figure: the machine may be shared.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHUNK = 1_000_000
FRAUD_RATE = 0.0017


def load() -> str:
    return "load average %.1f %.1f %.1f" % os.getloadavg()


def make_data(rows: int, folder: Path, row_group: int = 262_144) -> Path:
    """`rows` synthetic transactions as one Parquet file, written chunk by chunk (kept for the next run)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = folder / f"creditcard_like_{rows}.parquet"
    if path.is_file():
        return path
    rng = np.random.default_rng(0)
    shift = rng.normal(0, 1.5, 28).astype(np.float32)  # frauds sit elsewhere in V-space
    tmp = path.with_suffix(".tmp")
    writer = None
    for start in range(0, rows, CHUNK):
        n = min(CHUNK, rows - start)
        fraud = rng.random(n) < FRAUD_RATE
        v = rng.standard_normal((n, 28), dtype=np.float32)
        v[fraud] += shift
        columns = {"Time": np.arange(start, start + n, dtype=np.float64) * 0.1}  # seconds, increasing
        columns |= {f"V{j + 1}": v[:, j] for j in range(28)}
        columns["Amount"] = rng.lognormal(3.5, 1.2, n).astype(np.float32)
        columns["Class"] = fraud.astype(np.int8)
        table = pa.table(columns)
        writer = writer or pq.ParquetWriter(tmp, table.schema)
        writer.write_table(table, row_group_size=row_group)
    writer.close()
    tmp.rename(path)
    return path


CHILD = r"""
import json, sys, time
import pytorch_lightning as L, torch
from deepapps.apps.finance.fraud.config import FraudFitConfig
from deepapps.apps.finance.fraud.training import FraudTraining

path, streaming = sys.argv[1], sys.argv[2]
batch, max_steps, threads = (int(a) for a in sys.argv[3:6])
stages = sys.argv[6]
rss = lambda key: int([l for l in open('/proc/self/status') if l.startswith(key)][0].split()[1])
imported_kb = rss("VmRSS")


class EpochTime(L.Callback):
    def on_train_epoch_start(self, trainer, module):
        self.start, self.cpu_start = time.perf_counter(), time.process_time()

    def on_train_epoch_end(self, trainer, module):
        self.seconds, self.cpu = time.perf_counter() - self.start, time.process_time() - self.cpu_start


epoch = EpochTime()
torch.manual_seed(0)
torch.set_num_threads(threads)
cfg = FraudFitConfig()
cfg.data.path, cfg.data.streaming, cfg.data.batch_size, cfg.baselines = path, streaming, batch, False
cfg.trainer.max_epochs = 1
start, cpu_start = time.perf_counter(), time.process_time()
training = FraudTraining()
built = training.build(cfg)
module = training.module(built, cfg)
prepared, cpu_prepared = time.perf_counter(), time.process_time()
trainer = L.Trainer(max_epochs=1, max_steps=max_steps, accelerator="cpu", logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                    limit_val_batches=0, callbacks=[epoch])
trainer.fit(module, train_dataloaders=built.datamodule.train_dataloader())
steps = trainer.global_step
result = {"sizes": built.datamodule.summary()["sizes"], "prepare_s": prepared - start,
          "prepare_cpu_s": cpu_prepared - cpu_start, "train_s": epoch.seconds, "train_cpu_s": epoch.cpu, "steps": steps,
          "rows_trained": steps * batch, "trained_rss_kb": rss("VmHWM"), "imported_rss_kb": imported_kb}
if stages == "all":  # what fit does next, every split streamed (core/training/fit.py)
    import dataclasses, tempfile
    from pathlib import Path
    from deepapps.apps.finance.fraud.runtime import FraudServing
    from deepapps.core.contract import set_metadata
    from deepapps.core.runtime.session import load_model
    from deepapps.core.training.export import export_model
    from deepapps.core.training.trainer import eval_trainer

    after, cpu_after = time.perf_counter(), time.process_time()
    evaluator = eval_trainer(cfg.trainer)
    val = evaluator.validate(module, datamodule=built.datamodule, verbose=False)[0]
    test_torch = evaluator.test(module, datamodule=built.datamodule, verbose=False)[0]
    state = training.post_fit(module, built, cfg).state
    onnx_path = Path(tempfile.mkdtemp()) / "model.onnx"
    proto, contract = export_model("fraud", training, built, cfg, dataclasses.asdict(cfg), state,
                                   {"val": {k.removeprefix("val/"): v for k, v in val.items()}}, str(onnx_path))
    set_metadata(proto, contract.to_json())
    shipped = load_model(onnx_path, provider="cpu", app="fraud", model_bytes=proto.SerializeToString())
    test = FraudServing().evaluate(shipped, path, "test").metrics
    result |= {"after_s": time.perf_counter() - after, "after_cpu_s": time.process_time() - cpu_after,
               "val_auprc": val["val/auprc"], "test_torch_auprc": test_torch["test/auprc"], "test_n": test["n"],
               "test_auprc": test["auprc"]}
print("RESULT", json.dumps(result | {"peak_rss_kb": rss("VmHWM")}))
"""


def run(path: Path, streaming: str, batch: int, max_steps: int, threads: int, stages: str) -> dict:
    done = subprocess.run([sys.executable, "-c", CHILD, str(path), streaming, str(batch), str(max_steps), str(threads),
                           stages], capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode or not lines:
        raise SystemExit(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(lines[0].removeprefix("RESULT "))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[1_000_000, 5_000_000, 20_000_000])
    parser.add_argument("--folder", type=Path, default=Path(tempfile.gettempdir()) / "deepapps_fraud_scale")
    parser.add_argument("--batch-size", type=int, default=4096)
    parser.add_argument("--max-steps", type=int, default=-1, help="train steps per size (-1: one epoch)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the child (1: no spinning on a "
                        "shared machine)")
    parser.add_argument("--stages", choices=["all", "train"], default="all", help="all: also validate, test, "
                        "post-fit, export and evaluate the ONNX model on test (streamed); train: the epoch only")
    parser.add_argument("--in-memory", action="store_true", help="also run the in-memory DataModule")
    parser.add_argument("--json", type=Path, help="write the figures here too")
    args = parser.parse_args()
    args.folder.mkdir(parents=True, exist_ok=True)
    results = []
    for rows in args.rows:
        start = time.perf_counter()
        path = make_data(rows, args.folder)
        print(f"{rows:,} rows: {path} ({path.stat().st_size / 2**20:,.0f} MiB; ready in "
              f"{time.perf_counter() - start:.0f} s)", flush=True)
        for streaming in ["true", *(["false"] if args.in_memory else [])]:
            r = run(path, streaming, args.batch_size, args.max_steps, args.threads, args.stages)
            r |= {"rows": rows, "streaming": streaming, "threads": args.threads,
                  "file_mib": round(path.stat().st_size / 2**20),
                  "train_rows_per_s": r["rows_trained"] / r["train_s"],
                  "train_rows_per_cpu_s": r["rows_trained"] / r["train_cpu_s"], "load": load()}
            results.append(r)
            print(f"  streaming {streaming:5}: prepare {r['prepare_s']:.1f} s ({r['prepare_cpu_s']:.1f} CPU s); "
                  f"train {r['steps']} steps ({r['rows_trained']:,} rows) in {r['train_s']:.1f} s = "
                  f"{r['train_rows_per_s']:,.0f} rows/s ({r['train_rows_per_cpu_s']:,.0f} rows per CPU s); "
                  + (f"val+test torch, post-fit, export, ONNX test ({r['test_n']:,} rows, AUPRC {r['test_auprc']:.4f}) "
                     f"in {r['after_s']:.1f} s ({r['after_cpu_s']:.1f} CPU s); " if "after_s" in r else "")
                  + f"peak RSS {r['peak_rss_kb'] / 2**20:.2f} GiB (after training {r['trained_rss_kb'] / 2**20:.2f}, "
                  f"after imports {r['imported_rss_kb'] / 2**20:.2f}); {r['load']}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
