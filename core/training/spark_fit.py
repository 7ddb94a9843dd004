"""`deepapps <app> fit ... --trainer.spark_processes N`: the same fit, trained on Spark.

pyspark's `TorchDistributor` starts N processes through torchrun (`torch.distributed.run`): on the
Spark driver (`--trainer.spark_local_mode true`) or on the executors, one barrier task each
(`false`). Each process runs the same command line (`core.cli.main`) with the trainer set to DDP
over the N processes (gloo on CPU, NCCL with `--trainer.accelerator gpu`); Lightning reads the
torchrun environment (RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR/PORT) as a TorchElastic
cluster. Every rank trains on its DistributedSampler share of the batches; rank 0 alone writes
checkpoints, logs, model.onnx, metrics.json and the model card (`core.training.fit` returns early
on the other ranks), and uploads a URL `--run_dir`.

The driver parses the command line first, so a bad option stops here in one line, before Spark
starts; an error in a process comes back as that process's one-line `deepapps: error:` message.
"""

from __future__ import annotations

import collections
import contextlib
import io
import json
import os
import sys
import tempfile
from pathlib import Path

from deepapps.core.errors import ConfigError, DeepappsError
from deepapps.core.registry import AppSpec
from deepapps.core.runtime import remote
from deepapps.core.training.trainer import SPARK_ENV

ERROR_PREFIX = "deepapps: error: "


class SparkFitError(DeepappsError):
    """A Spark process failed without a deepapps error line (a crash): one line, exit code 1."""

    exit_code = 1


def spark_fit(app: AppSpec, argv: list[str], cfg) -> str:
    """Run `deepapps <app> fit <argv>` in `cfg.trainer.spark_processes` DDP processes on Spark.

    Args:
        app: the app being trained.
        argv: the fit command line (after `fit`), as given; each process parses it again.
        cfg: that command line parsed (checked here before Spark starts).

    Returns:
        The run folder (or the `--run_dir` URL) rank 0 wrote.

    Raises:
        ConfigError: pyspark missing, or settings DDP on Spark cannot train with.
        DeepappsError: a process failed (its one-line error).
    """
    import importlib.util

    trainer = cfg.trainer
    processes, local_mode = int(trainer.spark_processes), bool(trainer.spark_local_mode)
    if importlib.util.find_spec("pyspark") is None:
        raise ConfigError("--trainer.spark_processes needs pyspark: pip install 'deepapps[spark]'")
    if getattr(getattr(cfg, "privacy", None), "epsilon", None) is not None:
        raise ConfigError("--trainer.spark_processes: DP-SGD (--privacy.epsilon) trains on one device; drop one of them")
    if str(trainer.accelerator) not in ("auto", "cpu", "gpu", "cuda"):
        raise ConfigError(f"--trainer.accelerator {trainer.accelerator}: Spark trains on cpu or gpu")
    if cfg.resume:
        raise ConfigError("--trainer.spark_processes: --resume continues a run in one process; "
                          "resume it without --trainer.spark_processes")
    use_gpu = str(trainer.accelerator) in ("gpu", "cuda")
    run_dir = _run_dir(app, cfg, local_mode)
    data_path = getattr(getattr(cfg, "data", None), "path", None)
    if local_mode and remote.is_remote(data_path):  # fetched once here: the processes find it in the cache
        remote.localize(data_path)
    worker_argv = ["fit", *argv, "--run_dir", run_dir, "--trainer.spark_processes", "0",
                   "--trainer.strategy", "ddp", "--trainer.accelerator", "gpu" if use_gpu else "cpu"]
    how = json.dumps({"processes": processes, "local_mode": local_mode})

    from pyspark.ml.torch.distributor import TorchDistributor
    from pyspark.sql import SparkSession

    # the processes (driver and executors of a local master) must run this interpreter
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    active = SparkSession.getActiveSession()
    spark = active or (SparkSession.builder.master(trainer.spark_master or f"local[{processes}]")
                       .appName(f"deepapps-{app.name}-fit").config("spark.ui.enabled", "false").getOrCreate())
    if active is None:
        spark.sparkContext.setLogLevel("ERROR")
    result = Path(tempfile.mkdtemp(prefix="deepapps-spark-fit-")) / "rank0.json" if local_mode else None
    output = _Tee(sys.stderr)
    try:
        with contextlib.redirect_stdout(output):  # the processes' output: to stderr, stdout keeps the run folder
            distributor = TorchDistributor(num_processes=processes, local_mode=local_mode, use_gpu=use_gpu)
            returned = distributor.run(spark_worker, app.name, worker_argv, how, str(result) if result else None)
        code = _rank0_code(result) if local_mode else returned
    except RuntimeError as exc:  # TorchDistributor: a process, torchrun or the barrier job failed
        raise _failure(output.text(), exc) from None
    finally:
        if result is not None:
            import shutil

            shutil.rmtree(result.parent, ignore_errors=True)
        if active is None:
            spark.stop()
    if code != 0:
        raise _failure(output.text(), None, code)
    return run_dir


def spark_worker(app_name: str, argv: list[str], how: str, result: str | None) -> int | None:
    """One Spark training process (run by TorchDistributor under torchrun): the fit command with
    the devices and nodes torchrun set. Rank 0 returns the exit code (and writes it to `result`
    in local mode, where every process writes the same output file); a failing rank exits with
    its code, so torchrun stops the others instead of leaving them waiting in a collective."""
    local, world, rank = int(os.environ["LOCAL_WORLD_SIZE"]), int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    os.environ[SPARK_ENV] = how
    from deepapps.core.cli import main

    code = main([app_name, *argv, "--trainer.devices", str(local), "--trainer.num_nodes", str(world // local)])
    sys.stdout.flush()
    sys.stderr.flush()
    if rank == 0 and result:
        from deepapps.core.runtime.io import write_json

        write_json(result, {"code": code})
    if code:
        sys.exit(code)
    return code if rank == 0 else None


def _run_dir(app: AppSpec, cfg, local_mode: bool) -> str:
    """The run folder every process writes to (rank 0 only writes it): given, or (local mode) a new
    runs/<app>/<timestamp> chosen once here; a timestamp taken in each process could differ."""
    if cfg.run_dir:
        return str(cfg.run_dir) if remote.is_remote(cfg.run_dir) else str(Path(cfg.run_dir).absolute())
    if not local_mode:
        raise ConfigError("--trainer.spark_local_mode false: give --run_dir, a URL (s3://, gs://, hdfs://) or a "
                          "folder the executor running rank 0 writes and you can read")
    from deepapps.core.training.fit import default_run_dir

    return str(default_run_dir(app.name).absolute())


def _rank0_code(result: Path) -> int:
    try:
        return int(json.loads(result.read_text())["code"])
    except (OSError, ValueError, KeyError):
        raise SparkFitError("--trainer.spark_processes: rank 0 ended without an exit code (see the log above)") from None


def _failure(text: str, exc: BaseException | None, code: int | None = None) -> DeepappsError:
    """The first process error line as a DeepappsError; else the failure's last line (exit 1)."""
    errors = [line.split(ERROR_PREFIX, 1)[1].strip() for line in text.splitlines() if ERROR_PREFIX in line]
    if errors:
        return DeepappsError(errors[0])
    if exc is not None:
        lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
        return SparkFitError(f"--trainer.spark_processes: Spark training failed: {lines[0] if lines else type(exc).__name__}")
    return SparkFitError(f"--trainer.spark_processes: rank 0 ended with exit code {code} (see the log above)")


class _Tee(io.TextIOBase):
    """Writes through to `stream` and keeps the latest text, to find the processes' error lines."""

    def __init__(self, stream) -> None:
        self.stream, self.parts = stream, collections.deque(maxlen=5000)

    def write(self, text: str) -> int:
        self.parts.append(text)
        self.stream.write(text)
        return len(text)

    def flush(self) -> None:
        self.stream.flush()

    def text(self) -> str:
        return "".join(self.parts)
