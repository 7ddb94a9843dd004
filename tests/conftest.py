"""Shared fixtures: synthetic images and a tiny fitted run."""

from __future__ import annotations

from pathlib import Path

import pytest

from deepapps.core.cli import main
from tests.helpers import COLOURS, TINY, make_image_folder


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return make_image_folder(tmp_path_factory.mktemp("images"), COLOURS)


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory, image_folder) -> Path:
    """A tiny vision fit on the synthetic folder, done once for the session."""
    run_dir = tmp_path_factory.mktemp("run") / "tiny"
    code = main([
        "vision", "fit", "--config", str(TINY), "--data.path", str(image_folder),
        "--run_dir", str(run_dir), "--trainer.max_epochs", "6", "--trainer.patience", "6", "--data.batch_size", "8",
    ])
    assert code == 0
    return run_dir
