"""Healthcare app: medical image classification (MedMNIST .npz, PNG/JPEG, DICOM) and ECG heartbeat
classification (UCR .txt, CSV/Parquet signals; `task: signal`) to a calibrated ONNX model."""

from pathlib import Path

from deepapps.core.registry import AppCommand, AppSpec

APP = AppSpec(
    name="healthcare",
    help="medical image (MedMNIST, PNG/JPEG, DICOM) and ECG signal classification: calibrated, thresholded ONNX models",
    family="image_classification",
    config_class="deepapps.apps.healthcare.config:HealthcareFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    training="deepapps.apps.healthcare.training:HealthcareTraining",
    serving="deepapps.apps.healthcare.runtime:HealthcareServing",
    commands=(
        AppCommand("explain", "attributions from a checkpoint (Captum): image maps (Grad-CAM, IG, occlusion), ECG shading",
                   "deepapps.apps.healthcare.explain:main"),
    ),
)
