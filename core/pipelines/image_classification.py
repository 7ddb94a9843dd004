"""Image classification family: timm backbone + ImageDataModule (used by vision, healthcare)."""

from __future__ import annotations

from collections.abc import Callable

import torch

from deepapps.core.config import ImageFitConfig
from deepapps.core.data.images import ImageDataModule
from deepapps.core.models.backbones import create_timm_model, data_config
from deepapps.core.models.image_classifier import ImageClassifier
from deepapps.core.pipelines import Built
from deepapps.core.runtime.images import ImageSpec

INPUT_NAME = "pixels"


def build(
    cfg: ImageFitConfig, pretrained: str | None, labels: list[str] | None = None,
    multilabel: bool = False, with_data: bool = True, channels: int = 3,
    datamodule_class: Callable = ImageDataModule,
) -> Built:
    """Backbone first (its pretrained cfg fixes size and normalisation), then data, then head.

    Args:
        cfg: the run config.
        pretrained: weights source for the backbone (see core.models.backbones).
        labels, multilabel: known label set (from a checkpoint); None reads it from the data.
        with_data: index the dataset (False for export from a checkpoint without data).
        channels: pixel channels of the graph input (1 for grey images).
        datamodule_class: (cfg.data, spec) -> datamodule; an app's subclass of ImageDataModule.
    """
    backbone, weights = create_timm_model(cfg.model.backbone, 0, pretrained)
    timm_cfg = data_config(backbone)
    spec = ImageSpec(
        size=cfg.data.image_size or timm_cfg["input_size"][-1],
        crop_pct=cfg.data.crop_pct or timm_cfg.get("crop_pct", 0.875),
        interpolation=timm_cfg.get("interpolation", "bicubic") or "bicubic",
        channels=channels,
    )
    datamodule = datamodule_class(cfg.data, spec) if with_data else None
    if datamodule is not None and labels is None:
        labels, multilabel = datamodule.labels, datamodule.multilabel
    net = ImageClassifier(
        backbone, len(labels), mean=timm_cfg["mean"], std=timm_cfg["std"],
        in_channels=channels, drop_rate=cfg.model.drop_rate,
    )
    preprocess = spec.to_meta() | {"mean": list(timm_cfg["mean"]), "std": list(timm_cfg["std"])}
    return Built(
        net=net, labels=labels, multilabel=multilabel, datamodule=datamodule,
        inputs=[{"name": INPUT_NAME, "dtype": "uint8", "shape": ["batch", spec.size, spec.size, channels], "layout": "NHWC"}],
        preprocess=preprocess, weights=weights,
        dummy_inputs=lambda n: (torch.randint(0, 256, (n, spec.size, spec.size, channels), dtype=torch.uint8),),
    )
