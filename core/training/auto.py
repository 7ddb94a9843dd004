"""`auto` fit settings of the image family (vision, healthcare), chosen from the data at build time.

A config field left at `auto` is resolved here, in one place, from a summary of the data in front
of the fit (`ImageDataSummary`: training images, classes, median native size, grey or colour,
photos or medical) and the backbone (its pretrained input size and family). Each choice comes
with its reason; `announce` prints one line per field, `core.training.fit.train` writes the
resolved values into config.yaml and the checkpoint (so `fit --config run/config.yaml`
reproduces the run) and the model card lists them ("Auto choices").

The rules (numbers asserted by tests/core/test_auto.py):

- `data.image_size`: min(pretrained, max(64, the smallest multiple of 32 >= 2 x the median
  native shorter side)). Photos (median side >= 112 px) get the backbone's pretrained size (224
  for EfficientNet-Lite0): ImageNet features are sharpest at the size they were learnt at, and a
  photo holds that much detail. Small images are upsampled 2x, at least to 64 px (the receptive
  fields of an ImageNet CNN need some room: 8x8 digits -> 64, 28 px MedMNIST -> 64, 64 px -> 128),
  never beyond the pretrained size; a larger input only adds interpolated pixels and compute
  (healthcare README: BreastMNIST 64 px beat 28 and 128).
- `data.hflip`: 0.5 for photos (colour images of >= 64 px in the vision app: a mirrored photo of
  an ant is an ant), 0 for grey or small images (digits and letters change meaning when mirrored)
  and for every medical image (laterality: the heart is on the left of a chest X-ray). It is the
  user's call to turn it on where orientation does not matter (dermoscopy, pathology).
- `trainer.max_epochs` / `model.freeze_epochs` from the training images n: n < 1,000: 12 epochs,
  the first 2 with the backbone frozen (a small set over-fits a pretrained backbone that moves
  before its new head has settled; after unfreezing the backbone learns at
  `model.unfreeze_lr_ratio` x the head's rate); n < 10,000: 5 and 1 (the embedded
  digits demo: 5 epochs, under a minute); n < 50,000: 4 and 0; larger: 3 and 0 (many steps per
  epoch). Freezing is for photos only: small, grey or medical images never freeze (on the digits
  one frozen epoch cost 17 points of test accuracy: 0.814 against 0.989). No freezing without
  pretrained weights; freeze_epochs stays below max_epochs.
- `data.batch_size`: the largest of 16, 32, 64 that leaves >= 25 optimizer steps per epoch
  (16 below 800 images), then halved until an estimated 2 KiB of training memory per input pixel
  fits a quarter of the free memory (CUDA's free memory on a GPU, else the available RAM).
- `optim.lr`: the backbone family's AdamW fine-tuning rate at batch 32 (BatchNorm mobile CNNs
  such as EfficientNet/MobileNet 2e-3; ResNet-style CNNs 1e-3; ViT/Swin/ConvNeXt 2e-4), scaled
  by sqrt(batch / 32) (the square-root rule for adaptive optimizers).
- healthcare `trainer.monitor`: `val/auroc` for binary and multi-label sets (threshold-free,
  robust to imbalance; the operating threshold is chosen after training), `val/accuracy` for
  more than two classes (the MedMNIST protocol's ACC; an AUROC-picked epoch can sit below the
  majority rate). healthcare `clinical.imbalance`: `loss` (class-weighted cross-entropy) for
  binary and multi-label sets, `none` (plain cross-entropy, as the MedMNIST baselines) for more
  than two classes: inverse-frequency weights on an imbalanced ordinal grading push the
  predictions to the rare grades and the accuracy below the majority rate. Multi-class sets get
  no operating threshold either way (argmax).
"""

from __future__ import annotations

import logging
import math
import os
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

AUTO = "auto"
log = logging.getLogger(__name__)

# backbone name prefix -> AdamW fine-tuning learning rate at batch 32
FAMILY_LR: tuple[tuple[tuple[str, ...], float, str], ...] = (
    (("vit", "deit", "beit", "eva", "swin", "convnext", "maxvit", "coat", "levit", "xcit", "cait", "pvt",
      "efficientvit", "mobilevit", "fastvit", "edgenext", "hiera"), 2e-4, "transformer / LayerNorm family"),
    (("tf_efficientnet", "efficientnet", "mobilenet", "tf_mobilenet", "mnasnet", "lcnet", "ghostnet",
      "fbnet", "rexnet", "tinynet", "hardcorenas", "mixnet", "tf_mixnet", "regnet", "semnasnet"), 2e-3,
     "BatchNorm mobile CNN family"),
    (("resnet", "resnext", "seresnet", "seresnext", "wide_resnet", "densenet", "res2net", "resnest", "dla",
      "dpn", "inception", "xception", "vgg", "test_"), 1e-3, "ResNet-style CNN family"),
)
DEFAULT_LR = 1e-3
BYTES_PER_PIXEL = 2048  # training memory per input pixel per image (EfficientNet-Lite0 fp32: ~100 MB at 224 px)


@dataclass(frozen=True)
class ImageDataSummary:
    """What the `auto` rules read from an image dataset.

    Attributes:
        n_train: images in the training split.
        n_classes: classes (labels for multi-label).
        problem: `binary`, `multiclass` or `multilabel`.
        median_side: median shorter side of (a sample of) the training images, in pixels.
        grey: the sampled images are grey (every channel equal).
        medical: medical images (the healthcare app): orientation is taken to carry meaning.
    """

    n_train: int
    n_classes: int
    problem: str
    median_side: int
    grey: bool
    medical: bool = False

    @property
    def photos(self) -> bool:
        """Colour images of 64 px or more outside the medical app."""
        return not self.grey and not self.medical and self.median_side >= 64

    def describe(self) -> str:
        kind = "medical images" if self.medical else "photos" if self.photos else "small or grey images"
        return (f"{self.n_train} training images, {self.n_classes} classes ({self.problem}), median shorter side "
                f"{self.median_side} px, {'grey' if self.grey else 'colour'}: {kind}")


@dataclass(frozen=True)
class Choice:
    """One resolved `auto` field: its dotted name, the value chosen and why."""

    field: str
    value: Any
    reason: str

    def to_dict(self) -> dict:
        return {"field": self.field, "value": self.value, "reason": self.reason}


def is_auto(value: Any) -> bool:
    return isinstance(value, str) and value.strip().lower() == AUTO


def summarize_images(source, problem: str, medical: bool = False, sample: int = 64) -> ImageDataSummary:
    """An ImageDataSummary of `source` (core.data.image_sources.ImageSource) from up to `sample`
    training images spread evenly over the split."""
    train = np.asarray(source.splits["train"])
    picked = train[np.linspace(0, len(train) - 1, min(sample, len(train))).round().astype(int)] if len(train) else []
    sides, grey = [], True
    for i in picked:
        img = source.load(int(i))
        sides.append(min(img.size))
        if grey and img.mode not in ("L", "1", "I", "I;16", "F", "LA"):
            pixels = np.asarray(img.convert("RGB").resize((32, 32)), dtype=np.int16)
            grey = int(np.abs(pixels - pixels[..., :1]).max()) <= 2
    return ImageDataSummary(
        n_train=len(train), n_classes=len(source.labels), problem=problem,
        median_side=int(np.median(sides)) if sides else 0, grey=grey, medical=medical,
    )


def choose_image_size(summary: ImageDataSummary, pretrained_size: int) -> Choice:
    upsampled = max(64, 32 * math.ceil(2 * summary.median_side / 32))
    size = min(pretrained_size, upsampled)
    if size == pretrained_size:
        why = f"the backbone's pretrained size (median image side {summary.median_side} px)"
    else:
        why = (f"median image side {summary.median_side} px: 2x upsampled to a multiple of 32, at least 64, "
               f"below the pretrained {pretrained_size}")
    return Choice("data.image_size", size, why)


def choose_hflip(summary: ImageDataSummary) -> Choice:
    if summary.photos:
        return Choice("data.hflip", 0.5, "colour photos: a mirrored photo shows the same class")
    if summary.medical:
        return Choice("data.hflip", 0.0, "medical images: orientation (laterality) can carry the label; "
                                         "set 0.5 where it does not")
    return Choice("data.hflip", 0.0, "grey or small images (digits, letters): mirroring can change the class")


def schedule_tier(n_train: int) -> tuple[int, int]:
    """(max_epochs, freeze_epochs) for a training split of `n_train` images."""
    if n_train < 1_000:
        return 12, 2
    if n_train < 10_000:
        return 5, 1
    if n_train < 50_000:
        return 4, 0
    return 3, 0


def choose_max_epochs(summary: ImageDataSummary) -> Choice:
    epochs, _ = schedule_tier(summary.n_train)
    return Choice("trainer.max_epochs", epochs, f"{summary.n_train} training images "
                                                "(<1k: 12, <10k: 5, <50k: 4, else 3)")


def choose_freeze_epochs(summary: ImageDataSummary, max_epochs: int, pretrained: bool) -> Choice:
    if not pretrained:
        return Choice("model.freeze_epochs", 0, "no pretrained weights: nothing to keep frozen")
    if not summary.photos:  # measured on the digits: one frozen epoch cost 17 points of test accuracy
        return Choice("model.freeze_epochs", 0, "small, grey or medical images: ImageNet features must adapt "
                                                "from the first step; a head on frozen features learns little")
    _, freeze = schedule_tier(summary.n_train)
    freeze = max(0, min(freeze, max_epochs - 1))
    why = (f"{summary.n_train} training images: the new head trains alone first (<1k: 2, <10k: 1, else 0)"
           if freeze else f"{summary.n_train} training images: enough data to train the backbone from the start")
    return Choice("model.freeze_epochs", freeze, why)


def free_memory_bytes(accelerator: str = "auto") -> int | None:
    """Free CUDA memory when training on a GPU, else the available RAM; None if unknown."""
    try:
        import torch

        if accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available():
            return int(torch.cuda.mem_get_info()[0])
    except Exception as exc:  # noqa: BLE001 - a broken CUDA setup falls back to RAM
        log.warning("CUDA memory unknown (%s); the batch size is sized to the RAM", type(exc).__name__)
    try:
        return int(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))
    except (ValueError, OSError, AttributeError):
        return None


def choose_batch_size(summary: ImageDataSummary, image_size: int, memory: int | None) -> Choice:
    size = 16
    for candidate in (32, 64):
        if summary.n_train / candidate >= 25:
            size = candidate
    why = f"{summary.n_train} training images: >= 25 steps per epoch (16 to 64)"
    if memory:
        fits = memory / 4 / (image_size * image_size * BYTES_PER_PIXEL)
        while size > 1 and size > fits:
            size //= 2
        if size < 16 and fits < 16:
            why += f"; halved to fit a quarter of {memory / 2**30:.1f} GiB free at {image_size} px"
    return Choice("data.batch_size", int(size), why)


def backbone_lr(backbone: str) -> tuple[float, str]:
    """(AdamW rate at batch 32, family name) for a timm backbone name."""
    name = backbone.lower()
    for prefixes, lr, family in FAMILY_LR:
        if name.startswith(prefixes):
            return lr, family
    return DEFAULT_LR, "other family"


def choose_lr(backbone: str, batch_size: int) -> Choice:
    base, family = backbone_lr(backbone)
    lr = float(f"{base * math.sqrt(batch_size / 32):.3g}")
    return Choice("optim.lr", lr, f"{backbone}: {family}, {base:g} at batch 32, x sqrt({batch_size}/32)")


def choose_monitor(summary: ImageDataSummary) -> Choice:
    if summary.problem == "multiclass":
        return Choice("trainer.monitor", "val/accuracy",
                      f"{summary.n_classes} classes: accuracy (the MedMNIST ACC); no operating threshold (argmax)")
    return Choice("trainer.monitor", "val/auroc", f"{summary.problem}: AUROC (threshold-free; the operating "
                                                  "threshold is chosen on validation after training)")


def choose_imbalance(summary: ImageDataSummary) -> Choice:
    if summary.problem == "multiclass":
        return Choice("clinical.imbalance", "none", f"{summary.n_classes} classes: plain cross-entropy; inverse-"
                                                    "frequency weights pull an imbalanced grading below the majority rate")
    return Choice("clinical.imbalance", "loss", f"{summary.problem}: class-weighted cross-entropy (n / (K x count))")


def resolve_image_auto(cfg, summary: ImageDataSummary, pretrained_size: int, pretrained: bool,
                       memory: int | None = None) -> list[Choice]:
    """Resolve every `auto` field of an image fit config in place; returns the choices made.

    Args:
        cfg: an ImageFitConfig (or HealthcareFitConfig: `trainer.monitor`, `clinical.imbalance`).
        summary: the data's summary (`summarize_images`).
        pretrained_size: the backbone's pretrained input side (timm pretrained_cfg input_size).
        pretrained: whether pretrained weights are loaded (freezing needs them).
        memory: free bytes for the batch-size cap; None: measured (`free_memory_bytes`).
    """
    data, trainer, model, optim = cfg.data, cfg.trainer, cfg.model, cfg.optim
    choices: list[Choice] = []

    def take(choice: Choice) -> Any:
        section, name = choice.field.split(".")
        setattr(getattr(cfg, section), name, choice.value)
        choices.append(choice)
        return choice.value

    if is_auto(data.image_size):
        take(choose_image_size(summary, pretrained_size))
    if is_auto(data.hflip):
        take(choose_hflip(summary))
    if is_auto(trainer.max_epochs):
        take(choose_max_epochs(summary))
    if is_auto(model.freeze_epochs):
        take(choose_freeze_epochs(summary, int(trainer.max_epochs), pretrained))
    if is_auto(data.batch_size):
        size = int(data.image_size or pretrained_size)
        take(choose_batch_size(summary, size, memory if memory is not None else free_memory_bytes(trainer.accelerator)))
    if is_auto(optim.lr):
        take(choose_lr(model.backbone, int(data.batch_size)))
    if is_auto(trainer.monitor):
        take(choose_monitor(summary) if summary.medical else
             Choice("trainer.monitor", "val/macro_f1", "macro-F1: every class counts alike"))
    clinical = getattr(cfg, "clinical", None)
    if clinical is not None and is_auto(clinical.imbalance):
        take(choose_imbalance(summary))
    return choices


def announce(choices: Iterable[Choice], summary: ImageDataSummary | None = None) -> None:
    """One stderr line per choice (`deepapps: auto: --data.image_size 224 (reason)`)."""
    choices = list(choices)
    if choices and summary is not None:
        print(f"deepapps: auto: data: {summary.describe()}", file=sys.stderr)
    for c in choices:
        print(f"deepapps: auto: --{c.field} {c.value} ({c.reason})", file=sys.stderr)


def apply_to_config(config: dict, choices: Iterable[dict]) -> dict:
    """Write resolved values into the nested config dict (in place); returns it."""
    for c in choices:
        *sections, name = c["field"].split(".")
        node = config
        for section in sections:
            node = node.setdefault(section, {})
        node[name] = c["value"]
    return config


def apply_to_yaml(config_yaml: str, choices: Iterable[dict]) -> str:
    """config.yaml's text with the resolved values in place of `auto`."""
    import yaml

    choices = list(choices)
    if not choices:
        return config_yaml
    values = yaml.safe_load(config_yaml) or {}
    return yaml.safe_dump(apply_to_config(values, choices), sort_keys=False)


def has_auto(cfg) -> bool:
    """Whether any field of `cfg` (nested dataclasses) is `auto` among the fields resolved here."""
    fields = [cfg.data.image_size, cfg.data.hflip, cfg.data.batch_size, cfg.trainer.max_epochs,
              cfg.model.freeze_epochs, cfg.optim.lr, cfg.trainer.monitor]
    clinical = getattr(cfg, "clinical", None)
    return any(is_auto(v) for v in fields) or (clinical is not None and is_auto(clinical.imbalance))


NUMERIC_AUTO_FIELDS = ("data.image_size", "data.hflip", "data.batch_size", "trainer.max_epochs",
                       "model.freeze_epochs", "optim.lr")


def check_resolved(cfg) -> None:
    """A one-line ConfigError for a numeric field still holding a string (`auto` where it cannot be
    resolved, e.g. without data, or a typo such as `--data.batch_size big`)."""
    from deepapps.core.errors import ConfigError

    for dotted in NUMERIC_AUTO_FIELDS:
        section, name = dotted.split(".")
        value = getattr(getattr(cfg, section, None), name, None)
        if isinstance(value, str):
            hint = "`auto` needs the data to choose from" if is_auto(value) else "expected a number or `auto`"
            raise ConfigError(f"--{dotted} {value}: {hint}")
    head_init = getattr(getattr(cfg, "model", None), "head_init", "random")
    if head_init not in ("probe", "random"):
        raise ConfigError(f"--model.head_init {head_init}: choose random or probe")


def resolve_before_search(app, cfg, config: dict) -> list[dict]:
    """`deepapps <app> tune`: resolve the `auto` fields once, before the first trial (the
    objective, its direction and the pruner read `trainer.*`), into `cfg` and `config` alike, so
    every trial starts from the same recipe and best.yaml holds numbers. Returns the choices."""
    if getattr(app, "family", None) != "image_classification" or not has_auto(cfg):
        return []
    built = app.load_training().build(cfg)
    apply_to_config(config, built.auto_choices)
    return built.auto_choices
