"""DICOM to 8-bit pixels with pydicom (no torch): rescale, window, MONOCHROME1, 16-bit.

    stored value -> modality value (RescaleSlope x value + RescaleIntercept, e.g. Hounsfield units)
    -> window (centre/width from the call, else the file's WindowCenter/WindowWidth, else the
       image's own min..max) -> 0..255 -> inverted for MONOCHROME1 (where 0 is white)

Colour DICOM (SamplesPerPixel 3; RGB or YBR) is converted to 8-bit RGB; of a multi-frame file
the first frame is used.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from deepapps.core.errors import DataError
from deepapps.core.runtime.images import open_image

DICOM_EXTENSIONS = (".dcm", ".dicom")


def is_dicom(path: str | Path | bytes) -> bool:
    """By suffix, or by the `DICM` marker after the 128-byte preamble (of a file, or of bytes)."""
    if isinstance(path, bytes):
        return path[128:132] == b"DICM"
    path = Path(path)
    if path.suffix.lower() in DICOM_EXTENSIONS:
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def read_dicom(path: str | Path | bytes, window_center: float | None = None, window_width: float | None = None,
               name: str | None = None) -> np.ndarray:
    """Decode a DICOM file (a path, or its bytes, e.g. an upload) to uint8 (H, W) grey or (H, W, 3) RGB.

    Raises:
        DataError: one line naming the file (or `name`): missing, not DICOM, no pixel data, undecodable.
    """
    if isinstance(path, bytes):
        source, path = io.BytesIO(path), name or "image"
    else:
        source = path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    try:
        import pydicom
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise DataError(f"{path}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        ds = pydicom.dcmread(source)
    except InvalidDicomError:
        raise DataError(f"{path}: not a DICOM file") from None
    except Exception as exc:
        raise DataError(f"{path}: corrupt DICOM file ({_first_line(exc)})") from None
    if "PixelData" not in ds:
        raise DataError(f"{path}: DICOM file has no pixel data (PixelData element missing)")
    try:
        pixels = ds.pixel_array
    except Exception as exc:
        raise DataError(f"{path}: cannot decode DICOM pixel data ({_first_line(exc)})") from None
    samples = int(ds.get("SamplesPerPixel", 1))
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        pixels = pixels[0]
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
    if samples == 3:
        return _colour(pixels, photometric, int(ds.get("BitsStored", 8)))
    if pixels.ndim != 2:
        raise DataError(f"{path}: unsupported DICOM pixel array of shape {pixels.shape}")
    values = pixels.astype(np.float64) * float(ds.get("RescaleSlope", 1) or 1) + float(ds.get("RescaleIntercept", 0) or 0)
    center = window_center if window_center is not None else _first(ds.get("WindowCenter"))
    width = window_width if window_width is not None else _first(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        low, high = float(values.min()), float(values.max())
    else:
        low, high = center - width / 2, center + width / 2
    scaled = np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255
    grey = np.round(scaled).astype(np.uint8)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def open_medical_image(path: str | Path, channels: int = 1, window_center: float | None = None,
                       window_width: float | None = None) -> Image.Image:
    """A DICOM, PNG, JPEG, ... file as a PIL image in L (channels 1) or RGB mode."""
    if is_dicom(path):
        image = Image.fromarray(read_dicom(path, window_center, window_width))
        return image.convert("L" if channels == 1 else "RGB")
    return open_image(path, channels)


def _colour(pixels: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        pixels = convert_color_space(pixels, photometric, "RGB")
    if bits > 8:
        pixels = pixels.astype(np.float64) / (2 ** bits - 1) * 255
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _first(value) -> float | None:
    """WindowCenter/WindowWidth may be multi-valued: the first one; None when absent or not a number."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
