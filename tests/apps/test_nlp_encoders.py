import pytest
import torch

from deepapps.core.errors import ConfigError
from deepapps.apps.nlp.model import create_text_encoder


@pytest.fixture(scope="module")
def tiny_bert_dir(tmp_path_factory):
    """A tiny BERT (random weights) with a real fast tokenizer, saved like a hub folder."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    folder = tmp_path_factory.mktemp("tiny-bert")
    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "good", "bad", "movie"])}
    core_tok = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core_tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core_tok, pad_token="[PAD]", unk_token="[UNK]",
                                        cls_token="[CLS]", sep_token="[SEP]")
    tokenizer.save_pretrained(folder)
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    BertModel(config).save_pretrained(folder)
    return folder


def test_local_folder_loads_offline(tiny_bert_dir):
    model, tokenizer, where = create_text_encoder(str(tiny_bert_dir))
    assert where == f"folder {tiny_bert_dir}"
    batch = tokenizer(["good movie", "bad"], padding=True, return_tensors="pt")
    assert batch["input_ids"].tolist()[1][0] == 5  # "bad", then padding
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (2, 2, 16)


def test_classifier_head_gets_the_label_count(tiny_bert_dir):
    model, _, _ = create_text_encoder(str(tiny_bert_dir), num_labels=3)
    assert model.config.num_labels == 3 and model.classifier.out_features == 3


def test_folder_without_config_is_refused(tmp_path):
    with pytest.raises(ConfigError, match="no config.json"):
        create_text_encoder(str(tmp_path))
