"""Forecast app: multi-horizon quantile forecasts (DLinear, RNN, PatchTST) exported to ONNX."""

from pathlib import Path

from deepapps.core.registry import AppCommand, AppSpec

APP = AppSpec(
    name="forecast",
    help="time-series forecasting with prediction intervals: DLinear/RNN/PatchTST, ONNX, backtests",
    family="forecasting",
    config_class="deepapps.apps.finance.forecast.config:ForecastFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    training="deepapps.apps.finance.forecast.training:ForecastTraining",
    serving="deepapps.apps.finance.forecast.runtime:ForecastServing",
    commands=(
        AppCommand("explain", "integrated-gradients attributions over the look-back window from a checkpoint (Captum)",
                   "deepapps.apps.finance.forecast.explain:main"),
    ),
)
