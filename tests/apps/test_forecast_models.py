"""Forecasting networks, loss and baselines: shapes, ONNX parity, known answers."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
import torch

from deepapps.core.training.export import export_onnx
from deepapps.apps.finance.forecast.config import ForecastModelConfig
from deepapps.apps.finance.forecast.models import create_forecaster
from deepapps.apps.finance.forecast.models.forecaster import ServedForecaster, sort_quantiles
from deepapps.apps.finance.forecast import baselines
from deepapps.apps.finance.forecast.module import apply_interval_scale, fit_interval_scale, pinball_loss

SMALL = dict(d_model=16, n_heads=2, depth=1, d_ff=32, hidden_size=8, num_layers=1, patch_len=8, patch_stride=4)


@pytest.mark.parametrize("name", ["dlinear", "rlinear", "rnn", "patchtst"])
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


@pytest.mark.parametrize("n", [1, 2, 3, 5, 9, 12])  # 12: past the network's size, torch.sort
def test_sort_quantiles_equals_a_sort(n):
    torch.manual_seed(n)
    values = torch.randn(4, 7, 5, n)
    values[..., 0] = values[..., -1]  # ties
    got = torch.stack(sort_quantiles(list(values.unbind(-1))), dim=-1)
    torch.testing.assert_close(got, torch.sort(values, dim=-1).values, rtol=0, atol=0)


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


def test_rlinear_is_one_linear_map_shared_by_the_channels():
    torch.manual_seed(0)
    net = create_forecaster(ForecastModelConfig(name="rlinear", revin=False, dropout=0.0), 12, 4, channels=2).eval()
    x = torch.randn(3, 12, 2)
    swapped = net(x.flip(-1), sort=False).flip(2)  # channel order does not matter: same weights
    np.testing.assert_allclose(net(x, sort=False).detach().numpy(), swapped.detach().numpy(), atol=1e-6)
    assert sum(p.numel() for p in net.parameters()) == 12 * 4 * 3 + 4 * 3


def test_exogenous_inputs_onnx_parity_and_zero_start(tmp_path):
    """Calendar (B, L+H, K) and raw covariates (B, L, P) are graph inputs; an untrained head adds nothing."""
    torch.manual_seed(0)
    cfg = ForecastModelConfig(name="dlinear")
    plain = create_forecaster(cfg, look_back=24, horizon=6, channels=2, mean=[5.0, 0.0], std=[2.0, 1.0])
    net = create_forecaster(cfg, 24, 6, 2, [5.0, 0.0], [2.0, 1.0], n_calendar=3, n_covariates=2,
                            covariate_mean=[100.0, 0.0], covariate_std=[10.0, 1.0])
    net.load_state_dict(plain.state_dict(), strict=False)
    history, calendar, cov = torch.randn(4, 24, 2) + 5, torch.rand(4, 30, 3) - 0.5, torch.randn(4, 24, 2) * 10 + 100
    served = ServedForecaster(net, ("calendar", "covariates"), median_index=1).eval()
    with torch.no_grad():
        np.testing.assert_allclose(served(history, calendar, cov).numpy(), ServedForecaster(plain).eval()(history).numpy(),
                                   atol=1e-5)
        for p in net.exogenous.parameters():
            p.add_(0.1 * torch.randn_like(p))
        moved = served(history, calendar, cov)
        assert not torch.allclose(moved, served(history, calendar * 0, cov))  # the calendar matters now
        assert not torch.allclose(moved, served(history, calendar, cov.flip(1)))  # so does the covariates' path
        # covariates enter on their own per-window scale (like RevIN for the targets)
        torch.testing.assert_close(moved, served(history, calendar, 3 * cov + 10), atol=1e-3, rtol=1e-4)
    meta = export_onnx(served, (history, calendar, cov), tmp_path / "m.onnx", ["history", "calendar", "covariates"],
                       {"app": "forecast"}, output_names=["quantiles"])
    assert meta["export"]["parity_max_abs_diff"] < 1e-3


def test_interval_calibration_reaches_nominal_coverage_on_held_out_data():
    """Quantiles trained too narrow (0.5 sigma instead of 1.28) are widened to cover 0.8."""
    rng = np.random.default_rng(0)
    N, H, C = 400, 5, 2
    sigma = np.linspace(1.0, 3.0, H)[None, :, None]  # uncertainty grows with the step
    median = rng.normal(size=(N, H, C))
    pred = np.stack([median - 0.5 * sigma, median, median + 0.5 * sigma], axis=-1)

    def draw():
        return median + sigma * rng.normal(size=(N, H, C))

    y_cal, y_new = draw(), draw()
    before = np.mean((y_new >= pred[..., 0]) & (y_new <= pred[..., 2]))
    scale = fit_interval_scale(pred, y_cal, [0.1, 0.5, 0.9])
    after = apply_interval_scale(pred, scale, median_index=1)
    covered = np.mean((y_new >= after[..., 0]) & (y_new <= after[..., 2]))
    assert before < 0.45 and abs(covered - 0.8) < 0.02, (before, covered)
    np.testing.assert_allclose(scale[:, 1], 1.0)
    np.testing.assert_allclose(scale[:, [0, 2]], 1.2816 / 0.5, rtol=0.1)  # z_0.9 / 0.5
    served = ServedForecaster(create_forecaster(ForecastModelConfig(name="rlinear"), 8, H, C), (), scale.tolist(), 1)
    with torch.no_grad():  # the exported graph applies the same rescaling
        raw = served.net.eval()(torch.zeros(1, 8, C))
        np.testing.assert_allclose(served(torch.zeros(1, 8, C)).numpy(),
                                   apply_interval_scale(raw.numpy(), scale, 1), rtol=1e-5, atol=1e-6)
