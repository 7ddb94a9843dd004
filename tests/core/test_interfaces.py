"""Every registered app against the core's interfaces: Training (torch) and Serving (torch-free)."""

from __future__ import annotations

import inspect
import re
import subprocess
import sys
from pathlib import Path

import pytest

from deepapps.core.registry import AppSpec, discover_apps
from deepapps.core.runtime.interface import Serving
from deepapps.core.training.interface import Training

APPS = discover_apps()
REPO = Path(__file__).resolve().parents[2]


def test_the_five_apps_are_registered():
    assert set(APPS) == {"vision", "healthcare", "nlp", "fraud", "forecast"}


def _members(interface: type) -> dict[str, inspect.Signature]:
    return {name: inspect.signature(fn) for name, fn in vars(interface).items()
            if inspect.isfunction(fn) and not name.startswith("_")}


@pytest.mark.parametrize("name", sorted(APPS))
@pytest.mark.parametrize("side, interface", [("training", Training), ("serving", Serving)])
def test_each_app_implements_both_sides_with_the_interfaces_signatures(name, side, interface):
    spec: AppSpec = APPS[name]
    instance = spec.load_training() if side == "training" else spec.load_serving()
    assert isinstance(instance, interface)
    for member, expected in _members(interface).items():
        got = inspect.signature(getattr(type(instance), member))
        assert list(got.parameters)[: len(expected.parameters)] == list(expected.parameters), f"{name}.{member}"
        assert all(p.default is not inspect.Parameter.empty for p in list(got.parameters.values())[len(expected.parameters):])


@pytest.mark.parametrize("name", sorted(APPS))
def test_each_app_ships_a_default_and_a_tiny_config_its_class_parses(name):
    from deepapps.core.cli import parse_config

    spec = APPS[name]
    assert spec.default_config.is_file() and (spec.configs_dir / "tiny.yaml").is_file()
    _, _, cfg, _ = parse_config(spec, "fit", ["--config", str(spec.configs_dir / "tiny.yaml")])
    assert isinstance(cfg, spec.load_config_class())


def test_the_core_names_no_app_and_nothing_imports_the_old_top_level_packages():
    core_imports_app, top_level = [], []
    for path in [*REPO.joinpath("core").rglob("*.py"), *REPO.joinpath("apps").rglob("*.py")]:
        text = path.read_text()
        if path.is_relative_to(REPO / "core") and re.search(r"^\s*(from|import) deepapps\.apps", text, re.M):
            core_imports_app.append(str(path))
        if re.search(r"^\s*(from|import) (core|apps)\b", text, re.M):
            top_level.append(str(path))
    assert not core_imports_app and not top_level


def test_installed_as_deepapps_core_and_apps_and_no_top_level_core(tmp_path):
    """From outside the checkout: the import names are deepapps.core and deepapps.apps only."""
    ok = subprocess.run([sys.executable, "-c", "import deepapps.core, deepapps.apps"], cwd=tmp_path,
                        capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    for name in ("core", "apps"):
        gone = subprocess.run([sys.executable, "-c", f"import {name}"], cwd=tmp_path, capture_output=True, text=True)
        assert gone.returncode != 0 and "No module named" in gone.stderr
