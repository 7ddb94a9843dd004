"""A tiny BERT (random weights) with a WordPiece tokenizer trained offline, saved like a hub folder."""

from __future__ import annotations

from pathlib import Path

from deepapps.apps.nlp.table import builtin_reviews

EXTRA = ["this movie was great fun", "a dull and boring film", "the battery died fast", "fast shipping and nice"]


def make_tiny_bert(folder: Path, hidden: int = 32, layers: int = 2) -> Path:
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    import torch
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    normalizer, pre_tokenizer = normalizers.BertNormalizer(lowercase=True), pre_tokenizers.BertPreTokenizer()
    # a WordPiece vocabulary built in a fixed order (WordPieceTrainer breaks ties differently from
    # run to run, which changed the token ids and made the tests' accuracy floors flaky)
    words = {w for text in builtin_reviews()["text"].to_list() + EXTRA
             for w, _ in pre_tokenizer.pre_tokenize_str(normalizer.normalize_str(text))}
    chars = sorted({c for w in words for c in w})
    special = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    vocab = [*special, *chars, *(f"##{c}" for c in chars), *sorted(words - set(chars))]
    tok = Tokenizer(models.WordPiece({t: i for i, t in enumerate(vocab)}, unk_token="[UNK]"))
    tok.normalizer, tok.pre_tokenizer, tok.decoder = normalizer, pre_tokenizer, decoders.WordPiece()
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
        special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))],
    )
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]",
                                   sep_token="[SEP]", mask_token="[MASK]")
    fast.save_pretrained(folder)
    config = BertConfig(vocab_size=tok.get_vocab_size(), hidden_size=hidden, num_hidden_layers=layers,
                        num_attention_heads=2, intermediate_size=2 * hidden, max_position_embeddings=128)
    torch.manual_seed(0)  # the same random weights in every run: the tests' accuracy floors must not flake
    BertModel(config).save_pretrained(folder)
    return folder
