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
from deepapps.core.runtime import remote

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
# The most pixels an input image may have (a 12000 x 8000 photo), checked from its header before
# it is decoded: a 600-byte PNG can claim 200000 x 200000 pixels.
MAX_IMAGE_PIXELS = 100_000_000
# The most pixels the eval resize may produce before its centre crop: bounds extreme aspect
# ratios (a 1 x 200000 strip would resize to 224 x 44.8 million pixels).
MAX_RESIZED_PIXELS = 40_000_000
Image.MAX_IMAGE_PIXELS = MAX_IMAGE_PIXELS  # PIL's own bomb guard, at the same limit
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
    return _decode(path, str(path), channels, "not an image file")


def decode_image(data: bytes, channels: int = 3) -> Image.Image:
    """Decode image bytes (an upload), converted like `open_image`. Raises DataError."""
    if not isinstance(data, (bytes, bytearray)):
        raise DataError(f"image: expected the bytes of an image file, got {type(data).__name__}")
    if not data:
        raise DataError("image: empty")
    return _decode(io.BytesIO(data), "image", channels, "not an image")


def _decode(source, name: str, channels: int, unidentified: str) -> Image.Image:
    """Open, check the pixel count from the header, decode and convert; every failure a DataError."""
    try:
        with Image.open(source) as img:
            check_size(img.size, name)
            img.load()
            return img.convert("L" if channels == 1 else "RGB")
    except UnidentifiedImageError:
        raise DataError(f"{name}: {unidentified}") from None
    except Image.DecompressionBombError:
        raise DataError(f"{name}: over the limit of {MAX_IMAGE_PIXELS:,} pixels") from None
    except DataError:
        raise
    except Exception as exc:  # noqa: BLE001 - decoders raise many types for broken files
        raise DataError(f"{name}: corrupt or truncated image ({type(exc).__name__}: {str(exc)[:120]})") from None


def check_size(size: tuple[int, int], name: str) -> None:
    """A DataError when a (width, height) image is over MAX_IMAGE_PIXELS or empty."""
    w, h = size
    if w < 1 or h < 1:
        raise DataError(f"{name}: image of {w}x{h} pixels")
    if w * h > MAX_IMAGE_PIXELS:
        raise DataError(f"{name}: image of {w}x{h} pixels is over the limit of {MAX_IMAGE_PIXELS:,} pixels")


def to_model_input(img: Image.Image, spec: ImageSpec) -> np.ndarray:
    """Resize the shorter side to spec.resize and centre-crop spec.size: (H, W, C) uint8."""
    img = img.convert("L" if spec.channels == 1 else "RGB")
    w, h = img.size
    scale = spec.resize / min(w, h)
    new_w, new_h = max(spec.size, round(w * scale)), max(spec.size, round(h * scale))
    if new_w * new_h > MAX_RESIZED_PIXELS:
        raise DataError(f"image of {w}x{h} pixels: too elongated to resize (the shorter side to {spec.resize} "
                        f"would make {new_w}x{new_h})")
    img = img.resize((new_w, new_h), _RESAMPLE[spec.interpolation])
    left, top = (new_w - spec.size) // 2, (new_h - spec.size) // 2
    img = img.crop((left, top, left + spec.size, top + spec.size))
    array = np.array(img, dtype=np.uint8)
    return array[..., None] if array.ndim == 2 else array


def list_images(inputs: Iterable[str | Path]) -> list[Path]:
    """Files as given plus the image files found (recursively) in folders, in sorted order.

    A URL (s3://, gs://, ...) of a file or folder is listed and fetched through fsspec into the
    local cache (`core.runtime.remote.localize`); the paths returned are the cached copies.

    Raises:
        DataError: a path that does not exist, or a folder without images.
    """
    found: list[Path] = []
    for item in map(Path, map(remote.localize, inputs)):
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
