"""Healthcare fit configuration: the image config plus the clinical settings (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from core.config import ImageDataConfig, ImageFitConfig


@dataclass
class MedicalDataConfig(ImageDataConfig):
    """Where the images are (MedMNIST .npz, folders or a manifest of PNG/JPEG/DICOM) and how they are split."""

    path: str = "builtin:synthetic-xray"
    """MedMNIST-style .npz ({train,val,test}_{images,labels}), an image folder (one subfolder
    per class; PNG, JPEG or DICOM), a CSV/Parquet manifest (path,label[,split][,patient_id]), or
    `builtin:synthetic-xray` (grey 28x28 images the app generates; see apps/healthcare/synthetic.py)."""
    patient_column: str = "patient_id"
    """Manifest column of patient ids; when present, splits are by patient (no patient in two splits)."""
    window_center: float | None = None
    """DICOM window centre; None takes the file's (WindowCenter), else the pixel range."""
    window_width: float | None = None
    """DICOM window width; None takes the file's (WindowWidth), else the pixel range."""


@dataclass
class ClinicalConfig:
    """Grey input, class imbalance, test-time augmentation, operating threshold, calibration."""

    channels: int = 1
    """Pixel channels of the model input: 1 = grey (repeated to the backbone's 3 inside the
    graph), 3 = RGB (dermoscopy, pathology, blood smears)."""
    imbalance: str = "loss"
    """`loss` (class-weighted cross-entropy, weights n / (K * count) on train), `sampler`
    (class-balanced sampling of the training images) or `none`."""
    tta_flip: bool = False
    """Average the logits of each image and its horizontal mirror, inside the exported graph."""
    threshold: str = "youden"
    """Operating point on the validation split for binary (and multi-label) tasks: `youden`
    (max sensitivity + specificity - 1), `sensitivity>=0.95` / `specificity>=0.9` (the best
    other side at that floor), or a fixed probability such as `0.5`."""
    positive_label: str | None = None
    """The class a threshold is set for (the disease); None takes the known MedMNIST one
    (e.g. `malignant` for BreastMNIST), else the second label."""
    calibrate: bool = True
    """Fit a temperature on the validation split and bake it into the exported model."""


@dataclass
class HealthcareFitConfig(ImageFitConfig):
    """Fine-tune a medical image classifier, calibrate it, choose its operating threshold, export ONNX."""

    data: MedicalDataConfig = field(default_factory=MedicalDataConfig)
    clinical: ClinicalConfig = field(default_factory=ClinicalConfig)
