"""The Lightning Trainer every app trains with: checkpoints, early stopping, logs, precision."""

from __future__ import annotations

import sys
from pathlib import Path

import polars as pl
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from deepapps.core.config import TrainerConfig
from deepapps.core.runtime.io import atomic_write


class EpochSummary(Callback):
    """One line per epoch when there is no terminal for a progress bar (CI logs, nohup)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/loss_epoch", "val/"))}
        text = " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {text}", file=sys.stderr, flush=True)


def resolve_precision(cfg: TrainerConfig) -> str:
    """`auto`: bf16-mixed on a CUDA GPU that has bf16, 16-mixed on older GPUs, else 32-true."""
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def make_trainer(cfg: TrainerConfig, run_dir: Path) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer with best/last checkpoints, early stopping, LR monitor, CSV + TensorBoard logs."""
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
    trainer = L.Trainer(
        default_root_dir=run_dir,
        max_epochs=cfg.max_epochs,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        strategy=cfg.strategy,
        precision=resolve_precision(cfg),
        callbacks=[
            checkpoint,
            latest,
            EarlyStopping(monitor=cfg.monitor, mode=cfg.monitor_mode, patience=cfg.patience),
            LearningRateMonitor(logging_interval="epoch"),
            *progress,
        ],
        logger=[CSVLogger(run_dir, name="csv", version=""), TensorBoardLogger(run_dir, name="tensorboard", version="")],
        enable_progress_bar=sys.stderr.isatty(),
        limit_train_batches=cfg.limit_train_batches,
        limit_val_batches=cfg.limit_val_batches,
        gradient_clip_val=cfg.gradient_clip_val,
        accumulate_grad_batches=cfg.accumulate_grad_batches,
        log_every_n_steps=cfg.log_every_n_steps,
        enable_model_summary=False,
    )
    return trainer, checkpoint


def eval_trainer(cfg: TrainerConfig) -> L.Trainer:
    """A one-device Trainer without loggers, for metrics after fit or on a checkpoint."""
    return L.Trainer(
        accelerator=cfg.accelerator, devices=1, precision=resolve_precision(cfg),
        logger=False, enable_progress_bar=False, enable_model_summary=False,
    )


def read_logs(run_dir: Path) -> pl.DataFrame | None:
    path = run_dir / "csv" / "metrics.csv"
    return pl.read_csv(path, infer_schema_length=None) if path.is_file() else None


def merge_logs(run_dir: Path, earlier: pl.DataFrame | None) -> None:
    """CSVLogger rewrites metrics.csv on resume: put the interrupted run's epochs back."""
    now = read_logs(run_dir)
    if earlier is None or now is None:
        return
    first_new = now["epoch"].drop_nulls().min()
    kept = earlier.filter(pl.col("epoch") < first_new)
    merged = pl.concat([kept, now], how="diagonal_relaxed")
    atomic_write(run_dir / "csv" / "metrics.csv", lambda tmp: merged.write_csv(tmp))
