"""DICOM to 8-bit pixels with pydicom (no torch): rescale, window, MONOCHROME1, 16-bit.

    stored value -> modality value (RescaleSlope x value + RescaleIntercept, e.g. Hounsfield units)
    -> window (centre/width from the call, else the file's WindowCenter/WindowWidth, else the
       image's own min..max) -> 0..255 -> inverted for MONOCHROME1 (where 0 is white)

Colour DICOM (SamplesPerPixel 3; RGB or YBR) is converted to 8-bit RGB; of a multi-frame file
the first frame is used.

Untrusted input (uploads) is bounded before anything large is allocated: the file's size, the
inflated size of a deflated dataset (pydicom would inflate it whole, a deflate bomb), and the
decoded size the header declares (Rows x Columns x frames x samples x bytes). Pixels are mapped
to 8 bits through a lookup table (8- and 16-bit data) or in float32, never a float64 copy.
"""

from __future__ import annotations

import io
import zlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
from PIL import Image

from deepapps.core.errors import DataError
from deepapps.core.runtime.images import open_image

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

DICOM_EXTENSIONS = (".dcm", ".dicom")

MAX_PIXEL_BYTES = 512 * 2**20
"""Largest decoded pixel data accepted (all frames, as declared by the header): 512 MiB."""
MAX_FILE_BYTES = MAX_PIXEL_BYTES + 64 * 2**20
"""Largest DICOM file or upload read, compressed or not: the pixel cap plus room for the header."""
MAX_INFLATED_BYTES = 256 * 2**20
"""Largest dataset a deflated (1.2.840.10008.1.2.1.99) file may inflate to: 256 MiB."""

_DEFLATED = "1.2.840.10008.1.2.1.99"
_PIECE = 2**20  # inflate and read in 1 MiB steps: no step allocates much beyond what is kept


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
        DataError: one line naming the file (or `name`): missing, not DICOM, no pixel data, too large
            (see MAX_FILE_BYTES, MAX_INFLATED_BYTES, MAX_PIXEL_BYTES), undecodable.
    """
    if isinstance(path, bytes):
        label, size = name or "image", len(path)
    else:
        label = path = Path(path)
        if not path.is_file():
            raise DataError(f"{path}: no such file")
        size = path.stat().st_size
    if size > MAX_FILE_BYTES:
        raise DataError(f"{label}: DICOM file of {_mib(size)} is over the {_mib(MAX_FILE_BYTES)} limit; refused")
    try:
        import pydicom  # noqa: F401
        from pydicom.errors import InvalidDicomError
    except ImportError:
        raise DataError(f"{label}: reading DICOM needs pydicom (pip install pydicom)") from None
    try:
        with (io.BytesIO(path) if isinstance(path, bytes) else open(path, "rb")) as source:
            ds = _read_dataset(source, label)
    except DataError:
        raise
    except InvalidDicomError:
        raise DataError(f"{label}: not a DICOM file") from None
    except Exception as exc:
        raise DataError(f"{label}: corrupt DICOM file ({_first_line(exc)})") from None
    if "PixelData" not in ds:
        raise DataError(f"{label}: DICOM file has no pixel data (PixelData element missing)")
    try:
        pixels = _first_frame(ds)
        samples = int(ds.get("SamplesPerPixel", 1))
        photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).upper()
        if samples == 3:
            return _colour(pixels, photometric, int(ds.get("BitsStored", 8)))
        if pixels.ndim != 2:
            raise DataError(f"{label}: unsupported DICOM pixel array of shape {pixels.shape}")
        return _grey(pixels, ds, window_center, window_width, photometric)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{label}: cannot decode DICOM pixel data ({_first_line(exc)})") from None


def open_medical_image(path: str | Path, channels: int = 1, window_center: float | None = None,
                       window_width: float | None = None) -> Image.Image:
    """A DICOM, PNG, JPEG, ... file as a PIL image in L (channels 1) or RGB mode."""
    if is_dicom(path):
        image = Image.fromarray(read_dicom(path, window_center, window_width))
        return image.convert("L" if channels == 1 else "RGB")
    return open_image(path, channels)


def _read_dataset(source: BinaryIO, label: str | Path) -> Dataset:
    """The dataset of a DICOM file, read only after its declared pixel size passed `_check_size`.

    Raises:
        InvalidDicomError: no DICM marker. DataError: over a size limit.
    """
    import pydicom
    from pydicom import filereader

    filereader.read_preamble(source, False)
    # The very reader dcmread uses, so this is the transfer syntax pydicom would act on.
    meta = filereader._read_file_meta_info(source)
    if meta.get("TransferSyntaxUID") != _DEFLATED:
        source.seek(0)
        _check_size(pydicom.dcmread(source, stop_before_pixels=True), label)
        source.seek(0)
        return pydicom.dcmread(source)
    # Deflated: what dcmread does (inflate the rest, read it as explicit VR little endian), bounded.
    body = _inflate(source, label)
    _check_size(_read_header(body), label)
    body.seek(0)
    ds = filereader.read_dataset(body, is_implicit_VR=False, is_little_endian=True)
    ds.file_meta = meta
    return ds


def _inflate(source: BinaryIO, label: str | Path) -> io.BytesIO:
    """The raw-deflate stream after the file meta, inflated in steps up to MAX_INFLATED_BYTES.

    The header is checked as soon as the first MiB is out, so a small file declaring a huge
    image is refused long before the cap.
    """
    inflater = zlib.decompressobj(-zlib.MAX_WBITS)
    body, peeked = io.BytesIO(), False
    while not inflater.eof:
        data = inflater.unconsumed_tail or source.read(_PIECE)
        if not data:
            raise DataError(f"{label}: corrupt DICOM file (deflated data is truncated)")
        body.write(inflater.decompress(data, min(_PIECE, MAX_INFLATED_BYTES + 1 - body.tell())))
        if body.tell() > MAX_INFLATED_BYTES:
            raise DataError(f"{label}: DICOM data inflates to more than {_mib(MAX_INFLATED_BYTES)}; refused")
        if not peeked and body.tell() >= _PIECE:
            peeked = True
            try:
                header = _read_header(io.BytesIO(body.getvalue()))
            except Exception:  # cut mid-element: the full read decides
                header = None
            if header is not None:
                _check_size(header, label)
    body.seek(0)
    return body


def _read_header(body: BinaryIO) -> Dataset:
    """The elements of an explicit VR little endian dataset up to its pixel data."""
    from pydicom import filereader

    return filereader.read_dataset(body, is_implicit_VR=False, is_little_endian=True,
                                   stop_when=lambda tag, vr, length: tag >= 0x7FE00000)


def _check_size(ds: Dataset, label: str | Path) -> None:
    """Refuse a header declaring more than MAX_PIXEL_BYTES of decoded pixels (DataError, one line)."""
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    frames = max(int(ds.get("NumberOfFrames", 1) or 1), 1)
    samples, bits = int(ds.get("SamplesPerPixel", 1) or 1), int(ds.get("BitsAllocated", 8) or 8)
    size = rows * columns * frames * samples * max(-(-bits // 8), 1)  # 1-bit data unpacks to a byte
    if size > MAX_PIXEL_BYTES:
        raise DataError(f"{label}: DICOM image of {rows} x {columns} pixels x {frames} frames x {samples} samples "
                        f"x {bits} bits decodes to {_mib(size)}, over the {_mib(MAX_PIXEL_BYTES)} limit; refused")


def _first_frame(ds: Dataset) -> np.ndarray:
    """The first frame's pixels as stored (YBR stays YBR: `_colour` converts it, once); pydicom 3
    decodes only that frame of a multi-frame file."""
    try:
        from pydicom.pixels import pixel_array
    except ImportError:  # pydicom 2
        pixels = ds.pixel_array
        return pixels[0] if int(ds.get("NumberOfFrames", 1) or 1) > 1 else pixels
    return pixel_array(ds, index=0, raw=True)


def _grey(pixels: np.ndarray, ds: Dataset, window_center: float | None, window_width: float | None,
          photometric: str) -> np.ndarray:
    """Rescale, window (the call's, else the file's, else min..max), 0..255, MONOCHROME1 inverted."""
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    center = window_center if window_center is not None else _first(ds.get("WindowCenter"))
    width = window_width if window_width is not None else _first(ds.get("WindowWidth"))
    if center is None or width is None or width <= 0:
        # the rescale is monotonic: the modality range is that of the stored extremes
        ends = np.array([pixels.min(), pixels.max()], dtype=np.float64) * slope + intercept
        low, high = float(ends.min()), float(ends.max())
    else:
        low, high = center - width / 2, center + width / 2

    def to_grey(values: np.ndarray) -> np.ndarray:
        scaled = np.clip((values * slope + intercept - low) / max(high - low, 1e-6), 0, 1) * 255
        return np.round(scaled).astype(np.uint8)

    grey = _map_values(pixels, to_grey)
    return 255 - grey if photometric == "MONOCHROME1" else grey


def _map_values(pixels: np.ndarray, to_uint8: Callable[[np.ndarray], np.ndarray]) -> np.ndarray:
    """`to_uint8` of the pixels as floats, without a float copy of the image.

    8- and 16-bit integers go through a table of `to_uint8` of every possible value (float64, so
    exactly as if applied to the image); anything else is converted in float32.
    """
    kind, itemsize = pixels.dtype.kind, pixels.dtype.itemsize
    if kind in "ui" and itemsize <= 2:
        every_value = np.arange(2 ** (8 * itemsize), dtype=f"u{itemsize}").view(f"{kind}{itemsize}")
        table = to_uint8(every_value.astype(np.float64))
        return table[pixels.view(f"{pixels.dtype.byteorder}u{itemsize}")]  # signed values by their bits
    return to_uint8(pixels.astype(np.float32))


def _colour(pixels: np.ndarray, photometric: str, bits: int) -> np.ndarray:
    if photometric.startswith("YBR"):
        from pydicom.pixels import convert_color_space

        pixels = convert_color_space(pixels, photometric, "RGB")
    if bits > 8:
        return _map_values(pixels, lambda values: np.clip(values / (2 ** bits - 1) * 255, 0, 255).astype(np.uint8))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def _first(value) -> float | None:
    """WindowCenter/WindowWidth may be multi-valued: the first one; None when absent or not a number."""
    if isinstance(value, Sequence) and not isinstance(value, str):
        value = value[0] if len(value) else None
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        return None


def _mib(size: int) -> str:
    return f"{size / 2**20:.0f} MiB" if size >= 2**20 else f"{size} bytes"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:200] if text else type(exc).__name__
