"""Healthcare app: medical image classification (MedMNIST .npz, PNG/JPEG, DICOM) and ECG heartbeat
classification (UCR .txt, CSV/Parquet signals; `task: signal`) to a calibrated ONNX model."""

from pathlib import Path

from core.registry import AppCommand, AppSpec

APP = AppSpec(
    name="healthcare",
    help="medical image (MedMNIST, PNG/JPEG, DICOM) and ECG signal classification: calibrated, thresholded ONNX models",
    task="image_classification",
    config_class="apps.healthcare.config:HealthcareFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    pipeline="apps.healthcare.pipeline",
    runtime="apps.healthcare.runtime",
    commands=(
        AppCommand("explain", "Grad-CAM heatmaps over input images from a checkpoint (torch)",
                   "apps.healthcare.explain:main"),
    ),
)
