"""nlp app units: reading and splitting tables, bucketing, schedule, layer-wise LR, attributions."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import polars as pl
import pytest
import torch

from deepapps.apps.nlp.config import TextOptimConfig
from deepapps.apps.nlp.data import BucketSampler
from deepapps.apps.nlp.explain import attribute, baseline_ids
from deepapps.apps.nlp.model import TextClassifier, layer_depth
from deepapps.apps.nlp.table import read_labelled, resolve_columns
from deepapps.core.data.splits import stratified_split
from deepapps.apps.nlp.training import text_classification_module as TextClassificationTask
from deepapps.apps.nlp.training import warmup_decay as WarmupDecay
from deepapps.core.errors import DataError


def test_integer_labels_get_names_and_tsv_is_read_without_quoting(tmp_path):
    path = tmp_path / "sst.tsv"
    path.write_text('sentence\tlabel\n"a quote opens here\t1\nbad , bad film\t0\n  \t1\n')
    table = read_labelled(str(path), "sentence", "label", ["negative", "positive"])
    assert table.texts == ['"a quote opens here', "bad , bad film"]  # the empty text is dropped
    assert table.labels == ["negative", "positive"] and table.targets.tolist() == [1, 0]
    assert any("1 rows with an empty text" in n for n in table.notes)


@pytest.mark.parametrize("content, message", [
    ("text,label\nfine,\ngood,pos\n", "1 rows have no 'label' (first: row 1)"),
    ("text,label\nfine,1.0\ngood,NaN\n", "1 rows have no 'label' (first: row 2)"),
    ("body,label\nfine,pos\n", "no column 'text'"),
    ("text,label\nfine,pos\ngood,pos\n", "has one label"),
])
def test_unusable_training_tables_are_one_line_errors(tmp_path, content, message):
    path = tmp_path / "t.csv"
    path.write_text(content)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        read_labelled(str(path), "text", "label")


def test_non_utf8_table_is_a_data_error(tmp_path):
    path = tmp_path / "t.csv"
    path.write_bytes(b"text,label\ncaf\xe9,pos\nok,neg\n")
    with pytest.raises(DataError, match="cannot read"):
        read_labelled(str(path), "text", "label")


def test_auto_columns_find_the_text_and_the_label(tmp_path, capsys):
    path = tmp_path / "train.tsv"
    rows = [f"{'a fine' if i % 2 else 'a dull'} film number {i}\t{i % 2}" for i in range(12)]
    path.write_text("sentence\tlabel\n" + "\n".join(rows) + "\n")
    table = read_labelled(str(path), "auto", "auto", ["negative", "positive"])
    assert (table.text_column, table.label_column) == ("sentence", "label")
    assert table.texts[1] == "a fine film number 1" and table.targets.tolist()[:2] == [0, 1]
    err = capsys.readouterr().err.splitlines()
    assert err == ["deepapps: auto: --data.text_column sentence (the only text column)",
                   "deepapps: auto: --data.label_column label (the only label column)"]
    assert "auto: --data.text_column sentence (the only text column)" in table.notes
    assert any("read as TSV without quoting" in n for n in table.notes)  # the dialect is noted too
    # an id column, a numeric column of many values and a short-text label column are told apart
    frame = pl.DataFrame({"review_id": [f"R{i:04d}" for i in range(40)], "helpful": list(range(40)),
                          "stars": ["good", "bad"] * 20, "review": [f"the lamp number {i} is ok" for i in range(40)]})
    assert resolve_columns(frame, "t.csv")[:2] == ("review", "stars")
    # one explicit, one auto
    assert resolve_columns(frame, "t.csv", text_column="review_id")[:2] == ("review_id", "stars")


def test_auto_columns_that_are_ambiguous_are_one_line_errors():
    frame = pl.DataFrame({"title": ["a good film", "bad one", "fine movie", "so so"],
                          "summary": ["long text here", "more words", "some more", "and more"], "label": list("pnpn")})
    with pytest.raises(DataError, match=r"^t.csv: cannot tell the text column: title, summary each holds text; "
                                        r"set --data.text_column$"):
        resolve_columns(frame, "t.csv")
    assert resolve_columns(frame, "t.csv", text_column="summary")[:2] == ("summary", "label")
    two = frame.with_columns(verified=pl.Series([True, False, True, False]))
    assert resolve_columns(two, "t.csv", text_column="title")[1] == "label"  # the one named like a label
    with pytest.raises(DataError, match="cannot tell the label column: rating, verified .*; set --data.label_column"):
        resolve_columns(two.rename({"label": "rating"}), "t.csv", text_column="title")
    with pytest.raises(DataError, match="no column holds text .*; set --data.text_column"):
        resolve_columns(pl.DataFrame({"x": [1, 2, 3], "label": [0, 1, 0]}), "t.csv")
    named = frame.rename({"summary": "text"})  # a usual name settles a tie
    text, _, chosen = resolve_columns(named, "t.csv")
    assert text == "text" and "the one named like a text column" in chosen[0]


def test_quoted_multiline_review_tsv_reads_with_an_explicit_text_column(tmp_path):
    path = tmp_path / "reviews.tsv"
    path.write_text('id\tsentence\tstars\n1\t"Great kettle.\nBoils fast, ""quiet"" too."\tgood\n'
                    '2\tplain and simple\tbad\n3\t"two\nlines"\tgood\n')
    table = read_labelled(str(path), "sentence", "auto")
    assert table.texts == ['Great kettle.\nBoils fast, "quiet" too.', "plain and simple", "two\nlines"]
    assert table.label_column == "stars" and table.labels == ["bad", "good"]
    assert any("standard quoting (RFC 4180)" in n for n in table.notes)


def test_jsonl_and_parquet_read_alike(tmp_path):
    frame = pl.DataFrame({"t": ["good", "bad", "meh"], "y": ["pos", "neg", "pos"]})
    frame.write_ndjson(tmp_path / "a.jsonl")
    frame.write_parquet(tmp_path / "a.parquet")
    a, b = (read_labelled(str(tmp_path / f), "t", "y") for f in ("a.jsonl", "a.parquet"))
    assert a.texts == b.texts and a.targets.tolist() == b.targets.tolist() == [1, 0, 1]


def test_stratified_split_is_disjoint_reproducible_and_keeps_class_shares():
    targets = np.array([0] * 700 + [1] * 300)
    s1, s2 = stratified_split(targets, 0.1, 0.2, 3), stratified_split(targets, 0.1, 0.2, 3)
    assert all(np.array_equal(s1[k], s2[k]) for k in s1)
    assert len(np.intersect1d(s1["train"], s1["test"])) == 0 and len(np.intersect1d(s1["val"], s1["test"])) == 0
    assert sum(len(v) for v in s1.values()) == 1000
    assert (targets[s1["test"]] == 1).sum() == 60 and (targets[s1["val"]] == 1).sum() == 30
    assert not np.array_equal(stratified_split(targets, 0.1, 0.2, 4)["test"], s1["test"])


def test_bucketed_batches_cover_every_row_once_with_little_padding():
    rng = np.random.default_rng(0)
    lengths = rng.integers(3, 60, 1000)
    batches = list(BucketSampler(lengths, 16, shuffle=True, bucket=True, window=10))
    assert sorted(i for b in batches for i in b) == list(range(1000))
    padding = sum(lengths[b].max() * len(b) - lengths[b].sum() for b in batches)
    random = sum(lengths[b].max() * len(b) - lengths[b].sum()
                 for b in BucketSampler(lengths, 16, shuffle=True, bucket=False))
    assert padding < 0.2 * random


def test_warmup_then_linear_or_cosine_decay():
    linear, cosine = WarmupDecay("linear", 10, 110), WarmupDecay("cosine", 10, 110)
    assert linear(0) == pytest.approx(0.1) and linear(9) == pytest.approx(1.0)
    assert linear(60) == pytest.approx(0.5) and linear(110) == 0.0
    assert cosine(60) == pytest.approx(0.5) and cosine(35) == pytest.approx(0.5 * (1 + np.cos(np.pi / 4)))
    assert WarmupDecay("linear", 0, 10, frozen=5)(3) == 0.0


def _tiny_net(labels: int = 2) -> TextClassifier:
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=3, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    return TextClassifier(BertModel(config), labels, "mean", 0.0)


def test_layer_wise_lr_decay_scales_each_depth():
    assert layer_depth("net.backbone.embeddings.word_embeddings.weight", 3) == 0
    assert layer_depth("net.backbone.encoder.layer.2.output.dense.weight", 3) == 3
    assert layer_depth("net.head.weight", 3) == 4
    task = TextClassificationTask(_tiny_net(), ["a", "b"], False, TextOptimConfig(lr=1e-3, layer_decay=0.5))
    task._trainer = SimpleNamespace(estimated_stepping_batches=100, max_epochs=1)
    optimizer = task.configure_optimizers()["optimizer"]
    lr_of = {id(p): g["initial_lr"] for g in optimizer.param_groups for p in g["params"]}
    net = task.net
    assert lr_of[id(net.head.weight)] == pytest.approx(1e-3)
    assert lr_of[id(net.backbone.encoder.layer[2].output.dense.weight)] == pytest.approx(5e-4)
    assert lr_of[id(net.backbone.encoder.layer[0].output.dense.weight)] == pytest.approx(1.25e-4)
    assert lr_of[id(net.backbone.embeddings.word_embeddings.weight)] == pytest.approx(6.25e-5)
    decay = {id(p): g["weight_decay"] for g in optimizer.param_groups for p in g["params"]}
    assert decay[id(net.head.bias)] == 0.0 and decay[id(net.head.weight)] == 0.01


def test_integrated_gradients_are_complete():
    """Captum's layer IG attributions sum to logit(input) - logit(baseline) (Sundararajan et al.);
    the baseline keeps the special tokens and pads the rest."""
    net = _tiny_net().eval()
    ids = torch.tensor([[2, 11, 23, 7, 3]])
    baseline = baseline_ids(ids, torch.tensor([[1, 0, 0, 0, 1]]), pad_id=0)
    assert baseline.tolist() == [[2, 0, 0, 0, 3]]
    scores, probs, delta = attribute(net, ids, baseline, steps=128)
    target = int(probs.argmax())
    mask = torch.ones_like(ids)
    with torch.no_grad():
        gap = (net(ids, mask) - net(baseline, mask))[0, target]
    assert scores.shape == (5,)
    assert float(scores.sum()) == pytest.approx(float(gap), rel=0.02, abs=1e-4)
    assert delta < 0.02 * max(1.0, abs(float(gap)))
