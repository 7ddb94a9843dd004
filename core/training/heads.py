"""Output heads added at export time, so the ONNX graph ends in what predict reports."""

from __future__ import annotations

import torch
from torch import nn


class WithProbabilities(nn.Module):
    """Ends a logits network with softmax (single-label) or sigmoid (multi-label) for export."""

    def __init__(self, net: nn.Module, multilabel: bool, temperature: float = 1.0):
        super().__init__()
        self.net = net
        self.multilabel = multilabel
        self.temperature = temperature

    def forward(self, *inputs: torch.Tensor) -> torch.Tensor:
        logits = self.net(*inputs) / self.temperature
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)
