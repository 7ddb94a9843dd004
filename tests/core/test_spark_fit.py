"""`fit --trainer.spark_processes 2`: pyspark's TorchDistributor runs the same fit in 2 DDP processes
(gloo, CPU); rank 0 alone writes the run folder, and its model.onnx scores like any fit's.

Slow (a JVM, torchrun, 2 training processes: about a minute per fit on 2 cores):
`python -m pytest -m slow tests/core/test_spark_fit.py`. One SparkSession (local[2]) serves the
module: `spark_fit` uses the active session and leaves it running.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pytest

from deepapps.core.cli import main

pytest.importorskip("pyspark")
pytest.importorskip("pyarrow")
pytest.importorskip("pandas")
if not (shutil.which("java") or os.environ.get("JAVA_HOME")):
    pytest.skip("Spark needs a Java runtime (JDK 17+)", allow_module_level=True)

TINY = Path(__file__).parents[2] / "apps" / "finance" / "fraud" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def spark():
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    session = (SparkSession.builder.master("local[2]").appName("deepapps-tests-spark-fit")
               .config("spark.ui.enabled", "false").getOrCreate())
    yield session
    session.stop()


def spark_fit(run_dir: Path, *options: str) -> int:
    return main(["fraud", "fit", "--config", str(TINY), "--data.synth_rows", "3000", "--baselines", "false",
                 "--trainer.max_epochs", "1", "--run_dir", str(run_dir), "--trainer.spark_processes", "2", *options])


def check_run(run_dir: Path, capsys, local_mode: bool) -> None:
    """One run folder, written once by rank 0: metrics.json records DDP over 2 processes, and
    `evaluate --model` scores its model.onnx on the same test split fit scored."""
    out = capsys.readouterr().out.strip().splitlines()
    assert out[-1] == str(run_dir)  # stdout's last line is the run folder; the processes' logs go to stderr
    assert sorted(p.name for p in run_dir.glob("*.onnx")) == ["model.onnx"]
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    assert not list(run_dir.rglob(".*.tmp"))  # no temporary file of a write left behind
    assert (run_dir / "model_card.md").is_file()
    metrics = json.loads((run_dir / "metrics.json").read_text())
    trainer = metrics["trainer"]
    assert trainer["strategy"] == "ddp" and trainer["world_size"] == 2 and trainer["accelerator"] == "cpu"
    assert (trainer["num_nodes"], trainer["devices"]) == ((1, 2) if local_mode else (2, 1))
    assert trainer["spark"] == {"processes": 2, "local_mode": local_mode}
    assert main(["fraud", "evaluate", "--model", str(run_dir / "model.onnx"), "--split", "test"]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["n"] == metrics["test"]["n"] > 0
    assert evaluated["auprc"] == pytest.approx(metrics["test"]["auprc"], abs=1e-6)


@pytest.mark.slow
def test_spark_fit_local_mode(spark, tmp_path, capsys):
    """local_mode: the 2 processes run on the driver; then a bad option and a bad data path, each
    one line and exit 2 (the option before Spark starts, the data path from the processes)."""
    run_dir = tmp_path / "run"
    assert spark_fit(run_dir) == 0
    check_run(run_dir, capsys, local_mode=True)

    assert spark_fit(tmp_path / "bad", "--trainer.max_epochs", "0") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["deepapps: error: --trainer.max_epochs 0: must be at least 1"]
    assert spark_fit(tmp_path / "bad", "--trainer.spark_processes", "-1") == 2
    assert capsys.readouterr().err.strip() == "deepapps: error: --trainer.spark_processes -1: must be at least 0"

    missing = tmp_path / "missing.csv"
    assert spark_fit(tmp_path / "bad", "--data.path", str(missing)) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith("deepapps: error: ") and "missing.csv" in last
    assert not (tmp_path / "bad").exists()


@pytest.mark.slow
def test_spark_fit_on_executors(spark, tmp_path, capsys):
    """local_mode false: one barrier task per process on the executors (of local[2] here), a node
    each to torchrun; rank 0's task writes the run folder."""
    run_dir = tmp_path / "run"
    assert spark_fit(run_dir, "--trainer.spark_local_mode", "false") == 0
    check_run(run_dir, capsys, local_mode=False)
