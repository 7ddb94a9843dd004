"""Tokenisation with the `tokenizers` library only (no torch, no transformers).

The tokenizer JSON travels in the ONNX metadata, so training and serving tokenise alike.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from tokenizers import Tokenizer


@lru_cache(maxsize=8)
def load_tokenizer(tokenizer_json: str, max_length: int) -> Tokenizer:
    """A tokenizer that truncates to `max_length` tokens and never pads (batches pad later)."""
    tok = Tokenizer.from_str(tokenizer_json)
    tok.no_padding()
    tok.enable_truncation(max_length)
    return tok


def encode(tok: Tokenizer, texts: list[str]) -> tuple[list[list[int]], int]:
    """Token ids per text ([CLS]/[SEP] as the tokenizer's template adds them) and how many
    texts were truncated."""
    encodings = tok.encode_batch(texts)
    return [e.ids for e in encodings], sum(1 for e in encodings if e.overflowing)


def pad(seqs: list[list[int]], pad_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Right-pad to the longest sequence: (input_ids, attention_mask), both (B, T) int64."""
    width = max(1, max((len(s) for s in seqs), default=1))
    ids = np.full((len(seqs), width), pad_id, dtype=np.int64)  # (B, T)
    mask = np.zeros((len(seqs), width), dtype=np.int64)  # (B, T)
    for i, s in enumerate(seqs):
        ids[i, : len(s)] = s
        mask[i, : len(s)] = 1
    return ids, mask
