"""`--resume` is exact and loses nothing: a fit killed mid-epoch and resumed ends with the metrics
and the logs of the uninterrupted fit; a finished run is refused and left as it is."""

from __future__ import annotations

import json
import os
import shutil
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch
from polars.testing import assert_frame_equal
from torch.utils.data import DataLoader

from deepapps.apps.healthcare.training import EpochWeightedSampler
from deepapps.apps.nlp.data import BucketSampler
from deepapps.core.cli import main
from deepapps.core.training.trainer import merge_logs, rng_states, set_rng_states, training_ended
from tests.helpers import TINY

EPOCHS = 3
# one thread each: the two fits run side by side, and every run must use the same thread count
ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _fit_args(data: Path, run_dir: Path, *extra: str) -> list[str]:
    # 17 batches an epoch: time to kill one mid-epoch; val/loss: the best checkpoint is a late one,
    # so the test metrics depend on the resumed epoch
    return ["fit", "--config", str(TINY), "--data.path", str(data), "--run_dir", str(run_dir),
            "--data.batch_size", "2", "--trainer.limit_train_batches", "1.0", "--trainer.max_epochs", str(EPOCHS),
            "--trainer.patience", str(EPOCHS),
            "--trainer.monitor", "val/loss", "--trainer.monitor_mode", "min", *extra]


def _fit(data: Path, run_dir: Path, *extra: str, stderr=subprocess.DEVNULL) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "deepapps.apps.vision", *_fit_args(data, run_dir, *extra)],
                            env=ENV, stdout=subprocess.DEVNULL, stderr=stderr)


def _epochs_in(ckpt: Path) -> int | None:
    """The epochs a checkpoint has trained (None while it cannot be read)."""
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception:
        return None
    return state["loops"]["fit_loop"]["epoch_progress"]["current"]["processed"]


def _kill_in_epoch(process: subprocess.Popen, stderr: Path, last: Path, epoch: int, timeout: float = 150,
                   into: float = 0.05) -> None:
    """SIGKILL `process` (no clean shutdown at all) `into` seconds into `epoch` (1-based), once the
    checkpoint of the epoch before is written."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        # EpochSummary prints the line, then the checkpoints of that epoch are written
        if f"epoch {epoch - 1}/{EPOCHS}:" in stderr.read_text() and _epochs_in(last) == epoch - 1:
            break
        time.sleep(0.02)
    time.sleep(into)  # into the epoch: its learning rates are logged, some batches trained
    process.send_signal(signal.SIGKILL)
    process.wait()


def _files(run_dir: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(run_dir)): (p.stat().st_mtime_ns, p.stat().st_size)
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


def test_a_killed_fit_resumed_ends_as_the_uninterrupted_fit(tmp_path, image_folder, capsys):
    full, cut = tmp_path / "full", tmp_path / "cut"
    uninterrupted = _fit(image_folder, full)  # alongside the killed one: two cores, one thread each
    stderr = tmp_path / "cut.stderr"
    for into in (0.05, 0.01, 0.0):  # a quiet machine can finish the tiny last epoch within the first delay
        shutil.rmtree(cut, ignore_errors=True)
        with stderr.open("w") as err:
            victim = _fit(image_folder, cut, stderr=err)
            _kill_in_epoch(victim, stderr, cut / "checkpoints" / "last.ckpt", EPOCHS, into=into)
        if _epochs_in(cut / "checkpoints" / "last.ckpt") == EPOCHS - 1:
            break
    assert victim.returncode == -signal.SIGKILL
    assert _epochs_in(cut / "checkpoints" / "last.ckpt") == EPOCHS - 1, "killed too late: the last epoch had ended"
    assert not (cut / "model.onnx").exists()

    resumed = subprocess.run([sys.executable, "-m", "deepapps.apps.vision", *_fit_args(image_folder, cut, "--resume")],
                             env=ENV, capture_output=True, text=True)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert uninterrupted.wait() == 0

    # the same floats: data order, augmentation and dropout of the resumed epoch are those of the uninterrupted run
    assert json.loads((cut / "metrics.json").read_text()) == json.loads((full / "metrics.json").read_text())
    logs, expected = pl.read_csv(cut / "csv" / "metrics.csv"), pl.read_csv(full / "csv" / "metrics.csv")
    assert_frame_equal(logs, expected)  # every row once, the learning rates of each epoch included
    assert logs["lr-AdamW/pg1"].drop_nulls().len() == EPOCHS
    assert logs["epoch"].drop_nulls().unique().sort().to_list() == list(range(EPOCHS))

    # a finished run: one line, and nothing touched
    before = _files(cut)
    assert main(["vision", *_fit_args(image_folder, cut, "--resume")]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("deepapps: error:")]
    assert len(errors) == 1 and "is finished" in errors[0] and "export --ckpt" in errors[0], errors
    assert _files(cut) == before

    # training over without metrics.json (killed while exporting): refused the same way
    ended = tmp_path / "ended"
    (ended / "checkpoints").mkdir(parents=True)
    (ended / "checkpoints" / "last.ckpt").write_bytes((full / "checkpoints" / "last.ckpt").read_bytes())
    before = _files(ended)
    assert main(["vision", *_fit_args(image_folder, ended, "--resume")]) == 2
    assert f"{EPOCHS} of max_epochs={EPOCHS} epochs trained" in capsys.readouterr().err
    assert _files(ended) == before


def test_training_ended_reads_epochs_and_early_stopping(tmp_path):
    ckpt = tmp_path / "last.ckpt"
    progress = {"fit_loop": {"epoch_progress": {"current": {"processed": 4, "completed": 3}}}}
    stopper = "EarlyStopping{'monitor': 'val/loss', 'mode': 'min'}"
    torch.save({"state_dict": {}, "loops": progress, "callbacks": {stopper: {"stopped_epoch": 0, "stopping_reason": 0}}},
               ckpt)
    assert training_ended(ckpt, 5) is None
    assert training_ended(ckpt, 4) == "4 of max_epochs=4 epochs trained"
    torch.save({"state_dict": {}, "loops": progress, "callbacks": {stopper: {"stopped_epoch": 3, "stopping_reason": 3}}},
               ckpt)
    assert training_ended(ckpt, 10) == "early stopping ended it after epoch 4"


def test_random_states_survive_a_weights_only_checkpoint(tmp_path):
    def draw():
        return torch.rand(4).tolist(), np.random.rand(4).tolist(), random.random(), random.gauss(0, 1)

    random.gauss(0, 1)  # python keeps a cached gaussian: it must come back too
    np.random.standard_normal()
    torch.save({"rng": rng_states()}, tmp_path / "x.ckpt")
    expected = draw()
    set_rng_states(torch.load(tmp_path / "x.ckpt", weights_only=True)["rng"])
    assert draw() == expected


def test_merge_logs_keeps_the_learning_rates_and_drops_what_is_logged_again(tmp_path):
    def rows(*items):  # (epoch, step, lr, loss)
        return pl.DataFrame(items, schema={"epoch": pl.Int64, "step": pl.Int64, "lr": pl.Float64,
                                           "val/loss": pl.Float64}, orient="row")

    earlier = rows((None, 0, 0.3, None), (0, 3, None, 0.9), (None, 4, 0.2, None), (1, 7, None, 0.8),
                   (None, 8, 0.1, None))  # killed in epoch 2, after its learning rate was logged
    (tmp_path / "csv").mkdir()
    rows((None, 8, 0.1, None), (2, 11, None, 0.7)).write_csv(tmp_path / "csv" / "metrics.csv")
    merge_logs(tmp_path, earlier)
    merged = pl.read_csv(tmp_path / "csv" / "metrics.csv")
    assert merged["step"].to_list() == [0, 3, 4, 7, 8, 11]
    assert merged["lr"].drop_nulls().to_list() == [0.3, 0.2, 0.1]
    # nothing logged yet by the resumed run: the earlier rows stay
    (tmp_path / "csv" / "metrics.csv").unlink()
    merge_logs(tmp_path, earlier)
    assert pl.read_csv(tmp_path / "csv" / "metrics.csv")["step"].to_list() == [0, 3, 4, 7, 8]


def test_samplers_draw_by_epoch_as_lightning_sets_it():
    lengths = np.random.default_rng(0).integers(3, 60, 200)
    bucket = BucketSampler(lengths, 16, shuffle=True, bucket=True, seed=1)
    first = list(bucket)
    assert list(bucket) == first  # no hidden counter: the order is the epoch's
    _set_sampler_epoch(DataLoader(range(200), batch_sampler=bucket), 5)  # what Lightning calls
    assert bucket.epoch == 5 and list(bucket) != first
    fresh = BucketSampler(lengths, 16, shuffle=True, bucket=True, seed=1)  # a resumed process
    fresh.set_epoch(5)
    assert list(fresh) == list(bucket)

    weights = torch.tensor([1.0, 1.0, 8.0], dtype=torch.double)
    sampler = EpochWeightedSampler(weights, 64, seed=3)
    _set_sampler_epoch(DataLoader(range(3), sampler=sampler), 2)
    epoch2 = list(sampler)
    assert list(sampler) == epoch2
    fresh = EpochWeightedSampler(weights, 64, seed=3)
    fresh.set_epoch(2)
    assert list(fresh) == epoch2
    fresh.set_epoch(3)
    assert list(fresh) != epoch2
