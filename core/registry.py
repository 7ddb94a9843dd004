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
from typing import TYPE_CHECKING

from deepapps.core.errors import ConfigError

if TYPE_CHECKING:
    from deepapps.core.runtime.interface import Serving
    from deepapps.core.training.interface import Training


def _load(target: str):
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


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
        return _load(self.target)


@dataclass(frozen=True)
class AppSpec:
    """What the core needs to know about an app.

    Attributes:
        name: CLI name, e.g. `vision`.
        help: one line shown by `deepapps --help`.
        family: the network family it trains, e.g. `image_classification` (`deepapps import`
            wraps foreign image classifiers for the apps of that family).
        config_class: `module:Class` of the fit config dataclass (torch-free import).
        configs_dir: folder with `default.yaml` and `tiny.yaml`.
        training: `module:Class` of its core.training.interface.Training (the torch side).
        serving: `module:Class` of its core.runtime.interface.Serving (torch-free).
        commands: extra commands of this app.
        family_default: the general app of its family (`deepapps import` wraps foreign models for
            it unless told otherwise).
    """

    name: str
    help: str
    family: str
    config_class: str
    configs_dir: Path
    training: str
    serving: str
    commands: tuple[AppCommand, ...] = ()
    family_default: bool = False

    @property
    def default_config(self) -> Path:
        return self.configs_dir / "default.yaml"

    def load_config_class(self) -> type:
        return _load(self.config_class)

    def load_training(self) -> Training:
        from deepapps.core.training.interface import Training

        return _instance(self, self.training, Training)

    def load_serving(self) -> Serving:
        from deepapps.core.runtime.interface import Serving

        return _instance(self, self.serving, Serving)


def _instance(app: AppSpec, target: str, interface: type):
    cls = _load(target)
    if not (isinstance(cls, type) and issubclass(cls, interface)):
        raise TypeError(f"app {app.name}: {target} is not a {interface.__module__}.{interface.__name__}")
    return cls()


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
