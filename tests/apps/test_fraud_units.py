"""Fraud building blocks: column detection, time split, features, metrics, cost threshold, model export."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch

from deepapps.apps.finance.fraud.config import TabularModelConfig
from deepapps.apps.finance.fraud.features import Encoded, FeatureSpec, encode
from deepapps.apps.finance.fraud.model import create_model
from deepapps.apps.finance.fraud.scoring import cost_threshold, decision_metrics, fraud_metrics, recall_at_fpr
from deepapps.apps.finance.fraud.synth import generate
from deepapps.apps.finance.fraud.tables import detect_columns, split_frame
from deepapps.core.errors import DataError


@pytest.fixture(scope="module")
def table() -> pl.DataFrame:
    return generate(4000, 0.05, seed=1)


def test_generator_is_seeded_and_realistic(table):
    assert table.equals(generate(4000, 0.05, seed=1))
    assert table["is_fraud"].sum() == 200
    assert table["timestamp"].is_sorted() and table["transaction_id"].n_unique() == 4000
    assert 0 < table["device_score"].null_count() < 400  # missing values occur
    by = table.group_by("is_fraud").agg((pl.col("amount_vs_history") > 3).mean().alias("unusual"),
                                        pl.col("device_score").mean()).sort("is_fraud")
    assert by["unusual"][1] > 5 * by["unusual"][0]  # frauds spend unusual amounts
    assert by["device_score"][1] < by["device_score"][0]  # on unfamiliar devices


def test_detect_columns_defaults_and_overrides(table):
    cols = detect_columns(table.schema, "t")
    assert (cols.label, cols.time, cols.ids) == ("is_fraud", "timestamp", ["transaction_id", "customer_id"])
    assert cols.categorical == ["merchant_category", "channel", "country"]
    assert "amount" in cols.numeric and "is_fraud" not in cols.numeric and "timestamp" not in cols.numeric
    cols = detect_columns(table.schema, "t", time=None, ids=[], numeric=["amount"], categorical=["channel"])
    assert cols.time is None and cols.numeric == ["amount"] and cols.categorical == ["channel"]
    with pytest.raises(DataError, match="label column 'nope' not found"):
        detect_columns(table.schema, "t", label="nope")


def test_time_split_never_trains_on_the_future(table):
    cols = detect_columns(table.schema, "t")
    parts = split_frame(table.sample(fraction=1.0, shuffle=True, seed=0), cols, "time", 0.15, 0.15, 0)
    assert [p.height for p in parts.values()] == [2800, 600, 600]
    assert parts["train"]["timestamp"].max() <= parts["val"]["timestamp"].min()
    assert parts["val"]["timestamp"].max() <= parts["test"]["timestamp"].min()
    rand = split_frame(table, cols, "random", 0.15, 0.15, 0)
    assert [p["is_fraud"].sum() for p in rand.values()] == [140, 30, 30]  # stratified


def test_features_fit_on_train_and_map_unknown_categories(table):
    cols = detect_columns(table.schema, "t")
    spec = FeatureSpec.fit(table, cols, 1, None, min_count=5)
    assert spec.log == ["amount" in c for c in spec.numeric]
    j = spec.numeric.index("amount")
    assert spec.center[j] == pytest.approx(np.log1p(table["amount"].median()), rel=1e-3)
    rows = table.head(3).with_columns(country=pl.Series(["US", "ZZ", None]), device_score=pl.Series([None, 0.5, 0.5]))
    enc = encode(rows, spec)
    assert enc.categorical[:, 2].tolist()[1:] == [0, 0] and enc.categorical[0, 2] > 0
    assert enc.unknown["country"] == 1 and np.isnan(enc.numeric[0, spec.numeric.index("device_score")])
    assert not enc.bad.any()


def test_metrics_on_known_scores():
    y = np.array([0, 0, 0, 0, 1, 0, 1, 1])
    s = np.array([0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8])
    m = fraud_metrics(y, s, fpr=0.2, top_k=3)
    assert m["precision_at_3"] == pytest.approx(2 / 3) and m["auroc"] == pytest.approx(14 / 15)
    assert m["auprc"] == pytest.approx((1 + 1 + 0.75) / 3)
    assert recall_at_fpr(y, s, 0.0) == pytest.approx(2 / 3) and recall_at_fpr(y, s, 0.2) == 1.0


@pytest.mark.parametrize("missed,review", [(100.0, 5.0), (10.0, 4.0), (1.0, 50.0)])
def test_cost_threshold_is_the_cheapest_cut(missed, review):
    rng = np.random.default_rng(0)
    y = (rng.random(500) < 0.1).astype(int)
    s = np.clip(rng.normal(0.3 + 0.4 * y, 0.2), 0, 1).round(2)  # ties on purpose
    t = cost_threshold(y, s, missed, review)
    brute = min(decision_metrics(y, s, c, missed, review)["cost"] for c in [*np.unique(s), 2.0])
    assert decision_metrics(y, s, t, missed, review)["cost"] == pytest.approx(brute)


@pytest.mark.parametrize("arch", ["mlp", "ft_transformer"])
def test_models_export_with_preprocessing_in_graph(table, arch, tmp_path):
    from deepapps.core.training.export import export_onnx

    cols = detect_columns(table.schema, "t")
    spec = FeatureSpec.fit(table, cols, 1, None)
    net = create_model(spec, TabularModelConfig(arch=arch, hidden=[16], d_token=8, n_layers=1, n_heads=2))
    enc = encode(table.head(64), spec)
    numeric = torch.from_numpy(enc.numeric.copy())
    numeric[0, 0] = float("nan")
    inputs = (numeric, torch.from_numpy(enc.categorical.copy()) + torch.tensor([0, 0, 99]))  # out-of-range code
    from deepapps.core.training.heads import WithProbabilities

    meta = export_onnx(WithProbabilities(net, False, 1.0), inputs, tmp_path / "m.onnx",
                       ["numeric", "categorical"], {"app": "fraud"})
    assert meta["export"]["parity_max_abs_diff"] <= 1e-4


def _trained_bn_mlp(table, hidden=(16, 8)):
    """An MLP whose batch norms hold data statistics (as after training)."""
    cols = detect_columns(table.schema, "t")
    spec = FeatureSpec.fit(table, cols, 1, None)
    net = create_model(spec, TabularModelConfig(hidden=list(hidden)))
    enc = encode(table, spec)
    inputs = (torch.from_numpy(enc.numeric), torch.from_numpy(enc.categorical))
    with torch.no_grad():
        net.train()(*inputs)
    return net.eval(), spec, enc, inputs


def test_fold_batch_norm_keeps_outputs_and_drops_the_norms(table):
    from deepapps.apps.finance.fraud.model import fold_batch_norm

    net, _, _, inputs = _trained_bn_mlp(table)
    folded = fold_batch_norm(net)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    assert any(isinstance(m, torch.nn.BatchNorm1d) for m in net.modules())  # the trained net is untouched
    with torch.no_grad():
        torch.testing.assert_close(folded(*inputs), net(*inputs), atol=1e-4, rtol=1e-4)


def test_category_codes_count_unseen_but_not_missing():
    from deepapps.apps.finance.fraud.features import category_codes

    spec = FeatureSpec(numeric=[], categorical=["a", "b", "c"], log=[], center=[], scale=[],
                       vocab={"a": ["x", "y"], "b": [], "c": ["true"]})
    df = pl.DataFrame({"a": ["y", None, "zz", "x"], "b": ["q", None, "r", "s"], "c": [True, False, None, True]})
    codes, unknown = category_codes(df, spec)
    assert codes.tolist() == [[2, 0, 1], [0, 0, 0], [0, 0, 0], [1, 0, 1]] and codes.dtype == np.int64
    assert unknown == {"a": 1, "b": 3, "c": 1}


def test_autoencoder_scores_reconstruction_error(table, tmp_path):
    from deepapps.apps.finance.fraud.model import served_module
    from deepapps.core.training.export import export_onnx

    cols = detect_columns(table.schema, "t")
    spec = FeatureSpec.fit(table, cols, 1, None)
    net = create_model(spec, TabularModelConfig(arch="autoencoder", ae_hidden=[8, 3], dropout=0.0))
    normal = encode(table.filter(pl.col("is_fraud") == 0), spec)
    fraud = encode(table.filter(pl.col("is_fraud") == 1), spec)
    x = (torch.from_numpy(normal.numeric), torch.from_numpy(normal.categorical))
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    for _ in range(150):  # learn the normal rows only
        loss = net.reconstruction_error(*net.embed(*x)).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        error = net.reconstruction_error(*net.embed(*x))
        probs = served_module(net)(*x)
        fraud_probs = served_module(net)(torch.from_numpy(fraud.numeric), torch.from_numpy(fraud.categorical))
    torch.testing.assert_close(probs[:, 1], error / (1 + error))  # score = e / (1 + e), monotone in e
    y = np.r_[np.zeros(len(probs)), np.ones(len(fraud_probs))]
    assert fraud_metrics(y, np.r_[probs[:, 1], fraud_probs[:, 1]])["auroc"] > 0.75  # frauds reconstruct worse
    meta = export_onnx(served_module(net), x, tmp_path / "ae.onnx", ["numeric", "categorical"], {"app": "fraud"})
    assert meta["export"]["parity_max_abs_diff"] <= 1e-4


def test_gan_feature_space_round_trip_and_oversampling(table):
    from deepapps.apps.finance.fraud.gan import from_feature_space, oversample, to_feature_space

    cols = detect_columns(table.schema, "t")
    spec = FeatureSpec.fit(table, cols, 1, None)
    fraud = encode(table.filter(pl.col("is_fraud") == 1), spec)
    z = to_feature_space(fraud, spec)
    back = Encoded(*from_feature_space(z, spec), fraud.errors, {})
    np.testing.assert_allclose(to_feature_space(back, spec), z, atol=1e-4)  # exact up to the graph's clip
    assert (np.isnan(back.numeric) == np.isnan(fraud.numeric)).all() and (back.categorical == fraud.categorical).all()
    torch.manual_seed(0)
    fake = oversample(fraud, spec, 300, steps=150)
    assert fake.numeric.shape == (300, len(spec.numeric)) and fake.numeric.dtype == np.float32
    assert ((fake.categorical >= 0) & (fake.categorical < np.array(spec.cardinalities))).all()
    # the generator moved from noise toward the frauds: amounts and device scores on the fraud side
    normal = encode(table.filter(pl.col("is_fraud") == 0), spec)
    j = spec.numeric.index("device_score")
    assert abs(np.nanmean(fake.numeric[:, j]) - np.nanmean(fraud.numeric[:, j])) < abs(
        np.nanmean(normal.numeric[:, j]) - np.nanmean(fraud.numeric[:, j]))


@pytest.mark.parametrize("arch", ["mlp", "ft_transformer", "autoencoder"])
def test_integrated_gradients_are_complete(table, arch):
    from deepapps.apps.finance.fraud.explain import baseline_inputs, integrated_gradients, log_odds

    cols = detect_columns(table.schema, "t")
    spec = FeatureSpec.fit(table, cols, 1, None)
    torch.manual_seed(0)
    net = create_model(spec, TabularModelConfig(arch=arch, hidden=[16], d_token=8, n_layers=1, n_heads=2,
                                                ae_hidden=[8, 3])).eval()
    enc = encode(table.head(40), spec)
    attr, odds, gap = integrated_gradients(net, spec, enc.numeric, enc.categorical, steps=128)
    assert attr.shape == (40, len(spec.numeric) + len(spec.categorical))
    with torch.no_grad():
        base = log_odds(net.head_from(*baseline_inputs(net, spec))).item()
    np.testing.assert_allclose(attr.sum(1), odds - base, atol=0.02 * max(1.0, np.abs(odds - base).max()))
    assert np.abs(gap).max() < 0.02 * max(1.0, np.abs(odds - base).max())
    # the baseline row itself (medians, nothing missing, top categories) gets no attribution
    center = np.where(spec.log, np.sign(spec.center) * np.expm1(np.abs(spec.center)), spec.center)
    row = np.asarray(center, np.float32)[None]
    attr0, _, _ = integrated_gradients(net, spec, row, np.ones((1, len(spec.categorical)), np.int64), steps=8)
    np.testing.assert_allclose(attr0, 0, atol=1e-5)
