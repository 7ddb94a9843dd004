"""Image classification family (vision, healthcare): timm backbone + ImageDataModule.

The graph takes uint8 NHWC pixels at the model's size; scaling, normalisation and the layout
change happen inside it (core.training.image_model).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from deepapps.core.config import ImageFitConfig
from deepapps.core.contract import PROBABILITIES, Classification, TensorSpec, problem_type
from deepapps.core.runtime.images import ImageSpec
from deepapps.core.training.auto import announce, check_resolved, has_auto, resolve_image_auto, summarize_images
from deepapps.core.training.backbones import create_timm_model, data_config
from deepapps.core.training.image_data import ImageDataModule
from deepapps.core.training.image_model import ImageClassifier
from deepapps.core.training.interface import Built, FitRun, Saved, Training
from deepapps.core.training.quantize import STATIC, Int8Method

FAMILY = "image_classification"
INPUT_NAME = "pixels"


def build_image_classifier(
    cfg: ImageFitConfig, saved: Saved | None = None, with_data: bool = True, channels: int = 3,
    datamodule_class: Callable = ImageDataModule, medical: bool = False,
) -> Built:
    """Backbone first (its pretrained cfg fixes size and normalisation), then data, then head.

    Args:
        cfg: the run config.
        saved: a checkpoint's state (labels from it, no pretrained weights); None: a new fit.
        with_data: index the dataset (False for export from a checkpoint without data).
        channels: pixel channels of the graph input (1 for grey images).
        datamodule_class: (cfg.data, spec) -> datamodule; an app's subclass of ImageDataModule.
        medical: medical images (healthcare): what `auto` fields read (no flips, its monitor).
    """
    backbone, weights = create_timm_model(cfg.model.backbone, 0, None if saved else cfg.model.pretrained)
    timm_cfg = data_config(backbone)
    pretrained_size = int(timm_cfg["input_size"][-1])
    datamodule = None
    if with_data and has_auto(cfg):  # index the data first: the `auto` fields are chosen from it
        datamodule = datamodule_class(cfg.data, None)
        multilabel = datamodule.multilabel
        summary = summarize_images(datamodule.source, problem_type(len(datamodule.labels), multilabel), medical)
        choices = resolve_image_auto(cfg, summary, pretrained_size, pretrained=not weights.startswith("none"))
        announce(choices, summary)
    else:
        choices = []
    check_resolved(cfg)
    spec = ImageSpec(
        size=cfg.data.image_size or pretrained_size,
        crop_pct=cfg.data.crop_pct or timm_cfg.get("crop_pct", 0.875),
        interpolation=timm_cfg.get("interpolation", "bicubic") or "bicubic",
        channels=channels,
    )
    if datamodule is not None:
        datamodule.spec = spec
    elif with_data:
        datamodule = datamodule_class(cfg.data, spec)
    if saved is not None:
        kind = saved.kind
    else:
        kind = Classification(datamodule.labels, problem_type(len(datamodule.labels), datamodule.multilabel))
    net = ImageClassifier(
        backbone, len(kind.labels), mean=timm_cfg["mean"], std=timm_cfg["std"],
        in_channels=channels, drop_rate=cfg.model.drop_rate,
    )
    preprocess = spec.to_meta() | {"mean": list(timm_cfg["mean"]), "std": list(timm_cfg["std"])}
    return Built(
        net=net, datamodule=datamodule, kind=kind,
        inputs=[TensorSpec(INPUT_NAME, "uint8", ["batch", spec.size, spec.size, channels], "NHWC")],
        outputs=[PROBABILITIES], preprocess=preprocess, weights=saved.weights if saved else weights, family=FAMILY,
        dummy_inputs=lambda n: (torch.randint(0, 256, (n, spec.size, spec.size, channels), dtype=torch.uint8),),
        backbone=cfg.model.backbone, write_samples=datamodule.write_samples if datamodule is not None else None,
        auto_choices=[c.to_dict() for c in choices],
    )


IMAGE_INT8 = Int8Method(STATIC, "conv image network: static QDQ int8 (per-channel weights) calibrated on "
                                "validation images", calibration="percentile")
"""The image family's int8 (vision, healthcare images): conv layers run as int8 kernels. Percentile
calibration measured best (benchmarks/vision_int8.py, EfficientNet-Lite0 fine-tuned on hymenoptera,
153 test images): test accuracy 0.8954 int8 vs 0.8889 fp32, against 0.8889 for entropy and minmax,
and the largest batch-32 speed-up of the three (1.31x vs 1.16x / 1.05x)."""


class ImageTraining(Training):
    """Vision: the image family with every default (softmax head, no post-fit state)."""

    def build(self, cfg: ImageFitConfig, saved: Saved | None = None, with_data: bool = True) -> Built:
        return build_image_classifier(cfg, saved, with_data)

    def int8_method(self, cfg: ImageFitConfig) -> Int8Method:
        return IMAGE_INT8

    def artifacts(self, run: FitRun) -> dict:
        """With data.group_columns: fairness by group of the ONNX model on val and test."""
        from deepapps.core.fairness import run_fairness

        return run_fairness(run)

    def report(self, run: FitRun) -> None:
        """The shared run report; its fairness section says which manifest columns are which."""
        from deepapps.core.report.fairness import image_attributes_note
        from deepapps.core.report.run_report import write_run_report

        write_run_report(run, fairness_note=image_attributes_note(run.cfg.data))

