"""App registry: an app is a folder that exposes one `AppSpec` and registers it once.

Registration is the `deepapps.apps` entry-point group in pyproject.toml, so the core finds
apps without importing them, and loading a spec imports nothing heavy (no torch).
"""

from __future__ import annotations

import importlib
import sys
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

from deepapps.core.errors import ConfigError


@dataclass(frozen=True)
class AppCommand:
    """A command an app adds to the shared ones (e.g. `explain`).

    Attributes:
        name: CLI name.
        help: one line for `deepapps <app> --help`.
        target: `module:function`, called as function(app, argv) -> exit code.
    """

    name: str
    help: str
    target: str

    def load(self):
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class AppSpec:
    """What the core needs to know about an app.

    Attributes:
        name: CLI name, e.g. `vision`.
        help: one line shown by `deepapps --help`.
        task: model family, e.g. `image_classification`; stored in the ONNX metadata.
        config_class: `module:Class` of the fit config dataclass (torch-free import).
        configs_dir: folder with `default.yaml` and `tiny.yaml`.
        pipeline: module with the torch side: `build_datamodule(cfg)`, `build_network(cfg, dm)`.
        runtime: torch-free module: `add_predict_arguments(p)`, `predict(model, args)`,
            `evaluate(model, data_path, split)`.
        commands: extra commands of this app.
    """

    name: str
    help: str
    task: str
    config_class: str
    configs_dir: Path
    pipeline: str
    runtime: str
    commands: tuple[AppCommand, ...] = ()

    @property
    def default_config(self) -> Path:
        return self.configs_dir / "default.yaml"

    def load_config_class(self) -> type:
        module, _, attr = self.config_class.partition(":")
        return getattr(importlib.import_module(module), attr)

    def load_pipeline(self) -> ModuleType:
        return importlib.import_module(self.pipeline)

    def load_runtime(self) -> ModuleType:
        return importlib.import_module(self.runtime)


def discover_apps() -> dict[str, AppSpec]:
    """Every registered app, by name, from the `deepapps.apps` entry points."""
    apps = {}
    for ep in entry_points(group="deepapps.apps"):
        try:
            spec = ep.load()
        except (ImportError, AttributeError) as exc:  # one broken app must not take the others down
            print(f"deepapps: warning: app {ep.name!r} failed to load ({exc})", file=sys.stderr)
            continue
        apps[spec.name] = spec
    return dict(sorted(apps.items()))


def get_app(name: str) -> AppSpec:
    apps = discover_apps()
    if name not in apps:
        raise ConfigError(f"unknown app {name!r}; installed apps: {', '.join(apps) or 'none'}")
    return apps[name]
