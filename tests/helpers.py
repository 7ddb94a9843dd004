"""Test helpers: synthetic images and ../shared lookup."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPAPPS_SHARED", REPO.parent / "shared"))
TINY = REPO / "apps" / "vision" / "configs" / "tiny.yaml"


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def make_image_folder(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int = 16,
                      size: int = 24, seed: int = 0) -> Path:
    """One folder per class of noisy images whose mean colour is the class colour."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, (size, size, 3))
            pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:02d}.png")
    return root


COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}
