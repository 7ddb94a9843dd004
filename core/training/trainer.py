"""The Lightning Trainer every app trains with: checkpoints, early stopping, logs, precision, and
what makes `--resume` exact (the random states in every checkpoint) and lossless (merged logs)."""

from __future__ import annotations

import json
import os
import random
import re
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import polars as pl
import pytorch_lightning as L
import torch
from lightning_fabric.utilities.data import _set_sampler_epoch
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from deepapps.core.config import TrainerConfig
from deepapps.core.errors import ConfigError
from deepapps.core.runtime.io import atomic_write


class EpochSummary(Callback):
    """One line per epoch when there is no terminal for a progress bar (CI logs, nohup)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/loss_epoch", "val/", "privacy/"))}
        text = " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {text}", file=sys.stderr, flush=True)


RNG_KEY = "deepapps_rng"


def rng_states() -> dict:
    """The global random states (torch CPU, CUDA when in use, numpy, python `random`) as plain
    tensors, lists and numbers, so a checkpoint holding them loads with `weights_only=True`."""
    _, keys, pos, has_gauss, cached = np.random.get_state()
    version, state, gauss_next = random.getstate()
    states = {
        "torch": torch.get_rng_state(),
        "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss),
                  "cached_gaussian": float(cached)},
        "python": {"version": version, "state": list(state), "gauss_next": gauss_next},
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def set_rng_states(states: dict) -> None:
    """Set the random states `rng_states` returned (CUDA only where there are as many devices)."""
    torch.set_rng_state(states["torch"])
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["pos"], numpy["has_gauss"],
                         numpy["cached_gaussian"]))
    python = states["python"]
    random.setstate((python["version"], tuple(python["state"]), python["gauss_next"]))
    cuda = states.get("cuda")
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)


class RandomState(Callback):
    """Exact resume: every checkpoint keeps the random states of the moment it is written (the end
    of an epoch), and a resumed fit starts its first epoch from them, as the uninterrupted run did.

    Lightning makes the first training iterator of a resumed fit (and fetches its first batch) in
    `FitLoop.setup_data`, before it sets the samplers' epoch and before `on_train_start`; the
    uninterrupted run made it at the start of that epoch, after `set_epoch`. So `on_train_start`
    sets the random states and the epoch, then makes that iterator again.
    """

    def __init__(self) -> None:
        self.pending: dict | None = None

    def on_save_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        checkpoint[RNG_KEY] = rng_states()

    def on_load_checkpoint(self, trainer: L.Trainer, pl_module: L.LightningModule, checkpoint: dict) -> None:
        self.pending = checkpoint.get(RNG_KEY)  # None in a checkpoint of an older deepapps

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.pending is None:
            return
        set_rng_states(self.pending)
        self.pending = None
        loop = trainer.fit_loop
        loader, fetcher = getattr(loop, "_combined_loader", None), getattr(loop, "_data_fetcher", None)
        if loader is None or fetcher is None:  # a Lightning without these: resumed, maybe not exactly
            return
        if any(hasattr(dataloader, "load_state_dict") for dataloader in loader.flattened):
            return  # a stateful loader was put back where it stood: leave its iterator
        for dataloader in loader.flattened:
            _set_sampler_epoch(dataloader, loop.epoch_progress.current.processed)
        iter(fetcher)


def resolve_precision(cfg: TrainerConfig) -> str:
    """`auto`: bf16-mixed on a CUDA GPU that has bf16, 16-mixed on older GPUs, else 32-true."""
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def make_trainer(cfg: TrainerConfig, run_dir: Path, callbacks: Sequence[Callback] = (),
                 checkpoints: bool = True) -> tuple[L.Trainer, ModelCheckpoint | None]:
    """A Trainer with best/last checkpoints, early stopping, LR monitor, CSV + TensorBoard logs.

    Args:
        callbacks: extra callbacks (a search trial's pruning callback).
        checkpoints: False (a search trial): no checkpoints, no TensorBoard, no progress
            display, no sanity-check validation; early stopping and csv/metrics.csv stay. The
            checkpoint returned is then None.
    """
    loggers = [CSVLogger(run_dir, name="csv", version="")]
    if not checkpoints:
        kept = [EarlyStopping(monitor=cfg.monitor, mode=cfg.monitor_mode, patience=cfg.patience)]
        return _trainer(cfg, run_dir, [*kept, *callbacks], loggers, progress=False, num_sanity_val_steps=0), None
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=cfg.monitor, mode=cfg.monitor_mode,
        save_top_k=1, auto_insert_metric_name=False, enable_version_counter=False,
    )
    # Lightning >= 2.6 refreshes save_last only when the best improves; resume needs every epoch
    latest = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="last", monitor=None, save_top_k=1,
        enable_version_counter=False, save_on_exception=True,
    )
    progress = [RichProgressBar()] if sys.stderr.isatty() else [EpochSummary()]
    every = [
        checkpoint,
        latest,
        EarlyStopping(monitor=cfg.monitor, mode=cfg.monitor_mode, patience=cfg.patience),
        LearningRateMonitor(logging_interval="epoch"),
        RandomState(),
        *progress,
        *callbacks,
    ]
    loggers.append(TensorBoardLogger(run_dir, name="tensorboard", version=""))
    return _trainer(cfg, run_dir, every, loggers, progress=sys.stderr.isatty()), checkpoint


def _trainer(cfg: TrainerConfig, run_dir: Path, callbacks: list, loggers: list, progress: bool,
             **options) -> L.Trainer:
    return L.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg),
        callbacks=callbacks,
        logger=loggers,
        enable_progress_bar=progress,
        enable_checkpointing=any(isinstance(c, ModelCheckpoint) for c in callbacks),
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_model_summary=False,
        **options,
    )


def trainer_info(trainer: L.Trainer) -> dict:
    """How a fit trained (metrics.json's `trainer`): strategy, world size, nodes, devices,
    accelerator, precision; `spark` when pyspark's TorchDistributor launched it."""
    strategy = type(trainer.strategy).__name__.removesuffix("Strategy")  # DDP, SingleDevice, FSDP, DeepSpeed
    info = {
        "strategy": re.sub(r"(?<=[a-z])(?=[A-Z])", "_", strategy).lower(),  # ddp, single_device, ...
        "world_size": trainer.world_size, "num_nodes": trainer.num_nodes, "devices": trainer.num_devices,
        "accelerator": type(trainer.accelerator).__name__.removesuffix("Accelerator").lower(),
        "precision": str(trainer.precision),
    }
    if SPARK_ENV in os.environ:
        info["spark"] = json.loads(os.environ[SPARK_ENV])
    return info


SPARK_ENV = "DEEPAPPS_SPARK"
"""Set by core.training.spark_fit in each process it launches: JSON of how (processes, local_mode)."""


def eval_trainer(cfg: TrainerConfig) -> L.Trainer:
    """A one-device Trainer without loggers, for metrics after fit or on a checkpoint."""
    return L.Trainer(
        accelerator=cfg.accelerator, devices=1, precision=resolve_precision(cfg),
        logger=False, enable_progress_bar=False, enable_model_summary=False,
    )


def training_ended(last: Path, max_epochs: int) -> str | None:
    """Why the training of the run whose last checkpoint is `last` is over (all `max_epochs`
    trained, or early stopping fired), or None when it can go on.

    Raises:
        ConfigError: the checkpoint cannot be read (a run killed while writing it).
    """
    try:
        state = torch.load(last, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for files it cannot read or will not unpickle
        raise ConfigError(f"--resume: {last} is not a readable checkpoint ({type(exc).__name__})") from None
    # `processed` counts the epoch whose end wrote the checkpoint; `completed` lags it by one there
    progress = state.get("loops", {}).get("fit_loop", {}).get("epoch_progress", {}).get("current", {})
    trained = progress.get("processed")
    if trained is not None and trained >= max_epochs:
        return f"{trained} of max_epochs={max_epochs} epochs trained"
    for key, callback in state.get("callbacks", {}).items():
        if key.startswith("EarlyStopping") and (callback.get("stopping_reason") or callback.get("stopped_epoch")):
            return f"early stopping ended it after epoch {callback.get('stopped_epoch', 0) + 1}"
    return None


def read_logs(run_dir: Path) -> pl.DataFrame | None:
    """The run's csv/metrics.csv, or None when there is none."""
    path = run_dir / "csv" / "metrics.csv"
    return pl.read_csv(path, infer_schema_length=None) if path.is_file() else None


def merge_logs(run_dir: Path, earlier: pl.DataFrame | None) -> None:
    """Put the interrupted run's rows back into metrics.csv (CSVLogger starts it afresh on resume).

    The earlier rows kept are those logged before the resumed run's first step: the resumed run
    logs again whatever came after its checkpoint. The step is the logger's own clock, so rows
    without an epoch (the learning rates of LearningRateMonitor) are kept too; a log without a
    step column falls back to the epoch.
    """
    if earlier is None or earlier.is_empty():
        return
    now = read_logs(run_dir)
    if now is not None and not now.is_empty():
        column = "step" if "step" in earlier.columns and "step" in now.columns else "epoch"
        first_new = now[column].drop_nulls().min()
        if first_new is not None:
            earlier = earlier.filter(pl.col(column) < first_new)
        earlier = pl.concat([earlier, now], how="diagonal_relaxed")
    merged = earlier.select(sorted(earlier.columns))  # the column order CSVLogger writes
    atomic_write(run_dir / "csv" / "metrics.csv", lambda tmp: merged.write_csv(tmp))
