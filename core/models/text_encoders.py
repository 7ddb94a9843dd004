"""Hugging Face text encoders by hub name or local directory (the text twin of backbones.py)."""

from __future__ import annotations

from pathlib import Path

from deepapps.core.errors import ConfigError


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
