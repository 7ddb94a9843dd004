"""The one fit flow every app shares, and the checkpoint commands (validate, test, export).

fit = train (build -> Lightning fit -> best checkpoint) -> validate/test in torch -> post-fit
    (stored in the checkpoint) -> export ONNX (parity-checked) -> evaluate that graph with the
    app's Serving -> model.onnx -> the app's artifacts -> metrics.json -> plots and model card

A search trial (core.tuning) runs `train` alone, without checkpoints.

Each artifact is written once.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytorch_lightning as L
import torch

from deepapps.core.contract import set_metadata, write_model
from deepapps.core.errors import ConfigError, DeepappsError
from deepapps.core.registry import AppSpec
from deepapps.core.runtime.io import write_json, write_text
from deepapps.core.runtime.session import load_model
from deepapps.core.training.auto import apply_to_config, apply_to_yaml, is_auto
from deepapps.core.training.checkpoints import (
    load_checkpoint, post_fit_state, read_checkpoint, restore, store_post_fit,
)
from deepapps.core.training.export import convert_fp16, export_model
from deepapps.core.training import privacy
from deepapps.core.training.interface import Built, FitRun
from deepapps.core.training.quantize import export_int8
from deepapps.core.training.trainer import (
    eval_trainer, make_trainer, merge_logs, read_logs, resolve_precision, trainer_info, training_ended,
)

log = logging.getLogger("deepapps")
RUN_DIR_ENV = "DEEPAPPS_RUN_DIR"


def default_run_dir(app: str) -> Path:
    return Path("runs") / app / datetime.now().strftime("%Y%m%d-%H%M%S")


@dataclass
class Trained:
    """What `train` leaves: the built network and data, the trained module, its Trainer and the
    best checkpoint (None when trained without checkpoints)."""

    built: Built
    module: L.LightningModule
    trainer: L.Trainer
    best: Path | None
    config_yaml: str = ""
    """config.yaml as written: `auto` fields replaced by the values chosen (core.training.auto)."""


def train(app: AppSpec, cfg, config: dict, config_yaml: str, run_dir: Path, callbacks: Sequence = (),
          checkpoints: bool = True, resume_from: Path | None = None) -> Trained:
    """The training part of a fit: seed -> build -> config.yaml -> module -> Lightning fit.

    Args:
        app, cfg, config, config_yaml: as for `fit`.
        run_dir: the folder written (config.yaml, logs, checkpoints/ when `checkpoints`).
        callbacks: extra Lightning callbacks (a search's pruning callback).
        checkpoints: False trains without checkpoints, TensorBoard or a progress display (a
            search trial: only config.yaml and csv/metrics.csv are written).
        resume_from: the last checkpoint to continue from (`--resume`).
    """
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    training = app.load_training()
    built = training.build(cfg)
    if built.auto_choices:  # `auto` as resolved: config.yaml and the checkpoint reproduce the run
        apply_to_config(config, built.auto_choices)
        config_yaml = apply_to_yaml(config_yaml, built.auto_choices)
    private = privacy.prepare(built, cfg)  # --privacy.epsilon: DP-SGD's layers and checks; None when off
    # only now: bad data or settings stop the run before anything is written
    run_dir.mkdir(parents=True, exist_ok=True)
    write_text(run_dir / "config.yaml", config_yaml)
    module = training.module(built, cfg)
    module.save_hyperparameters({"deepapps": built.saved(config, app.name).to_dict()})
    earlier_logs = read_logs(run_dir) if resume_from else None  # before CSVLogger deletes the file
    trainer, checkpoint = make_trainer(cfg.trainer, run_dir, [*callbacks, *privacy.callbacks(private)], checkpoints)
    if checkpoints:
        log.info("run folder %s; data %s; weights %s; precision %s", run_dir, built.datamodule.summary()["source"],
                 built.weights, resolve_precision(cfg.trainer))
    os.environ[RUN_DIR_ENV] = str(run_dir)
    try:
        trainer.fit(module, datamodule=built.datamodule, ckpt_path=str(resume_from) if resume_from else None)
    finally:
        os.environ.pop(RUN_DIR_ENV, None)
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()  # what follows runs on rank 0 alone
    if trainer.is_global_zero and earlier_logs is not None:
        merge_logs(run_dir, earlier_logs)
    best = None
    if checkpoint is not None:
        best = Path(checkpoint.best_model_path) if checkpoint.best_model_path else run_dir / "checkpoints" / "last.ckpt"
    return Trained(built, module, trainer, best, config_yaml)


def fit(app: AppSpec, cfg, config: dict, config_yaml: str, search: dict | None = None) -> Path:
    """Train, export and evaluate one run; returns the run folder.

    Args:
        app: the app being trained.
        cfg: the app's fit config (dataclass instance).
        config: the same config as a plain dict (saved in checkpoints and metadata).
        config_yaml: the same config as YAML (saved as config.yaml).
        search: the hyperparameter search that chose this config (`deepapps <app> tune
            --tune.refit`): stored in metrics.json's `search` and the model card; None for a
            plain fit.
    """
    # DDP children re-run this command: they take the parent's folder, not a new timestamp
    run_dir = Path(cfg.run_dir or os.environ.get(RUN_DIR_ENV) or default_run_dir(app.name))
    last = run_dir / "checkpoints" / "last.ckpt"
    if cfg.resume and not last.is_file():
        raise ConfigError(f"--resume: {last} does not exist; give the --run_dir of the run to continue")
    if not cfg.resume and last.is_file() and RUN_DIR_ENV not in os.environ:
        raise ConfigError(f"--run_dir {run_dir}: holds a run already; add --resume to continue it or pick another folder")
    if cfg.resume:
        _check_unfinished(app, run_dir, last, _resolved_max_epochs(run_dir, cfg.trainer.max_epochs))

    if cfg.export_int8:  # an app int8 is not offered for stops here, before training
        method = app.load_training().int8_method(cfg)
        if method.method is None:
            raise ConfigError(f"--export_int8: {method.reason}")
    trained = train(app, cfg, config, config_yaml, run_dir, resume_from=last if cfg.resume else None)
    if not trained.trainer.is_global_zero:
        return run_dir
    training, serving = app.load_training(), app.load_serving()
    built, module, best = trained.built, trained.module, trained.best
    module.load_state_dict(read_checkpoint(best).state_dict)
    evaluator, dm = eval_trainer(cfg.trainer), built.datamodule
    metrics = {
        "best_checkpoint": best.name,
        "trainer": trainer_info(trained.trainer),
        "val": _strip(evaluator.validate(module, datamodule=dm, verbose=False)[0], "val/"),
        "test_torch": _strip(evaluator.test(module, datamodule=dm, verbose=False)[0], "test/"),
    }
    post_fit = training.post_fit(module, built, cfg)
    if (spent := privacy.state(trained.trainer)) is not None:  # the DP-SGD budget spent: contract, card
        post_fit.state["privacy"] = spent
    store_post_fit(best, post_fit.state)

    onnx_path = run_dir / "model.onnx"
    proto, contract = export_model(app.name, training, built, cfg, config, post_fit.state,
                                   {"val": metrics["val"]}, str(onnx_path))
    set_metadata(proto, contract.to_json())  # what evaluate reads; the test metrics are added after
    shipped = load_model(onnx_path, provider="cpu", app=app.name, model_bytes=proto.SerializeToString())
    evaluation = serving.evaluate(shipped, cfg.data.path, "test")
    metrics |= {"test": evaluation.metrics, "export": contract.export, "post_fit": post_fit.state}
    contract = contract.with_(metrics={"val": metrics["val"], "test": scalars(evaluation.metrics)})
    write_model(onnx_path, proto, contract)
    if cfg.export_fp16:
        convert_fp16(onnx_path, run_dir / "model.fp16.onnx")
    if cfg.export_int8:
        metrics["int8"] = _int8_copy(app, training, built, cfg, onnx_path)
    if search is not None:
        metrics["search"] = search
    run = FitRun(run_dir, app, cfg, trained.config_yaml, built, module, metrics, evaluation, post_fit, contract, search)
    metrics |= training.artifacts(run)
    write_json(run_dir / "metrics.json", metrics)
    training.report(run)
    log.info("test (ONNX Runtime): %s", scalars(metrics["test"]))
    return run_dir


def _resolved_max_epochs(run_dir: Path, max_epochs):
    """`trainer.max_epochs`; for `auto`, the value the run resolved (its config.yaml)."""
    if not is_auto(max_epochs):
        return max_epochs
    import yaml

    try:
        return int(yaml.safe_load((run_dir / "config.yaml").read_text())["trainer"]["max_epochs"])
    except (OSError, KeyError, TypeError, ValueError, yaml.YAMLError):
        raise ConfigError(f"--resume: {run_dir / 'config.yaml'} does not hold the resolved trainer.max_epochs; "
                          "give --trainer.max_epochs") from None


def _check_unfinished(app: AppSpec, run_dir: Path, last: Path, max_epochs: int) -> None:
    """`--resume` continues a run whose training was cut short; a finished one is left untouched.

    Raises:
        ConfigError: the run wrote metrics.json (fit's last step), or its training ended (all
            epochs trained, early stopping).
    """
    ended = "its metrics.json is written" if (run_dir / "metrics.json").is_file() else training_ended(last, max_epochs)
    if ended:
        raise ConfigError(f"--resume: the run in {run_dir} is finished ({ended}); export its model with "
                          f"`deepapps {app.name} export --ckpt {run_dir / 'checkpoints' / 'best.ckpt'}` "
                          f"or train again with a new --run_dir")


def run_stage(app: AppSpec, ckpt: Path, cfg, stage: str) -> dict:
    """`validate` or `test` a checkpoint in torch; returns the metrics."""
    module, built = load_checkpoint(app, ckpt, cfg, with_data=True)
    trainer = eval_trainer(cfg.trainer)
    run = trainer.validate if stage == "validate" else trainer.test
    prefix = "val/" if stage == "validate" else "test/"
    return _strip(run(module, datamodule=built.datamodule, verbose=False)[0], prefix)


def export_checkpoint(app: AppSpec, ckpt: Path, cfg, config: dict, out: Path, fp16: bool = False,
                      int8: bool = False) -> Path:
    """Export a checkpoint as fit exported it (its post-fit state included); the parity batch is
    real data when the data path exists."""
    training = app.load_training()
    if int8 and (method := training.int8_method(cfg)).method is None:
        raise ConfigError(f"deepapps {app.name} export: --int8: {method.reason}")
    checkpoint = read_checkpoint(ckpt)
    try:
        _, built = restore(app, checkpoint, cfg, with_data=True)
    except DeepappsError as exc:  # data gone: export still works, on dummy inputs
        log.warning("data not available (%s); parity check on random inputs", str(exc).splitlines()[0])
        _, built = restore(app, checkpoint, cfg, with_data=False)
    scores = {k: scalars(v) for k, v in _run_metrics(ckpt).items() if k in ("val", "test")}
    proto, contract = export_model(app.name, training, built, cfg, config, post_fit_state(checkpoint), scores, str(out))
    write_model(out, proto, contract)
    if fp16:
        convert_fp16(out, out.with_suffix(".fp16.onnx"))
    if int8:
        export_int8(app, training, built, cfg, out)
    return out


def _int8_copy(app: AppSpec, training, built: Built, cfg, onnx_path: Path) -> dict:
    """fit's int8 copy: its measurement, or (refused, data missing) the one line why, logged;
    the run itself is kept either way."""
    try:
        result = export_int8(app, training, built, cfg, onnx_path)
    except DeepappsError as exc:
        reason = str(exc).splitlines()[0]
        log.warning("%s", reason)
        return {"refused": reason}
    return result.to_dict() | {"markdown": result.markdown}


def _run_metrics(ckpt: Path) -> dict:
    """The metrics.json of the run a checkpoint sits in ({} for a checkpoint moved elsewhere)."""
    import json

    path = Path(ckpt).parent.parent / "metrics.json"
    return json.loads(path.read_text()) if path.is_file() else {}


def scalars(metrics: dict) -> dict:
    """The number-valued entries of a metrics dict (what the contract and the log carry)."""
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}


def _strip(metrics: dict, prefix: str) -> dict:
    return {k.removeprefix(prefix): float(v) for k, v in metrics.items() if k.startswith(prefix)}
