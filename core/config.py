"""Run configuration as dataclasses; each field's docstring is its CLI help.

Torch-free on purpose: `deepapps <app> --help` and the serving side import this
module without paying for torch.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, is_dataclass
from typing import get_type_hints


@dataclass
class ImageDataConfig:
    """Where the images are and how they are split, augmented and batched."""

    path: str = "builtin:digits"
    """Image folder (one subfolder per class, optionally under train/val/test), a CSV/Parquet
    manifest (path,label), a MedMNIST-style .npz, or `builtin:digits` (scikit-learn's digits)."""
    image_size: int | str | None = None
    """Square input size in pixels; None takes the backbone's pretrained size; `auto` chooses from
    the data (pretrained size for photos, 2x the median side, at least 64, for small images;
    core/training/auto.py)."""
    crop_pct: float | None = None
    """Centre-crop share at evaluation (resize the shorter side to size / crop_pct, crop size);
    None takes the backbone's, 1.0 keeps the whole image."""
    val_fraction: float = 0.15
    """Share of the training data held out for validation when the data has no val split."""
    test_fraction: float = 0.15
    """Share held out for testing when the data has neither a test nor a val split."""
    split_seed: int = 0
    """Seed of the stratified split, so fit and evaluate see the same test set."""
    batch_size: int | str = 32
    """Images per training step; `auto` (image apps): from the data size (>= 25 steps per epoch,
    16 to 64) and the free memory."""
    num_workers: int | None = None
    """DataLoader workers; None picks min(8, CPU cores - 1)."""
    augment: bool = True
    """Augment training images (random resized crop, flip, rotation, colour jitter)."""
    hflip: float | str = 0.5
    """Probability of a horizontal flip when augmenting; `auto`: 0.5 for colour photos, 0 for
    digits, grey or small images and medical images (orientation can carry the label)."""
    rotation: float = 10.0
    """Maximum rotation in degrees when augmenting."""
    color_jitter: float = 0.2
    """Brightness/contrast/saturation jitter strength when augmenting (0 turns it off)."""
    scale_min: float = 0.7
    """Smallest area share kept by the random resized crop."""
    path_column: str = "path"
    """Manifest column holding image paths (relative to the manifest's folder)."""
    label_column: str = "label"
    """Manifest column holding labels; `a|b` marks several labels (multi-label)."""
    group_columns: list[str] | None = None
    """Sensitive attributes, columns of a .csv/.parquet manifest (e.g. `[sex]`): fairness by group of
    the val and test images in metrics.json and the model card (binary labels only). Reporting only:
    never a model input, and not the split grouping (healthcare's `patient_column` keeps a patient
    in one split)."""


@dataclass
class ModelConfig:
    """Backbone and head."""

    backbone: str = "tf_efficientnet_lite0"
    """timm model name (any `timm.list_models()` entry)."""
    pretrained: str | None = "auto"
    """`auto` (a local copy when one is installed, else the hub), `hub`, a .pth/.safetensors
    path, or null for random initialisation."""
    drop_rate: float = 0.2
    """Dropout before the classification head."""
    freeze_epochs: int | str = 0
    """Train only the head for this many epochs, then unfreeze the backbone at a lower rate;
    `auto` (image apps): 2 below 1,000 training images, 1 below 10,000, else 0."""
    unfreeze_lr_ratio: float = 0.1
    """Backbone learning rate at unfreezing, as a share of the head's."""
    head_init: str = "random"
    """`random`: timm's initialisation; `probe`: start the new head at a logistic regression fitted on the
    frozen pretrained features of the training images (LP-FT; core/training/probe_init.py). Measured on
    hymenoptera (auto recipe, 2 frozen epochs): probe 0.915 test accuracy against random 0.954."""


@dataclass
class OptimConfig:
    """Loss, optimizer and schedule."""

    lr: float | str = 1e-3
    """Peak learning rate of AdamW; `auto` (image apps): the backbone family's rate at batch 32
    (EfficientNet/MobileNet 2e-3, ResNet 1e-3, ViT/ConvNeXt 2e-4) x sqrt(batch / 32)."""
    weight_decay: float = 0.05
    """AdamW weight decay."""
    schedule: str = "cosine"
    """`cosine` (with linear warm-up), `onecycle`, or `constant`."""
    warmup_fraction: float = 0.05
    """Share of the steps spent warming up (cosine)."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss (single-label tasks)."""
    class_weights: str | None = None
    """null, `balanced` (inverse class frequency), or comma-separated weights per label."""


@dataclass
class TrainerConfig:
    """Lightning Trainer settings (see the Lightning docs for the meaning of each)."""

    max_epochs: int | str = 10
    """Epochs to train at most; `auto` (image apps): 12 below 1,000 training images, 5 below
    10,000, 4 below 50,000, else 3."""
    accelerator: str = "auto"
    """`auto`, `cpu`, `gpu`/`cuda` or `mps`."""
    devices: str | int = "auto"
    """Devices to use; with several, set `strategy: ddp`."""
    strategy: str = "auto"
    """`auto`, `ddp`, `ddp_spawn`, ..."""
    num_nodes: int = 1
    """Machines of a multi-node DDP run, each running `devices` processes."""
    spark_processes: int = 0
    """0 trains in this process; N trains on Spark: pyspark's TorchDistributor runs this same fit in
    N processes, DDP over them (gloo on CPU; NCCL with `accelerator: gpu`), rank 0 writes the run
    folder (core/training/spark_fit.py; needs `pip install 'deepapps[spark]'`)."""
    spark_local_mode: bool = True
    """With spark_processes: true runs the N processes on the Spark driver; false runs them on the
    executors, one barrier task each (data.path and run_dir must then be readable and writable from
    every executor: s3://, gs://, hdfs:// or a shared folder)."""
    spark_master: str | None = None
    """With spark_processes: the Spark master; null takes the active session's (spark-submit,
    a notebook), else local[N]."""
    precision: str = "auto"
    """`auto` (bf16-mixed on a GPU that supports it, else 32-true) or any Lightning precision."""
    patience: int = 5
    """Early stopping: epochs without improvement of the monitored metric."""
    monitor: str = "val/macro_f1"
    """Metric used for the best checkpoint and early stopping; `auto` (image apps): healthcare
    val/auroc for binary and multi-label sets, val/accuracy for more classes; vision val/macro_f1."""
    monitor_mode: str = "max"
    """`max` or `min`: whether a larger monitored metric is better."""
    limit_train_batches: float | int = 1.0
    """Share (float) or number (int) of training batches per epoch."""
    limit_val_batches: float | int = 1.0
    """Share (float) or number (int) of validation batches per epoch."""
    gradient_clip_val: float | None = 1.0
    """Clip the gradient norm to this value (null turns clipping off)."""
    accumulate_grad_batches: int = 1
    """Batches of gradients accumulated per optimizer step."""
    log_every_n_steps: int = 10
    """How often the training loss is logged."""


@dataclass
class PrivacyConfig:
    """Differentially private training: DP-SGD through Opacus (Poisson sampling, per-sample
    gradient clipping, Gaussian noise; core/training/privacy.py)."""

    epsilon: float | None = None
    """Privacy budget epsilon of the whole training (the noise is calibrated to spend it over
    max_epochs); null trains without differential privacy."""
    delta: float | None = None
    """delta of (epsilon, delta)-DP, below 1/n for n training rows; null takes 0.1/n."""
    max_grad_norm: float = 1.0
    """Per-sample gradient clipping norm."""
    fine_tune: str = "auto"
    """What trains privately: `head` (the rest frozen, in eval mode), `all`, or `auto` (the head
    for a pretrained backbone, everything for a random initialisation)."""


@dataclass
class ImageFitConfig:
    """Fine-tune an image classifier, export it to ONNX and evaluate the exported file."""

    data: ImageDataConfig = field(default_factory=ImageDataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    run_dir: str | None = None
    """Output folder; None makes runs/<app>/<timestamp>."""
    resume: bool = False
    """Continue the run in run_dir from checkpoints/last.ckpt."""
    seed: int = 42
    """Global seed (weights init, augmentation, data order)."""
    export_fp16: bool = False
    """Also write model.fp16.onnx for GPU serving."""
    export_int8: bool = False
    """Also write model.int8.onnx (static int8: QDQ, calibrated on validation images), scored against model.onnx on the validation
    split; refused (not written) when it loses more than int8_tolerance."""
    int8_tolerance: float = 1.0
    """Largest loss of the monitored metric (trainer.monitor) the int8 copy may show on the
    validation split, in points (hundredths: 1.0 = 0.01)."""


def from_dict(cls: type, values: dict):
    """Build dataclass `cls` from a (nested) dict, as parsed by jsonargparse."""
    hints, kwargs = get_type_hints(cls), {}
    for f in fields(cls):
        if f.name not in values:
            continue
        value, kind = values[f.name], hints[f.name]
        kwargs[f.name] = from_dict(kind, value) if is_dataclass(kind) and isinstance(value, dict) else value
    return cls(**kwargs)


# Ranges every app's config keeps, by field name (fields an app does not have are skipped).
AT_LEAST = {
    "batch_size": 1, "max_epochs": 1, "accumulate_grad_batches": 1, "log_every_n_steps": 1, "patience": 0,
    "num_workers": 0, "freeze_epochs": 0, "max_length": 2, "image_size": 8, "look_back": 2, "horizon": 1,
    "max_train_rows": 1, "synth_rows": 10, "gan_steps": 1, "width": 1, "hidden_size": 1, "top_k": 1,
    "num_nodes": 1, "spark_processes": 0,
}
POSITIVE = ("lr", "epsilon", "delta", "max_grad_norm")
SHARES = ("val_fraction", "test_fraction", "warmup_fraction", "drop_rate", "dropout", "label_smoothing")


def check_ranges(cfg, prefix: str = "--") -> None:
    """A one-line ConfigError for a number out of its range (`--data.batch_size -1`), before
    anything is read or written."""
    from deepapps.core.errors import ConfigError

    for f in fields(cfg):
        value, name = getattr(cfg, f.name), prefix + f.name
        if is_dataclass(value):
            check_ranges(value, name + ".")
        elif (isinstance(value, str) and value != "auto" and f.name != "devices"  # devices also takes "0,1"
              and _numeric_or_auto(type(cfg), f.name)):
            raise ConfigError(f"{name} {value}: expected a number or `auto`")
        elif isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        elif f.name in AT_LEAST and value < AT_LEAST[f.name]:
            raise ConfigError(f"{name} {value}: must be at least {AT_LEAST[f.name]}")
        elif f.name in POSITIVE and not value > 0:
            raise ConfigError(f"{name} {value}: must be positive")
        elif f.name in SHARES and not 0 <= value < 1:
            raise ConfigError(f"{name} {value}: must be in [0, 1)")


def _numeric_or_auto(cls: type, name: str) -> bool:
    """Whether field `name` of dataclass `cls` takes a number or the word `auto` (`int | str`,
    `float | str`), so any other text in it is a typo."""
    import typing

    hint = typing.get_type_hints(cls).get(name)
    args = set(typing.get_args(hint)) or {hint}
    return str in args and bool(args & {int, float})

