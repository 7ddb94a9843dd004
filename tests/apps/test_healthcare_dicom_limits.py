"""Healthcare DICOM decoding under hostile input: deflated files, deflate bombs, size caps, and the
lookup-table windowing that replaced the float64 copies (same results as the float64 formula)."""

from __future__ import annotations

import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from deepapps.apps.healthcare import dicom
from deepapps.apps.healthcare.dicom import read_dicom
from deepapps.core.errors import DataError
from tests.apps.healthcare_helpers import write_dicom


def _resave(path: Path, out: Path, deflated: bool = False, **changes) -> Path:
    """`path` saved again as `out` with attributes changed (e.g. Rows, PixelData), optionally deflated."""
    import pydicom
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    ds = pydicom.dcmread(path)
    for key, value in changes.items():
        setattr(ds, key, value)
    if deflated:
        ds.file_meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    ds.save_as(out, enforce_file_format=True)
    return out


def _deflate_bomb(path: Path, rows: int, columns: int, zeros: int, trailing: bool = False) -> Path:
    """A deflated DICOM of Rows x Columns 16-bit pixels whose stream carries `zeros` zero bytes: as the
    pixel data itself (`trailing` False), or after a valid image, as a huge trailing padding element."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import DeflatedExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = DeflatedExplicitVRLittleEndian
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    ds = Dataset()
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    deflater = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [head.getvalue(), deflater.compress(body.getvalue())]
    if trailing:
        size = rows * columns * 2
        parts.append(deflater.compress(b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", size) + bytes(size)))
        parts.append(deflater.compress(b"\xfc\xff\xfc\xffOB\0\0" + struct.pack("<I", zeros)))
    else:
        parts.append(deflater.compress(b"\xe0\x7f\x10\x00OW\0\0" + struct.pack("<I", min(rows * columns * 2, 2**32 - 2))))
    block = bytes(2**20)
    parts += [deflater.compress(block) for _ in range(zeros // len(block))]
    path.write_bytes(b"".join(parts) + deflater.flush())
    return path


def _reference_grey(stored: np.ndarray, slope: float, intercept: float, center: float | None, width: float | None,
                    monochrome1: bool = False) -> np.ndarray:
    """The float64 formula read_dicom used before the lookup table (the results must not change)."""
    values = stored.astype(np.float64) * slope + intercept
    low, high = (values.min(), values.max()) if center is None else (center - width / 2, center + width / 2)
    grey = np.round(np.clip((values - low) / max(high - low, 1e-6), 0, 1) * 255).astype(np.uint8)
    return 255 - grey if monochrome1 else grey


# --- deflated files -----------------------------------------------------------------------


@pytest.mark.parametrize("shape", [(30, 20), (1024, 700)])  # the second inflates past the 1 MiB header peek
def test_deflated_dicom_decodes_like_its_uncompressed_twin(tmp_path, shape):
    import pydicom

    stored = np.random.default_rng(0).integers(0, 4096, shape)
    plain = write_dicom(tmp_path / "plain.dcm", stored, slope=2, intercept=-1000, center=1000, width=3000)
    deflated = _resave(plain, tmp_path / "deflated.dcm", deflated=True)
    assert pydicom.dcmread(deflated).file_meta.TransferSyntaxUID.is_deflated
    assert deflated.read_bytes() != plain.read_bytes()
    expected = read_dicom(plain)
    assert np.array_equal(read_dicom(deflated), expected)
    assert np.array_equal(read_dicom(deflated.read_bytes(), name="upload.dcm"), expected)
    assert np.array_equal(read_dicom(deflated, window_center=500, window_width=800),
                          read_dicom(plain, window_center=500, window_width=800))


@pytest.mark.parametrize("bomb", ["huge_image", "past_the_cap"])
def test_deflate_bomb_is_refused_quickly_in_little_memory(tmp_path, bomb):
    # ~300 KB of deflate that inflates to 300 MiB: pixel data of a 50000 x 50000 image, or a valid
    # 64 x 64 image followed by 300 MiB of padding (over the 256 MiB inflation cap)
    if bomb == "huge_image":
        path, message = _deflate_bomb(tmp_path / "bomb.dcm", 50000, 50000, 300 * 2**20), "50000 x 50000 pixels"
    else:
        path = _deflate_bomb(tmp_path / "bomb.dcm", 64, 64, 300 * 2**20, trailing=True)
        message = "DICOM data inflates to more than 256 MiB; refused"
    assert path.stat().st_size < 400_000
    # a fresh process, so that the peak RSS growth is this call's alone
    code = (
        "import json, resource, sys, time\n"
        "from deepapps.apps.healthcare.dicom import read_dicom\n"
        "from deepapps.core.errors import DataError\n"
        "data = open(sys.argv[1], 'rb').read()\n"
        "before, start, error = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, time.perf_counter(), None\n"
        "try:\n    read_dicom(data, name='upload.dcm')\nexcept DataError as exc:\n    error = str(exc)\n"
        "print(json.dumps({'error': error, 'seconds': time.perf_counter() - start,\n"
        "                  'growth_mb': (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) / 1024}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True, check=True)
    out = json.loads(result.stdout.strip().splitlines()[-1])
    assert out["error"] and out["error"].startswith("upload.dcm: ") and message in out["error"]
    assert "\n" not in out["error"] and out["seconds"] < 10 and out["growth_mb"] < 300, out
    if bomb == "huge_image":  # refused at the header, long before the inflation cap
        assert out["growth_mb"] < 50, out


def test_truncated_or_garbled_deflated_data_is_one_clear_error(tmp_path):
    plain = write_dicom(tmp_path / "plain.dcm", np.arange(4096).reshape(64, 64))
    data = _resave(plain, tmp_path / "deflated.dcm", deflated=True).read_bytes()
    with pytest.raises(DataError, match=r"^cut\.dcm: corrupt DICOM file \(deflated data is truncated\)$"):
        read_dicom(data[: len(data) - 2000], name="cut.dcm")
    meta_end = 132 + 12 + struct.unpack("<I", data[140:144])[0]  # preamble, DICM, group length, the group
    garbled = data[:meta_end] + bytes(range(256)) * 4
    with pytest.raises(DataError, match=r"^bad\.dcm: corrupt DICOM file \(") as caught:
        read_dicom(garbled, name="bad.dcm")
    assert "\n" not in str(caught.value)


# --- size caps ----------------------------------------------------------------------------


@pytest.mark.parametrize("rows, columns, frames, bits, declared", [
    (30000, 30000, 1, 16, "30000 x 30000 pixels x 1 frames x 1 samples x 16 bits decodes to 1717 MiB"),
    (512, 512, 2100, 8, "512 x 512 pixels x 2100 frames x 1 samples x 8 bits decodes to 525 MiB"),
])
def test_header_declaring_too_many_pixels_is_refused_before_decoding(tmp_path, monkeypatch, rows, columns, frames,
                                                                       bits, declared):
    decoded = []
    monkeypatch.setattr(dicom, "_first_frame", lambda ds: decoded.append(ds))
    small = write_dicom(tmp_path / "small.dcm", np.zeros((4, 4)), bits=bits)
    path = _resave(small, tmp_path / "huge.dcm", Rows=rows, Columns=columns, NumberOfFrames=frames)
    for source, name in ((path, str(path)), (path.read_bytes(), "upload.dcm")):
        with pytest.raises(DataError, match=f"^{name}: DICOM image of {declared}, over the 512 MiB limit; refused$"):
            read_dicom(source, name=name if isinstance(source, bytes) else None)
    deflated = _resave(path, tmp_path / "huge_deflated.dcm", deflated=True)
    with pytest.raises(DataError, match="over the 512 MiB limit"):
        read_dicom(deflated)
    assert decoded == []


def test_file_over_the_size_cap_is_refused_unread(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "big.dcm", np.zeros((32, 32)))
    monkeypatch.setattr(dicom, "MAX_FILE_BYTES", 1000)
    size = path.stat().st_size
    with pytest.raises(DataError, match=f"^{path}: DICOM file of {size} bytes is over the 1000 bytes limit; refused$"):
        read_dicom(path)
    with pytest.raises(DataError, match="^upload.dcm: DICOM file of .* over the 1000 bytes limit"):
        read_dicom(path.read_bytes(), name="upload.dcm")


def test_any_failure_while_decoding_is_one_line(tmp_path, monkeypatch):
    path = write_dicom(tmp_path / "a.dcm", np.arange(64).reshape(8, 8))

    def boom(*args):
        raise MemoryError

    monkeypatch.setattr(dicom, "_map_values", boom)
    with pytest.raises(DataError, match=f"^{path}: cannot decode DICOM pixel data \\(MemoryError\\)$"):
        read_dicom(path)


# --- pixels: first frame, lookup table ------------------------------------------------------


def test_multi_frame_file_gives_its_first_frame(tmp_path):
    frames = np.stack([np.full((6, 5), 100 * (i + 1)) for i in range(3)])
    frames[0, 0, 0] = 0
    single = write_dicom(tmp_path / "first.dcm", frames[0])
    multi = _resave(single, tmp_path / "multi.dcm", NumberOfFrames=3, PixelData=frames.astype(np.uint16).tobytes())
    assert np.array_equal(read_dicom(multi), read_dicom(single))
    assert np.array_equal(read_dicom(_resave(multi, tmp_path / "multi_deflated.dcm", deflated=True)), read_dicom(single))


@pytest.mark.parametrize("signed, bits, slope, intercept, window, photometric", [
    (False, 16, 1.0, 0.0, None, "MONOCHROME2"),
    (False, 16, 0.37, -1024.5, (300.0, 1500.0), "MONOCHROME1"),
    (True, 16, 1.0, -1024.0, (40.0, 400.0), "MONOCHROME2"),
    (True, 16, -2.5, 10.0, None, "MONOCHROME2"),  # a negative slope flips the min..max window
    (False, 8, 3.0, 7.0, None, "MONOCHROME1"),
])
def test_lookup_table_matches_the_float64_formula(tmp_path, signed, bits, slope, intercept, window, photometric):
    rng = np.random.default_rng(1)
    dtype = {(False, 8): np.uint8, (False, 16): np.uint16, (True, 16): np.int16}[(signed, bits)]
    info = np.iinfo(dtype)
    stored = rng.integers(info.min, info.max, (40, 50), endpoint=True).astype(dtype)
    path = write_dicom(tmp_path / "a.dcm", np.zeros(stored.shape), photometric=photometric, slope=slope,
                       intercept=intercept, bits=bits)
    path = _resave(path, tmp_path / "b.dcm", PixelRepresentation=int(signed), PixelData=stored.tobytes())
    center, width = window or (None, None)
    expected = _reference_grey(stored, slope, intercept, center, width, photometric == "MONOCHROME1")
    assert np.array_equal(read_dicom(path, center, width), expected)


def test_ybr_colour_dicom_comes_out_in_its_rgb_colours(tmp_path):
    """Stored as YBR_FULL, converted to RGB once (pydicom 3 converts on its own unless asked not to)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.pixels import convert_color_space
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    rgb = np.zeros((8, 8, 3), np.uint8)
    rgb[...] = (200, 30, 90)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = SecondaryCaptureImageStorage, generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PlanarConfiguration = 8, 8, 3, 0
    ds.PhotometricInterpretation = "YBR_FULL"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = convert_color_space(rgb, "RGB", "YBR_FULL").tobytes()
    ds.save_as(tmp_path / "ybr.dcm", enforce_file_format=True)
    pixels = read_dicom(tmp_path / "ybr.dcm")
    assert pixels.shape == (8, 8, 3) and np.abs(pixels.astype(int) - rgb).max() <= 2
