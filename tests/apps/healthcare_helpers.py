"""Synthetic medical test data: MedMNIST-style .npz files and DICOM files written with pydicom."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np

from deepapps.apps.healthcare.synthetic import synthetic_xray_arrays

SMALL = {"train": 160, "val": 48, "test": 48}


def run_cli(*args: str) -> subprocess.CompletedProcess:
    """`python -m deepapps.apps.healthcare ARGS` in a fresh process (exit code and stderr as users see them)."""
    return subprocess.run([sys.executable, "-m", "deepapps.apps.healthcare", *args], capture_output=True, text=True)


def write_npz(path: Path, size: int = 28, sizes: dict | None = None, drop: tuple[str, ...] = (), **replace) -> Path:
    """A MedMNIST-layout .npz of synthetic chest X-rays; `drop` removes arrays, `replace` swaps them."""
    arrays = synthetic_xray_arrays(size, seed=1, sizes=sizes or SMALL)
    arrays.pop("label_names")  # like the official files: names come from the file name
    arrays |= replace
    np.savez(path, **{k: v for k, v in arrays.items() if k not in drop})
    return path


def write_dicom(path: Path, pixels: np.ndarray, photometric: str = "MONOCHROME2", slope: float = 1.0,
                intercept: float = 0.0, center: float | None = None, width: float | None = None,
                with_pixels: bool = True, bits: int = 16, patient: str = "p1") -> Path:
    """A minimal valid DICOM file (Secondary Capture, explicit VR little endian)."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.PatientID = "CR", patient
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    if center is not None:
        ds.WindowCenter, ds.WindowWidth = center, width
    if with_pixels:
        ds.PixelData = pixels.astype(np.uint16 if bits == 16 else np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
