"""Healthcare fit configuration: the image config plus the clinical settings, and the signal
(ECG) settings of `task: signal` (torch-free)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepapps.core.config import ImageDataConfig, ImageFitConfig


@dataclass
class MedicalDataConfig(ImageDataConfig):
    """Where the images are (MedMNIST .npz, folders or a manifest of PNG/JPEG/DICOM) and how they are split."""

    path: str = "builtin:synthetic-xray"
    """MedMNIST-style .npz ({train,val,test}_{images,labels}), an image folder (one subfolder
    per class; PNG, JPEG or DICOM), a CSV/Parquet manifest (path,label[,split][,patient_id]), or
    `builtin:synthetic-xray` (grey 28x28 images the app generates; see apps/healthcare/synthetic.py).
    With `task: signal`: a UCR .txt (label first, then samples), a CSV/Parquet of one signal per row
    (`label_column` + numeric sample columns) or `builtin:synthetic-ecg`."""
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
class SignalConfig:
    """ECG / 1-D signal task (`task: signal`): nominal rate, front end in the graph, network size."""

    sample_rate: float = 250.0
    """Nominal sampling rate in Hz. UCR beats have none (they were resampled to a fixed length);
    250 Hz is the rate of ECG5000's source record. It sets the filter and mel frequencies."""
    length: int | None = None
    """Samples per signal; None takes the data's. Predict reports other lengths as errors."""
    highpass_hz: float | None = None
    """High-pass cut-off of the FIR filter in the graph (baseline wander); None: no high-pass."""
    lowpass_hz: float | None = None
    """Low-pass cut-off of the FIR filter in the graph (noise); None: no low-pass."""
    filter_taps: int = 31
    """Taps of the FIR filter (odd; Hamming-windowed sinc)."""
    resample_to: int | None = None
    """Resample every signal to this many samples inside the graph (torchaudio sinc); None: keep."""
    normalize: bool = True
    """Z-normalise each signal inside the graph (UCR beats already are)."""
    n_fft: int = 32
    """Spectrogram FFT size (timm backbones only: the 2-D CNN reads the log-spectrogram)."""
    hop_length: int = 2
    """Spectrogram hop in samples."""
    n_mels: int | None = None
    """Mel bands of the spectrogram (torchaudio's filter bank); None: the linear-frequency bins."""
    image_size: int = 64
    """Side of the square the log-spectrogram is resized to for a 2-D backbone."""
    width: int = 64
    """Base channels of resnet1d (w, 2w, 2w) and fcn (2w, 4w, 2w)."""
    augment_scale: float = 0.1
    """Training augmentation (with data.augment): random amplitude scale within 1 +- this."""
    augment_noise: float = 0.05
    """Training augmentation: Gaussian noise of this standard deviation (signal units)."""
    augment_shift: int = 4
    """Training augmentation: random time shift of up to this many samples (edge values repeated)."""


@dataclass
class HealthcareFitConfig(ImageFitConfig):
    """Fine-tune a medical image (or ECG signal) classifier, calibrate it, choose its operating threshold, export ONNX."""

    task: str = "auto"
    """`image` (MedMNIST/PNG/DICOM) or `signal` (1-D ECG beats: UCR .txt, CSV/Parquet one signal per
    row; `model.backbone` is then `resnet1d`, `fcn` or a timm name for a 2-D CNN on the spectrogram);
    `auto`: from the data (a UCR .txt or a table of numeric samples is a signal set, folders,
    manifests and .npz are images). configs/ecg.yaml holds the settings made for ECG (resnet1d, ...)."""
    data: MedicalDataConfig = field(default_factory=MedicalDataConfig)
    clinical: ClinicalConfig = field(default_factory=ClinicalConfig)
    signal: SignalConfig = field(default_factory=SignalConfig)
