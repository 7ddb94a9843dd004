"""Image reading and the eval-time resize shared by training, evaluate and predict (no torch)."""

from __future__ import annotations

import io
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from deepapps.core.errors import DataError

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class ImageSpec:
    """What the graph's pixel input expects; travels in the ONNX metadata as `preprocess`."""

    size: int
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    channels: int = 3

    @property
    def resize(self) -> int:
        """Shorter side before the centre crop (timm's eval transform)."""
        return math.floor(self.size / self.crop_pct)

    @classmethod
    def from_meta(cls, preprocess: dict) -> ImageSpec:
        return cls(
            size=preprocess["size"],
            crop_pct=preprocess["crop_pct"],
            interpolation=preprocess["interpolation"],
            channels=preprocess.get("channels", 3),
        )

    def to_meta(self) -> dict:
        return {
            "size": self.size,
            "crop_pct": self.crop_pct,
            "interpolation": self.interpolation,
            "channels": self.channels,
            "resize_shorter_side": self.resize,
            "layout": "NHWC",
            "dtype": "uint8",
            "in_graph": "scale to [0,1], normalise with the backbone's mean/std, NHWC->NCHW",
        }


def open_image(path: str | Path, channels: int = 3) -> Image.Image:
    """Decode an image fully, converted to RGB (or L for one channel).

    Raises:
        DataError: one line naming the file, when it is missing, not an image, or corrupt.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file")
    try:
        with Image.open(path) as img:
            img.load()
            return img.convert("L" if channels == 1 else "RGB")
    except UnidentifiedImageError:
        raise DataError(f"{path}: not an image file") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"{path}: corrupt or truncated image ({exc})") from None


def decode_image(data: bytes, channels: int = 3) -> Image.Image:
    """Decode image bytes (an upload), converted like `open_image`. Raises DataError."""
    if not data:
        raise DataError("image: empty")
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return img.convert("L" if channels == 1 else "RGB")
    except UnidentifiedImageError:
        raise DataError("image: not an image") from None
    except (OSError, ValueError, SyntaxError) as exc:
        raise DataError(f"image: corrupt or truncated ({exc})") from None


def to_model_input(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """Resize the shorter side to spec.resize and centre-crop spec.size: (H, W, C) uint8."""
    img = img.convert("L" if spec.channels == 1 else "RGB")
    w, h = img.size
    scale = spec.resize / min(w, h)
    new_w, new_h = max(spec.size, round(w * scale)), max(spec.size, round(h * scale))
    img = img.resize((new_w, new_h), _RESAMPLE[spec.interpolation])
    left, top = (new_w - spec.size) // 2, (new_h - spec.size) // 2
    img = img.crop((left, top, left + spec.size, top + spec.size))
    array = np.array(img, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given plus the image files found (recursively) in folders, in sorted order.

    Raises:
        DataError: a path that does not exist, or a folder without images.
    """
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            in_dir = sorted(p for p in item.rglob("*") if p.suffix.lower() in IMAGE_EXTENSIONS)
            if not in_dir:
                exts = ", ".join(e.lstrip(".") for e in IMAGE_EXTENSIONS)
                raise DataError(f"{item}: folder has no images ({exts})")
            found.extend(in_dir)
        elif item.exists():
            found.append(item)
        else:
            raise DataError(f"{item}: no such file or folder")
    if not found:
        raise DataError("no input images given")
    return found
