"""Forecasting networks, one file each; `create_forecaster` builds the one a config names."""

from __future__ import annotations

from deepapps.apps.finance.forecast.config import ForecastModelConfig
from deepapps.apps.finance.forecast.models.dlinear import DLinear
from deepapps.apps.finance.forecast.models.forecaster import Exogenous, Forecaster
from deepapps.apps.finance.forecast.models.patchtst import PatchTST
from deepapps.apps.finance.forecast.models.rlinear import RLinear
from deepapps.apps.finance.forecast.models.rnn import RNNForecaster
from deepapps.core.errors import ConfigError


def create_forecaster(cfg: ForecastModelConfig, look_back: int, horizon: int, channels: int,
                      mean: list[float] | None = None, std: list[float] | None = None,
                      n_calendar: int = 0, n_covariates: int = 0,
                      covariate_mean: list[float] | None = None,
                      covariate_std: list[float] | None = None) -> Forecaster:
    """The network named by `cfg.name`, wrapped with RevIN, an optional exogenous head and sorted quantiles."""
    q = len(cfg.quantiles)
    if cfg.name == "dlinear":
        backbone = DLinear(look_back, horizon, q, cfg.kernel_size)
    elif cfg.name == "rlinear":
        backbone = RLinear(look_back, horizon, q, cfg.dropout)
    elif cfg.name == "rnn":
        backbone = RNNForecaster(horizon, q, cfg.cell, cfg.hidden_size, cfg.num_layers, cfg.dropout)
    elif cfg.name == "patchtst":
        backbone = PatchTST(look_back, horizon, q, cfg.patch_len, cfg.patch_stride, cfg.d_model, cfg.n_heads,
                            cfg.depth, cfg.d_ff, cfg.dropout)
    else:
        raise ConfigError(f"--model.name {cfg.name}: choose dlinear, rlinear, rnn or patchtst")
    exogenous = (Exogenous(look_back, horizon, channels, q, n_calendar, n_covariates, cfg.exog_hidden)
                 if n_calendar or n_covariates else None)
    return Forecaster(backbone, channels, cfg.revin, mean, std, exogenous, covariate_mean, covariate_std)
