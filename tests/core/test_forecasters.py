"""Forecasting networks, loss and baselines: shapes, ONNX parity, known answers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from core.export import export_onnx
from core.forecast_config import ForecastModelConfig
from core.models.forecasters import ServedForecaster, create_forecaster
from core.runtime import baselines
from core.tasks.forecasting import pinball_loss

SMALL = dict(d_model=16, n_heads=2, depth=1, d_ff=32, hidden_size=8, num_layers=1, patch_len=8, patch_stride=4)


@pytest.mark.parametrize("name", ["dlinear", "rnn", "patchtst"])
def test_shapes_sorted_quantiles_and_onnx_parity(name, tmp_path):
    torch.manual_seed(0)
    net = create_forecaster(ForecastModelConfig(name=name, **SMALL), look_back=24, horizon=6, channels=3,
                            mean=[10.0, -5.0, 300.0], std=[2.0, 1.0, 50.0])
    served = ServedForecaster(net).eval()
    history = torch.randn(5, 24, 3) * torch.tensor([2.0, 1.0, 50.0]) + torch.tensor([10.0, -5.0, 300.0])
    with torch.no_grad():
        q = served(history)
    assert q.shape == (5, 6, 3, 3)
    assert torch.all(q[..., 0] <= q[..., 1]) and torch.all(q[..., 1] <= q[..., 2])
    meta = export_onnx(served, (history,), tmp_path / "m.onnx", ["history"], {"app": "forecast"},
                       output_names=["quantiles"])
    assert meta["export"]["parity_max_abs_diff"] < 1e-3
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {"history": history[:1].numpy()})[0]  # batch size other than the export's
    np.testing.assert_allclose(got, q[:1].numpy(), rtol=1e-4, atol=1e-3)


def test_normalisation_is_inside_the_graph():
    """A shifted and scaled series gives the same forecast, shifted and scaled (z-score + RevIN)."""
    torch.manual_seed(0)
    cfg = ForecastModelConfig(name="dlinear")
    net = create_forecaster(cfg, 16, 4, 1, mean=[0.0], std=[1.0])
    big = create_forecaster(cfg, 16, 4, 1, mean=[100.0], std=[10.0])
    big.load_state_dict({**net.state_dict(), "mean": torch.tensor([100.0]), "std": torch.tensor([10.0])})
    x = torch.randn(2, 16, 1)
    with torch.no_grad():
        a, b = ServedForecaster(net)(x), ServedForecaster(big)(x * 10 + 100)
    torch.testing.assert_close(b, a * 10 + 100, rtol=1e-4, atol=1e-3)


def test_pinball_loss_known_values():
    pred = torch.tensor([[[[0.0, 1.0, 2.0]]]])  # (1, 1, 1, 3)
    target = torch.tensor([[[1.0]]])
    q = torch.tensor([0.1, 0.5, 0.9])
    # errors 1, 0, -1 -> 0.1*1, 0, (0.9-1)*(-1)=0.1 -> mean 0.2/3
    assert pinball_loss(pred, target, q).item() == pytest.approx(0.2 / 3)


def test_baselines_on_a_pure_season():
    t = np.arange(200)
    season = np.sin(2 * np.pi * t / 12)[:, None]  # (T, 1)
    x = np.stack([season[s : s + 48] for s in range(0, 100, 7)])  # (N, 48, 1)
    y = np.stack([season[s + 48 : s + 60] for s in range(0, 100, 7)])  # (N, 12, 1)
    np.testing.assert_allclose(baselines.seasonal_naive(x, 12, 12), y, atol=1e-12)
    assert np.all(baselines.last_value(x, 12) == x[:, -1:])
    params = np.array([[0.2], [0.0], [0.1], [0.9]])  # alpha, beta, gamma, phi
    np.testing.assert_allclose(baselines.ets(x, 12, 12, params), y, atol=1e-6)


def test_ets_params_are_fitted_by_statsmodels():
    rng = np.random.default_rng(0)
    t = np.arange(400)
    train = (np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(400))[:, None]
    params = baselines.fit_ets_params(train, 24)
    assert params.shape == (4, 1) and np.all((params >= 0) & (params <= 1))
