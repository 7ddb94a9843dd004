"""Text classifier: HF encoder -> pooled hidden state -> dropout -> linear logits; encoders by hub
name, local folder or pip package."""

from __future__ import annotations

import importlib.resources
import re
from pathlib import Path

import torch
from torch import nn

from deepapps.core.errors import ConfigError


def resolve_pretrained(name: str) -> str:
    """`package:<module>` -> the `model` folder that Python package ships; else unchanged."""
    if not name.startswith("package:"):
        return name
    module = name.removeprefix("package:")
    try:
        folder = importlib.resources.files(module) / "model"
    except ModuleNotFoundError:
        raise ConfigError(f"--model.pretrained {name}: package {module!r} is not installed") from None
    return str(folder)


def load_encoder(name: str, weights: bool = True):
    """(encoder, tokenizer, where): pretrained weights, or the architecture only (checkpoints)."""
    from transformers import AutoConfig, AutoModel

    path = resolve_pretrained(name)
    if weights:
        return create_text_encoder(path)
    from transformers import AutoTokenizer

    local = {"local_files_only": True} if Path(path).exists() else {}
    try:
        config = AutoConfig.from_pretrained(path, **local)
        tokenizer = AutoTokenizer.from_pretrained(path, use_fast=True, **local)
    except OSError as exc:
        raise ConfigError(f"--model.pretrained {name}: cannot load ({str(exc).splitlines()[0]})") from None
    return AutoModel.from_config(config), tokenizer, f"architecture of {path} (weights from the checkpoint)"


def create_text_encoder(name_or_path: str, num_labels: int | None = None):
    """Load a transformers encoder and its fast tokenizer.

    Args:
        name_or_path: hub name (needs network, e.g. `distilbert-base-uncased`) or a local
            folder with config.json, weights and tokenizer files (works offline).
        num_labels: None for the bare encoder (AutoModel); else a sequence classifier
            (AutoModelForSequenceClassification) whose new head has that many outputs.

    Returns:
        (model, tokenizer, one-line description of where the weights came from).
    """
    from transformers import AutoModel, AutoModelForSequenceClassification, AutoTokenizer

    local = Path(name_or_path)
    if local.exists() and not (local / "config.json").is_file():
        raise ConfigError(f"--model.pretrained {name_or_path}: folder has no config.json")
    kwargs = {"local_files_only": True} if local.exists() else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(name_or_path, use_fast=True, **kwargs)
        if num_labels is None:
            model = AutoModel.from_pretrained(name_or_path, **kwargs)
        else:
            model = AutoModelForSequenceClassification.from_pretrained(name_or_path, num_labels=num_labels, **kwargs)
    except OSError as exc:
        raise ConfigError(f"--model.pretrained {name_or_path}: cannot load ({str(exc).splitlines()[0]})") from None
    where = f"folder {local}" if local.exists() else f"Hugging Face hub {name_or_path}"
    return model, tokenizer, where


class TextClassifier(nn.Module):
    """(input_ids (B, T), attention_mask (B, T)) -> logits (B, K)."""

    def __init__(self, backbone: nn.Module, num_labels: int, pooling: str = "mean", drop_rate: float = 0.1):
        super().__init__()
        if pooling not in ("mean", "cls"):
            raise ConfigError(f"--model.pooling {pooling}: choose mean or cls")
        self.backbone, self.pooling = backbone.train(), pooling  # from_pretrained leaves it in eval mode
        self.dropout = nn.Dropout(drop_rate)
        self.head = nn.Linear(backbone.config.hidden_size, num_labels)

    def features(self, input_ids: torch.Tensor | None, attention_mask: torch.Tensor,
                 inputs_embeds: torch.Tensor | None = None) -> torch.Tensor:
        """Pooled sentence vector (B, H); `inputs_embeds` instead of ids for attributions."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask,
                               inputs_embeds=inputs_embeds).last_hidden_state  # (B, T, H)
        if self.pooling == "cls":
            return hidden[:, 0]
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # (B, T, 1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (B, H)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(self.features(input_ids, attention_mask)))  # (B, K)


def layer_depth(name: str, num_layers: int) -> int:
    """0 for embeddings, l + 1 for encoder layer l, num_layers + 1 for the rest (pooler, head)."""
    if "embeddings" in name:
        return 0
    match = re.search(r"\.(?:layer|layers|block|blocks)\.(\d+)\.", name)
    return int(match.group(1)) + 1 if match else num_layers + 1
