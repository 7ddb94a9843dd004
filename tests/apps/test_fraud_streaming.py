"""Fraud training on Parquet in streaming mode: the same split, statistics and contract as in memory,
and a tiny streaming fit exports a working ONNX model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepapps.apps.finance.fraud.config import TabularDataConfig
from deepapps.apps.finance.fraud.data import TabularDataModule
from deepapps.apps.finance.fraud.streaming import StreamingTabularDataModule, tabular_datamodule, wants_streaming
from deepapps.apps.finance.fraud.synth import generate
from deepapps.core.cli import main
from deepapps.core.contract import read_metadata
from deepapps.core.errors import ConfigError

pytest.importorskip("pyarrow")
TINY = Path(__file__).resolve().parents[2] / "apps/finance/fraud/configs/tiny.yaml"


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> Path:
    """4,000 synthetic transactions (categoricals, nulls, a time column) in row groups of 700 rows."""
    path = tmp_path_factory.mktemp("stream") / "tx.parquet"
    generate(4000, 0.05, seed=1).write_parquet(path, row_group_size=700)
    return path


@pytest.mark.parametrize("split", ["time", "random"])
def test_streaming_split_and_statistics_equal_the_in_memory_path(transactions, split):
    cfg = TabularDataConfig(path=str(transactions), split=split, batch_size=64, shuffle_buffer=500)
    memory, stream = TabularDataModule(cfg), StreamingTabularDataModule(cfg)
    assert stream.summary()["sizes"] == memory.summary()["sizes"] == {"train": 2800, "val": 600, "test": 600}
    assert stream.summary()["class_counts"] == memory.summary()["class_counts"]
    a, b = memory.spec, stream.spec
    assert (a.numeric, a.categorical, a.log, a.center, a.scale) == (b.numeric, b.categorical, b.log, b.center, b.scale)
    assert {k: sorted(v) for k, v in a.vocab.items()} == {k: sorted(v) for k, v in b.vocab.items()}
    for part in ("val", "test"):  # the same rows, in the same order
        assert np.array_equal(memory.encoded[part].numeric, stream.encoded[part].numeric, equal_nan=True)
        assert np.array_equal(memory.y[part], stream.y[part])
    assert memory.class_weights("sqrt") == pytest.approx(stream.class_weights("sqrt"))
    batches = list(stream.train_dataloader())  # every train row once per epoch, drop_last, shuffled
    assert len(batches) == len(memory.train_dataloader()) == 2800 // 64
    targets = np.concatenate([b[-1].numpy() for b in batches])
    assert memory.y["train"].sum() - 64 <= targets.sum() <= memory.y["train"].sum()  # at most the dropped tail
    numeric = np.concatenate([b[0].numpy() for b in batches])
    rows = memory.encoded["train"].numeric
    assert numeric.shape == (2800 // 64 * 64, rows.shape[1])
    assert not np.array_equal(numeric[:64], rows[:64], equal_nan=True)  # shuffled, not in file order
    seen = {r.tobytes() for r in np.nan_to_num(numeric, nan=-1e9)}
    assert len(seen & {r.tobytes() for r in np.nan_to_num(rows, nan=-1e9)}) >= len(seen) - 1  # train rows only


def test_streaming_choice(transactions, tmp_path, capsys):
    assert wants_streaming(TabularDataConfig(path=str(transactions), streaming="true")) == (True, "asked")
    assert wants_streaming(TabularDataConfig(path=str(transactions), streaming="false")) == (False, "asked")
    assert isinstance(tabular_datamodule(TabularDataConfig(path=str(transactions))), TabularDataModule)
    assert "--data.streaming false (Parquet" in capsys.readouterr().err  # auto: a small file is read into memory
    csv = tmp_path / "tx.csv"
    generate(100, 0.1, seed=2).write_csv(csv)
    with pytest.raises(ConfigError, match="not a Parquet"):
        wants_streaming(TabularDataConfig(path=str(csv), streaming="true"))
    with pytest.raises(ConfigError, match="choose auto, true or false"):
        wants_streaming(TabularDataConfig(path=str(transactions), streaming="maybe"))
    with pytest.raises(ConfigError, match="gan_oversample"):
        StreamingTabularDataModule(TabularDataConfig(path=str(transactions), gan_oversample=1.0))


def test_a_tiny_streaming_fit_exports_a_working_model(transactions, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    assert main(["fraud", "fit", "--config", str(TINY), "--data.path", str(transactions), "--data.streaming", "true",
                 "--run_dir", str(run), "--trainer.max_epochs", "1", "--baselines", "false"]) == 0
    meta = read_metadata(run / "model.onnx")
    memory = TabularDataModule(TabularDataConfig(path=str(transactions), batch_size=256)).spec.to_meta()
    pre = {k: v for k, v in meta["preprocess"].items() if k != "in_graph"}
    assert {k: v for k, v in pre.items() if k != "vocab"} == {k: v for k, v in memory.items() if k != "vocab"}
    assert {k: sorted(v) for k, v in pre["vocab"].items()} == {k: sorted(v) for k, v in memory["vocab"].items()}
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["test"]["n"] == 600 and metrics["test"]["auprc"] > 3 * metrics["test"]["frauds"] / 600
    assert metrics["test"]["auprc"] == pytest.approx(metrics["test_torch"]["auprc"], abs=1e-4)  # ONNX = torch
    from deepapps.apps.finance.fraud import runtime
    from deepapps.core.runtime.session import load_model

    model = load_model(run / "model.onnx", provider="cpu", app="fraud")
    streamed = runtime.FraudServing().evaluate(model, str(transactions), "test")  # fit streaming: evaluate streams
    monkeypatch.setattr(runtime, "streamed_input", lambda data, path: False)
    memory = runtime.FraudServing().evaluate(model, str(transactions), "test")  # the test rows read into memory
    assert streamed.metrics["n"] == memory.metrics["n"] == 600
    for key in ("auprc", "auroc", "frauds"):
        assert streamed.metrics[key] == pytest.approx(memory.metrics[key], abs=1e-6)
    assert streamed.metrics["decision"] == pytest.approx(memory.metrics["decision"], abs=1e-6)
    out = tmp_path / "scored.csv"
    assert main(["fraud", "predict", "--model", str(run / "model.onnx"), "--out", str(out), str(transactions)]) == 0
    scored = pl.read_csv(out)
    assert scored.height == 4000 and scored["error"].null_count() == 4000
    assert scored["score"].is_between(0, 1).all()


@pytest.mark.parametrize("split", ["time", "random"])
def test_evaluate_reads_only_the_split_rows_of_a_large_parquet_as_in_memory(transactions, split):
    """`read_split` (evaluate on a Parquet above the streaming threshold): the same rows, same order."""
    from deepapps.apps.finance.fraud.parquet import read_split
    from deepapps.apps.finance.fraud.tables import Columns

    cfg = TabularDataConfig(path=str(transactions), split=split)
    memory = TabularDataModule(cfg)
    for part in ("train", "val", "test"):
        assert read_split(str(transactions), cfg, Columns(label="is_fraud", time="timestamp"), part).equals(
            memory.frames[part])


def _time_variants(tmp_path_factory, kind: str) -> Path:
    """3,000 rows out of time order with tied times: a day-truncated datetime, a float with negatives and
    missing values, or an integer column."""
    df = generate(3000, 0.05, seed=3).sample(fraction=1.0, shuffle=True, seed=0)
    hours = (df["timestamp"].dt.epoch("s") // 3600).cast(pl.Int64)
    if kind == "datetime":
        df = df.with_columns(pl.col("timestamp").dt.truncate("1d"))
    elif kind == "float":
        centred = (hours - hours.median()).cast(pl.Float64) * 0.5
        df = df.with_columns(timestamp=pl.when(pl.int_range(pl.len()) % 97 == 0).then(None).otherwise(centred))
    else:
        df = df.with_columns(timestamp=hours)
    path = tmp_path_factory.mktemp("stream_time") / f"tx_{kind}.parquet"
    df.write_parquet(path, row_group_size=450)
    return path


@pytest.mark.parametrize("kind", ["datetime", "float", "int"])
def test_streaming_time_split_from_boundaries_holds_the_in_memory_rows(tmp_path_factory, kind):
    path = _time_variants(tmp_path_factory, kind)
    cfg = TabularDataConfig(path=str(path), time_column="timestamp", batch_size=64, shuffle_buffer=500)
    memory, stream = TabularDataModule(cfg), StreamingTabularDataModule(cfg)
    assert stream.rule.codes is None and stream.rule.nbytes == 0  # two (time, row) boundaries, no per-row array
    assert stream.summary()["sizes"] == memory.summary()["sizes"]
    assert stream.summary()["class_counts"] == memory.summary()["class_counts"]
    ids = pl.read_parquet(path)["transaction_id"].to_numpy()
    for part in ("train", "val", "test"):
        rows = np.concatenate([r for r, _, _ in stream.split_batches(part)])
        assert sorted(ids[rows]) == sorted(memory.frames[part]["transaction_id"].to_list())


def test_streaming_keeps_no_row_of_the_table_in_memory(transactions, monkeypatch):
    from deepapps.apps.finance.fraud import streaming

    monkeypatch.setattr(streaming, "SAMPLE_ROWS", 50)
    monkeypatch.setattr(streaming, "BASELINE_ROWS", 300)
    dm = StreamingTabularDataModule(TabularDataConfig(path=str(transactions), batch_size=64, shuffle_buffer=500))

    def arrays(value):
        if isinstance(value, np.ndarray):
            yield value
        elif isinstance(value, dict):
            for v in value.values():
                yield from arrays(v)
        elif hasattr(value, "numeric") and hasattr(value, "categorical"):  # Encoded
            yield value.numeric
            yield value.categorical
    held = [a for v in vars(dm).values() for a in arrays(v)]
    assert max(len(a) for a in held) < 500  # samples only (about 300 train, 50 val, 50 test rows)
    assert 20 <= len(dm.encoded["val"].numeric) <= 100 and 20 <= len(dm.encoded["test"].numeric) <= 100
    assert dm.rule.codes is None
    random = StreamingTabularDataModule(TabularDataConfig(path=str(transactions), split="random", batch_size=64,
                                                          shuffle_buffer=500))
    assert random.rule.codes.dtype == np.uint8 and random.rule.nbytes == 4000  # one byte a row


@pytest.mark.parametrize("split", ["time", "random"])
def test_streamed_validation_test_and_post_fit_equal_the_in_memory_path(transactions, split):
    import pytorch_lightning as L
    import torch

    from deepapps.apps.finance.fraud.config import FraudFitConfig
    from deepapps.apps.finance.fraud.training import FraudTraining

    built = {}
    for streaming in ("false", "true"):
        torch.manual_seed(0)
        cfg = FraudFitConfig()
        cfg.data = TabularDataConfig(path=str(transactions), split=split, streaming=streaming, batch_size=64,
                                     shuffle_buffer=500)
        built[streaming] = FraudTraining().build(cfg)
    module = FraudTraining().module(built["false"], cfg)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, max_steps=5, limit_val_batches=0)
    trainer.fit(module, train_dataloaders=built["true"].datamodule.train_dataloader())
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False)
    for stage in ("validate", "test"):
        memory = getattr(trainer, stage)(module, datamodule=built["false"].datamodule, verbose=False)[0]
        stream = getattr(trainer, stage)(module, datamodule=built["true"].datamodule, verbose=False)[0]
        assert memory.keys() == stream.keys() and len(memory) >= 4
        for key, value in memory.items():
            assert stream[key] == pytest.approx(value, abs=1e-5), key
    a, b = (FraudTraining().post_fit(module, built[k], cfg).state for k in ("false", "true"))
    assert b["threshold"] == pytest.approx(a["threshold"], abs=1e-6)
    assert b["decision"]["val"] == pytest.approx(a["decision"]["val"], abs=1e-6)
    for name in ("logistic_regression", "hist_gradient_boosting"):
        for part in ("val", "test"):
            assert b["baselines"][name][part]["auprc"] == pytest.approx(a["baselines"][name][part]["auprc"], abs=1e-3)
