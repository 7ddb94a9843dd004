"""Forecast app: multi-horizon quantile forecasts (DLinear, RNN, PatchTST) exported to ONNX."""

from pathlib import Path

from deepapps.core.registry import AppSpec

APP = AppSpec(
    name="forecast",
    help="time-series forecasting with prediction intervals: DLinear/RNN/PatchTST, ONNX, backtests",
    task="forecasting",
    config_class="deepapps.core.forecast_config:ForecastFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    pipeline="deepapps.core.pipelines.forecasting",
    runtime="deepapps.core.runtime.forecasting",
)
