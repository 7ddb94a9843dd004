"""Image classifier whose graph takes raw pixels: uint8 NHWC in, logits out."""

from __future__ import annotations

import torch
from torch import nn


class ImageClassifier(nn.Module):
    """timm backbone + dropout/linear head, with pixel normalisation inside the graph.

    Args:
        backbone: timm model built with num_classes=0, returning pooled features (B, F).
        num_outputs: classes (or labels, for multi-label).
        mean, std: per-channel normalisation in [0, 1] units (the backbone's pretrained cfg).
        in_channels: channels of the pixel input; 1 is repeated to the backbone's 3.
        drop_rate: dropout before the linear head.
    """

    def __init__(
        self, backbone: nn.Module, num_outputs: int, mean: tuple[float, ...],
        std: tuple[float, ...], in_channels: int = 3, drop_rate: float = 0.0,
    ):
        super().__init__()
        self.backbone = backbone
        self.head = nn.Sequential(nn.Dropout(drop_rate), nn.Linear(backbone.num_features, num_outputs))
        self.in_channels = in_channels
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1) * 255.0)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1) * 255.0)

    def features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Pooled backbone features (B, F) of uint8 NHWC pixels."""
        x = pixels.permute(0, 3, 1, 2).float()  # (B, H, W, C) uint8 -> (B, C, H, W)
        if self.in_channels == 1:
            x = x.expand(-1, 3, -1, -1)  # grey -> the backbone's 3 channels
        x = (x - self.mean) / self.std
        return self.backbone(x)  # (B, F)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(pixels))  # (B, K) logits
