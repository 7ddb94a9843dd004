"""Checkpoints: what deepapps keeps in them, reading them safely, and rebuilding their model.

A Lightning checkpoint of deepapps holds, besides the weights, `hyper_parameters["deepapps"]`:
the run's config, the contract kind and preprocessing known after reading the data, and, once
fit has run post-fit, that post-fit state (`Saved`). So `export --ckpt` from any folder gives
the model fit gave. Checkpoints of deepapps 0.1 (`hyper_parameters["run"]`) still load; their
post-fit state is read from the run's metrics.json, where that release kept it.

Checkpoints are loaded with `weights_only=True`: a crafted file cannot run code.
"""

from __future__ import annotations

import json
import typing
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import torch

from deepapps.core.config import from_dict
from deepapps.core.contract import Classification, Forecast, problem_type
from deepapps.core.errors import ConfigError
from deepapps.core.registry import AppSpec
from deepapps.core.runtime.io import atomic_write
from deepapps.core.training import privacy
from deepapps.core.training.interface import Built, Saved, Served

HPARAMS_KEY = "deepapps"


@dataclass
class Checkpoint:
    """A checkpoint's weights and deepapps state."""

    path: Path
    state_dict: dict
    saved: Saved


def read_checkpoint(ckpt: str | Path) -> Checkpoint:
    """A Lightning checkpoint of deepapps; a missing, unreadable or foreign file is a one-line error."""
    ckpt = Path(ckpt)
    state = _load(ckpt)
    hparams = state.get("hyper_parameters") or {}
    if HPARAMS_KEY in hparams:
        saved = Saved.from_dict(hparams[HPARAMS_KEY])
    elif "run" in hparams:
        saved = _saved_v1(hparams, ckpt)
    else:
        raise ConfigError(f"--ckpt {ckpt}: not a deepapps checkpoint (no saved config)")
    return Checkpoint(ckpt, state["state_dict"], saved)


def store_post_fit(ckpt: Path, post_fit: dict) -> None:
    """Add the post-fit state to a checkpoint fit wrote (rewritten atomically)."""
    state = _load(ckpt)
    state["hyper_parameters"][HPARAMS_KEY]["post_fit"] = post_fit
    atomic_write(ckpt, lambda tmp: torch.save(state, tmp))


def post_fit_state(checkpoint: Checkpoint) -> dict:
    """The post-fit state of a checkpoint; for an older one, from its run's metrics.json."""
    if checkpoint.saved.post_fit is not None:
        return checkpoint.saved.post_fit
    metrics = checkpoint.path.parent.parent / "metrics.json"  # <run>/checkpoints/x.ckpt
    return json.loads(metrics.read_text()).get("post_fit", {}) if metrics.is_file() else {}


def app_config(app: AppSpec, checkpoint: Checkpoint):
    """The app's config dataclass as the checkpoint was trained with it; a config with settings the
    app does not have (another app's checkpoint) is a one-line error."""
    cls = app.load_config_class()
    saved = config_values(app, checkpoint)
    unknown = _foreign_keys(cls, saved)
    if not saved or unknown:
        detail = f"its config has {unknown[0]}" if unknown else "no saved config"
        raise ConfigError(f"--ckpt {checkpoint.path}: not a {app.name} checkpoint ({detail})")
    return from_dict(cls, saved)


def config_values(app: AppSpec, checkpoint: Checkpoint) -> dict:
    """The checkpoint's config as a dict, upgraded to the app's current config class; another
    app's checkpoint is a one-line error."""
    made_by = checkpoint.saved.app
    if made_by is not None and made_by != app.name:
        raise ConfigError(f"--ckpt {checkpoint.path}: not a {app.name} checkpoint (made by the {made_by} app; "
                          f"use `deepapps {made_by} ...`)")
    config = checkpoint.saved.config
    return _without_retired(config, app.load_config_class()) if checkpoint.saved.schema < 2 else config


def load_checkpoint(app: AppSpec, ckpt: str | Path, cfg, with_data: bool):
    """(LightningModule in eval mode with the checkpoint's weights, Built) for `cfg`."""
    return restore(app, read_checkpoint(ckpt), cfg, with_data)


def restore(app: AppSpec, checkpoint: Checkpoint, cfg, with_data: bool):
    """`load_checkpoint` for a checkpoint already read."""
    training = app.load_training()
    built = training.build(cfg, saved=checkpoint.saved, with_data=with_data)
    privacy.prepare(built, cfg, check=False)  # a DP-SGD run's replaced layers (no-op without privacy)
    module = training.module(built, cfg)
    try:
        module.load_state_dict(checkpoint.state_dict)
    except RuntimeError:  # missing/unexpected keys or shapes: torch's message is pages long
        raise ConfigError(f"--ckpt {checkpoint.path}: its weights do not fit a {app.name} model built from its config "
                          "(a checkpoint of another app?)") from None
    return module.eval(), built


def _load(ckpt: Path) -> dict:
    if not ckpt.is_file():
        raise ConfigError(f"--ckpt {ckpt}: no such checkpoint")
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for files it cannot read or will not unpickle
        raise ConfigError(f"--ckpt {ckpt}: not a readable checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or "state_dict" not in state:
        raise ConfigError(f"--ckpt {ckpt}: not a Lightning checkpoint (no state_dict)")
    return state


def _saved_v1(hparams: dict, ckpt: Path) -> Saved:
    """deepapps 0.1 kept `run: {config, inputs, preprocess, weights}`, `labels`, `multilabel`;
    its forecasters' labels were their target columns."""
    run = hparams["run"]
    pre = dict(run.get("preprocess") or {})
    if "look_back" in pre and "quantiles" in pre:
        kind = Forecast(list(pre["targets"]), int(pre["look_back"]), int(pre["horizon"]), list(pre["quantiles"]),
                        pre.get("freq"), pre.get("season_length"))
        for key in kind.preprocess_part():
            pre.pop(key, None)
    else:
        labels, multilabel = list(hparams.get("labels") or []), bool(hparams.get("multilabel"))
        kind = Classification(labels, problem_type(len(labels), multilabel))  # no labels: app_config refuses it
    return Saved(run.get("config") or {}, kind, pre, run.get("weights", ""), schema=1)


# settings deepapps 0.1 gave every model config "because the shared fit pipeline asks"; apps
# without a pretrained part no longer have them
_RETIRED_V1 = ("pretrained", "freeze_epochs")


def _without_retired(config: dict, cls: type) -> dict:
    """A 0.1 config without the retired model settings the app's config class lacks."""
    model, hints = config.get("model"), typing.get_type_hints(cls)
    if not isinstance(model, dict) or "model" not in hints or not is_dataclass(hints["model"]):
        return config
    known = {f.name for f in fields(hints["model"])}
    return config | {"model": {k: v for k, v in model.items() if k in known or k not in _RETIRED_V1}}


def _foreign_keys(cls: type, values: dict, prefix: str = "") -> list[str]:
    known = {f.name for f in fields(cls)}
    hints = typing.get_type_hints(cls)
    out = [prefix + k for k in values if k not in known]
    for k, v in values.items():
        if k in known and is_dataclass(hints[k]) and isinstance(v, dict):
            out += _foreign_keys(hints[k], v, f"{prefix}{k}.")
    return out


@dataclass
class Shipped:
    """A checkpoint's network as fit shipped it: config, weights, and the post-fit state applied."""

    cfg: object
    module: object  # the LightningModule (eval mode)
    built: Built
    served: Served  # what the ONNX file computes; served.kind has the stored threshold


def shipped_model(app: AppSpec, ckpt: str | Path) -> Shipped:
    """Rebuild the model fit exported from `ckpt` (no data needed): what the explain commands
    attribute, so their predictions are the shipped file's."""
    checkpoint = read_checkpoint(ckpt)
    cfg = app_config(app, checkpoint)
    module, built = restore(app, checkpoint, cfg, with_data=False)
    served = app.load_training().served(built, post_fit_state(checkpoint))
    served.module.eval()
    return Shipped(cfg, module, built, served)
