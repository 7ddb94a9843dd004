"""Trainer factory and the one fit pipeline every app shares.

fit = train -> best checkpoint -> validate/test in torch -> export ONNX (parity-checked)
    -> evaluate the ONNX file on the test split -> metrics.json, plots, model_card.md
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import typing
from dataclasses import asdict
from datetime import datetime
from pathlib import Path

import onnx
import polars as pl
import pytorch_lightning as L
import torch
from pytorch_lightning.callbacks import (
    Callback, EarlyStopping, LearningRateMonitor, ModelCheckpoint, RichProgressBar,
)
from pytorch_lightning.loggers import CSVLogger, TensorBoardLogger

from deepapps.core.config import TrainerConfig
from deepapps.core.errors import ConfigError, DeepappsError
from deepapps.core.export import convert_fp16, export_onnx, read_metadata, set_metadata
from deepapps.core.pipelines import Built
from deepapps.core.registry import AppSpec
from deepapps.core.runtime.io import atomic_write, write_json, write_text
from deepapps.core.runtime.session import load_model
from deepapps.core.tasks.classification import ClassificationTask, problem_type

log = logging.getLogger("deepapps")
RUN_DIR_ENV = "DEEPAPPS_RUN_DIR"


class EpochSummary(Callback):
    """One line per epoch when there is no terminal for a progress bar (CI logs, nohup)."""

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("train/loss_epoch", "val/"))}
        text = " ".join(f"{k}={v:.4f}" for k, v in sorted(shown.items()))
        print(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}: {text}", file=sys.stderr, flush=True)


class FreezeBackbone(Callback):
    """No backbone gradients for the first `epochs` (the schedule also gives it lr 0 then)."""

    def __init__(self, epochs: int):
        self.epochs = epochs

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.backbone.requires_grad_(trainer.current_epoch >= self.epochs)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        pl_module.backbone.requires_grad_(True)


def resolve_precision(cfg: TrainerConfig) -> str:
    """`auto`: bf16-mixed on a CUDA GPU that has bf16, 16-mixed on older GPUs, else 32-true."""
    if cfg.precision != "auto":
        return cfg.precision
    if cfg.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
        return "bf16-mixed" if torch.cuda.is_bf16_supported() else "16-mixed"
    return "32-true"


def make_trainer(
    cfg: TrainerConfig, run_dir: Path, callbacks: list[Callback] | None = None,
) -> tuple[L.Trainer, ModelCheckpoint]:
    """A Trainer with best/last checkpoints, early stopping, LR monitor, CSV + TensorBoard logs."""
    mode = cfg.monitor_mode
    checkpoint = ModelCheckpoint(
        dirpath=run_dir / "checkpoints", filename="best", monitor=cfg.monitor, mode=mode,
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
            EarlyStopping(monitor=cfg.monitor, mode=mode, patience=cfg.patience),
            LearningRateMonitor(logging_interval="epoch"),
            *progress,
            *(callbacks or []),
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


def default_run_dir(app: str) -> Path:
    return Path("runs") / app / datetime.now().strftime("%Y%m%d-%H%M%S")


def fit(app: AppSpec, cfg, config: dict, config_yaml: str) -> Path:
    """Train, export and evaluate one run; returns the run folder.

    Args:
        app: the app being trained.
        cfg: the app's fit config (dataclass instance).
        config: the same config as a plain dict (saved in checkpoints and metadata).
        config_yaml: the same config as YAML (saved as config.yaml).
    """
    # DDP children re-run this command: they take the parent's folder, not a new timestamp
    run_dir = Path(cfg.run_dir or os.environ.get(RUN_DIR_ENV) or default_run_dir(app.name))
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.resume and not last.is_file():
        raise ConfigError(f"--resume: {last} does not exist; give the --run_dir of the run to continue")
    if not cfg.resume and last.is_file() and RUN_DIR_ENV not in os.environ:
        raise ConfigError(f"--run_dir {run_dir}: holds a run already; add --resume to continue it or pick another folder")
    L.seed_everything(cfg.seed, workers=True, verbose=False)

    built = app.load_pipeline().build(cfg, pretrained=cfg.model.pretrained)
    # only now: bad data or settings stop the run before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", config_yaml)
    dm = built.datamodule
    task = make_task(built, cfg, config, class_weights=dm.class_weights(getattr(cfg.optim, "class_weights", None)))
    freeze = getattr(cfg.model, "freeze_epochs", 0)
    trainer, checkpoint = make_trainer(cfg.trainer, run_dir, [FreezeBackbone(freeze)] if freeze > 0 else [])
    earlier_logs = _read_logs(run_dir) if cfg.resume else None
    log.info("run folder %s; data %s; weights %s; precision %s", run_dir, dm.summary()["source"],
             built.weights, resolve_precision(cfg.trainer))
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        trainer.fit(task, datamodule=dm, ckpt_path=str(last) if cfg.resume else None)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # what follows runs on rank 0 alone
    if not trainer.is_global_zero:
        return run_dir
    if earlier_logs is not None:
        _merge_logs(run_dir, earlier_logs)

    best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else last
    task.load_state_dict(torch.load(best, map_location="cpu", weights_only=False)["state_dict"])
    evaluator = eval_trainer(cfg.trainer)
    metrics = {
        "best_checkpoint": best.name,
        "val": _strip(evaluator.validate(task, datamodule=dm, verbose=False)[0], "val/"),
        "test_torch": _strip(evaluator.test(task, datamodule=dm, verbose=False)[0], "test/"),
    }
    pipeline = app.load_pipeline()
    extra = pipeline.post_fit(task, built, cfg) if hasattr(pipeline, "post_fit") else {}
    onnx_path = run_dir / "model.onnx"
    export_info = export_built(app, built, cfg, config, extra, {"val": metrics["val"]}, onnx_path)["export"]
    evaluation = app.load_runtime().evaluate(load_model(onnx_path, provider="cpu", app=app.name), cfg.data.path, "test")
    metrics["test"] = evaluation.metrics
    metrics["export"] = export_info
    if extra:
        metrics["post_fit"] = extra  # so `export --ckpt` can bake the same calibration in
    _store_metrics_in_model(onnx_path, metrics)
    if cfg.export_fp16:
        convert_fp16(onnx_path, run_dir / "model.fp16.onnx")
    write_json(run_dir / "metrics.json", metrics)
    if hasattr(pipeline, "write_report"):
        pipeline.write_report(run_dir, app, built, cfg, config_yaml, metrics, evaluation)
    else:
        from deepapps.core.report.run_report import write_run_report  # matplotlib only when reporting

        write_run_report(run_dir, app, built, cfg, config_yaml, metrics, evaluation)
    log.info("test (ONNX Runtime): %s", _scalars(metrics["test"]))
    return run_dir


def make_task(built: Built, cfg, config: dict, class_weights: list[float] | None = None) -> L.LightningModule:
    """The pipeline's own LightningModule, or a ClassificationTask."""
    if built.task_factory is not None:
        return built.task_factory(built, cfg, config, class_weights)
    hparams = {"config": config, "inputs": built.inputs, "preprocess": built.preprocess, "weights": built.weights}
    frozen = cfg.model.freeze_epochs > 0
    return ClassificationTask(
        built.net, built.labels, built.multilabel, cfg.optim, class_weights, hparams,
        freeze_epochs=cfg.model.freeze_epochs, backbone_lr_ratio=cfg.model.unfreeze_lr_ratio if frozen else 1.0,
    )


def onnx_metadata(app: AppSpec, built: Built, cfg, config: dict, metrics: dict) -> dict:
    """The deepapps JSON that travels in model.onnx (see DESIGN.md: the ONNX contract)."""
    data = built.datamodule.summary() if built.datamodule is not None else {}
    return {
        "app": app.name,
        "family": app.task,
        "task": problem_type(len(built.labels), built.multilabel),
        "labels": built.labels,
        "inputs": built.inputs,
        "outputs": [{"name": name, "dtype": "float32"} for name in built.output_names],
        "preprocess": built.preprocess,
        "threshold": 0.5 if built.multilabel else None,
        "metrics": metrics,
        "train": {
            "data": {k: data[k] for k in ("source", "sizes", "notes") if k in data},
            "data_config": asdict(cfg.data),
            "backbone": getattr(cfg.model, "backbone", None),
            "pretrained": built.weights,
            "config_sha256": hashlib.sha256(repr(sorted(config.items())).encode()).hexdigest(),
        },
    }


def load_checkpoint(app: AppSpec, ckpt: Path, cfg, with_data: bool) -> tuple[ClassificationTask, Built]:
    """Rebuild the network from a checkpoint's saved config and load its weights."""
    state = read_checkpoint(ckpt)
    hp = state.get("hyper_parameters", {})
    built = app.load_pipeline().build(
        cfg, pretrained=None, labels=hp.get("labels"), multilabel=hp.get("multilabel", False), with_data=with_data,
    )
    task = make_task(built, cfg, hp.get("run", {}).get("config", {}))
    try:
        task.load_state_dict(state["state_dict"])
    except RuntimeError:  # missing/unexpected keys or shapes: torch's message is pages long
        raise ConfigError(f"--ckpt {ckpt}: its weights do not fit a {app.name} model built from its config "
                          "(a checkpoint of another app?)") from None
    return task.eval(), built


def read_checkpoint(ckpt: Path) -> dict:
    """A Lightning checkpoint's contents; a missing or unreadable file is a one-line error."""
    if not ckpt.is_file():
        raise ConfigError(f"--ckpt {ckpt}: no such checkpoint")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False)
    except Exception as exc:  # torch raises many types for files it cannot read
        raise ConfigError(f"--ckpt {ckpt}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"--ckpt {ckpt}: not a Lightning checkpoint (no state_dict)")
    return state


def checkpoint_config(ckpt: Path) -> dict:
    """The config dict a checkpoint was trained with."""
    return read_checkpoint(ckpt).get("hyper_parameters", {}).get("run", {}).get("config", {})


def run_metrics(ckpt: Path) -> dict:
    """metrics.json of the run a checkpoint belongs to (<run>/checkpoints/x.ckpt); {} without one."""
    path = Path(ckpt).parent.parent / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def checkpoint_app_config(app: AppSpec, ckpt: Path, state: dict | None = None):
    """The app's config dataclass as the checkpoint (or its already read `state`) was trained with
    it; a checkpoint whose config has settings the app does not (another app's) is a one-line error."""
    from dataclasses import fields, is_dataclass

    from deepapps.core.config import from_dict

    def foreign(cls: type, values: dict, prefix: str = "") -> list[str]:
        known = {f.name: f.type for f in fields(cls)}
        hints = typing.get_type_hints(cls)
        out = [prefix + k for k in values if k not in known]
        for k, v in values.items():
            if k in known and is_dataclass(hints[k]) and isinstance(v, dict):
                out += foreign(hints[k], v, f"{prefix}{k}.")
        return out

    state = state if state is not None else read_checkpoint(ckpt)
    saved, cls = state.get("hyper_parameters", {}).get("run", {}).get("config", {}), app.load_config_class()
    unknown = foreign(cls, saved)
    if not saved or unknown:
        detail = f"its config has {unknown[0]}" if unknown else "no saved config"
        raise ConfigError(f"--ckpt {ckpt}: not a {app.name} checkpoint ({detail})")
    return from_dict(cls, saved)


def eval_trainer(cfg: TrainerConfig) -> L.Trainer:
    """A one-device Trainer without loggers, for metrics after fit or on a checkpoint."""
    return L.Trainer(
        accelerator=cfg.accelerator, devices=1, precision=resolve_precision(cfg),
        logger=False, enable_progress_bar=False, enable_model_summary=False,
    )


def run_stage(app: AppSpec, ckpt: Path, cfg, stage: str) -> dict:
    """`validate` or `test` a checkpoint in torch; returns the metrics."""
    task, built = load_checkpoint(app, ckpt, cfg, with_data=True)
    trainer = eval_trainer(cfg.trainer)
    run = trainer.validate if stage == "validate" else trainer.test
    prefix = "val/" if stage == "validate" else "test/"
    return _strip(run(task, datamodule=built.datamodule, verbose=False)[0], prefix)


def export_built(app: AppSpec, built, cfg, config: dict, post_fit: dict, scores: dict, out: Path) -> dict:
    """ONNX export with the parity check, the same for fit and `export --ckpt`.

    `post_fit` is what the pipeline's `post_fit` returned: merged into the metadata, its
    `temperature` scales the logits in the graph, and the pipeline's optional
    `restore_post_fit(built, post_fit)` puts any other state back on `built` first.
    """
    pipeline = app.load_pipeline()
    if hasattr(pipeline, "restore_post_fit"):
        pipeline.restore_post_fit(built, post_fit)
    metadata = onnx_metadata(app, built, cfg, config, metrics=scores) | post_fit
    return export_onnx(built.export_module(post_fit.get("temperature", 1.0)), built.example_inputs(8), out,
                       [i["name"] for i in built.inputs], metadata, output_names=built.output_names,
                       dynamic_axes=built.dynamic_axes, tolerance=built.parity_tolerance)


def export_checkpoint(app: AppSpec, ckpt: Path, cfg, config: dict, out: Path, fp16: bool = False,
                      int8: bool = False) -> Path:
    """Export a checkpoint; the parity batch is real data when the data path exists.

    `int8` needs the app's pipeline to define `export_int8(onnx_path, cfg)` (quantize + measure).
    """
    pipeline = app.load_pipeline()
    if int8 and not hasattr(pipeline, "export_int8"):
        raise ConfigError(f"deepapps {app.name} export: --int8 is not available for {app.name} models")
    try:
        _, built = load_checkpoint(app, ckpt, cfg, with_data=True)
    except DeepappsError as exc:  # data gone: export still works, on dummy inputs
        log.warning("data not available (%s); parity check on random inputs", str(exc).splitlines()[0])
        _, built = load_checkpoint(app, ckpt, cfg, with_data=False)
    metrics = run_metrics(ckpt)
    scores = {k: _scalars(metrics[k]) for k in ("val", "test") if k in metrics}
    export_built(app, built, cfg, config, metrics.get("post_fit", {}), scores, out)
    if fp16:
        convert_fp16(out, out.with_suffix(".fp16.onnx"))
    if int8:
        pipeline.export_int8(out, cfg)
    return out


def _store_metrics_in_model(onnx_path: Path, metrics: dict) -> None:
    proto = onnx.load(str(onnx_path))
    meta = read_metadata(onnx_path)
    meta["metrics"] = {"val": metrics["val"], "test": _scalars(metrics["test"])}
    set_metadata(proto, meta)
    atomic_write(onnx_path, lambda tmp: onnx.save(proto, str(tmp)))


def _read_logs(run_dir: Path) -> pl.DataFrame | None:
    path = run_dir / "csv" / "metrics.csv"
    return pl.read_csv(path, infer_schema_length=None) if path.is_file() else None


def _merge_logs(run_dir: Path, earlier: pl.DataFrame | None) -> None:
    """CSVLogger rewrites metrics.csv on resume: put the interrupted run's epochs back."""
    now = _read_logs(run_dir)
    if earlier is None or now is None:
        return
    first_new = now["epoch"].drop_nulls().min()
    kept = earlier.filter(pl.col("epoch") < first_new)
    merged = pl.concat([kept, now], how="diagonal_relaxed")
    atomic_write(run_dir / "csv" / "metrics.csv", lambda tmp: merged.write_csv(tmp))


def _scalars(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}


def _strip(metrics: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): float(v) for k, v in metrics.items() if k.startswith(prefix)}
