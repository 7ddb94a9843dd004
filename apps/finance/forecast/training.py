"""Forecasting (torch side): SeriesDataModule + DLinear / RLinear / RNN / PatchTST with RevIN and quantiles.

The exported graph takes a raw history (batch, L, C), optionally calendar features
(batch, L+H, K) and raw past covariates (batch, L, P), and returns raw-scale quantiles
(batch, H, C, Q): the train-statistics z-score, RevIN and the interval calibration are inside it.
After fit, the interval calibration (validation) and the ETS baseline's smoothing parameters
(training part) are fitted once and stored in the checkpoint and the model.
"""

from __future__ import annotations

import numpy as np
import torch

from deepapps.apps.finance.forecast.auto import check_geometry
from deepapps.apps.finance.forecast.config import ForecastFitConfig
from deepapps.apps.finance.forecast.data import SeriesDataModule
from deepapps.apps.finance.forecast.models import create_forecaster
from deepapps.apps.finance.forecast.models.forecaster import ServedForecaster
from deepapps.apps.finance.forecast.module import ForecastModule, apply_interval_scale, fit_interval_scale
from deepapps.core.contract import Forecast, TensorSpec
from deepapps.core.errors import ConfigError
from deepapps.core.training.auto import announce
from deepapps.core.training.interface import Built, FitRun, PostFit, Saved, Served, Training
from deepapps.core.training.quantize import Int8Method

INPUT_NAME = "history"
CALENDAR_INPUT = "calendar"
COVARIATES_INPUT = "covariates"
OUTPUT_NAME = "quantiles"
FAMILY = "forecasting"
STATISTICS = ("mean", "std", "covariate_mean", "covariate_std")


FORECAST_INT8_REFUSAL = (
    "int8 is not offered for forecast models: measured on DLinear (look-back 32) at 256 windows, dynamic int8 "
    "took 0.19-0.2 ms vs 0.19-0.3 ms fp32 (sub-millisecond either way), static QDQ 0.33 ms (slower)")
"""Measured on the tiny config's fit (builtin:co2), ORT CPU, 2 shared cores."""


class ForecastTraining(Training):
    """Multi-horizon quantile forecasters trained from scratch on the series in front of them."""

    def build(self, cfg: ForecastFitConfig, saved: Saved | None = None, with_data: bool = True) -> Built:
        """Data first (it fixes the channels and the statistics), then the network; from a
        checkpoint the statistics are the checkpoint's, and the data is optional."""
        d, m = cfg.data, cfg.model
        if 0.5 not in m.quantiles or sorted(m.quantiles) != list(m.quantiles) or not all(0 < q < 1 for q in m.quantiles):
            raise ConfigError(f"--model.quantiles {m.quantiles}: need increasing levels in (0, 1) including 0.5")
        dm = SeriesDataModule(d) if with_data else None
        if dm is not None:
            announce(dm.auto_choices)
        check_geometry(d.look_back, d.horizon)
        covariates, calendar = list(d.covariates), list(d.calendar)
        if saved is not None:
            kind, stats = saved.kind, {k: saved.preprocess.get(k) for k in STATISTICS}
        else:
            kind = Forecast(dm.targets, d.look_back, d.horizon, list(m.quantiles), dm.table.freq, dm.season)
            stats = {"mean": dm.mean.tolist(), "std": dm.std.tolist(),
                     "covariate_mean": dm.covariate_mean.tolist() if covariates else None,
                     "covariate_std": dm.covariate_std.tolist() if covariates else None}
        net = create_forecaster(m, d.look_back, d.horizon, len(kind.targets), stats["mean"], stats["std"],
                                len(calendar), len(covariates), stats["covariate_mean"], stats["covariate_std"])
        preprocess = {
            "timestamp": d.timestamp,
            "id_column": d.id_column,
            "fill": d.fill,
            "in_graph": "z-score with training mean/std, RevIN, back to the raw scale, interval calibration, quantiles sorted",
            **stats,
            "calendar": calendar,
            "holidays": d.holidays if "holiday" in calendar else None,
            "covariates": covariates,
        }
        L, H, C = d.look_back, d.horizon, len(kind.targets)
        inputs = [TensorSpec(INPUT_NAME, "float32", ["batch", L, C], "NLC (time, channel)")]
        if calendar:
            inputs.append(TensorSpec(CALENDAR_INPUT, "float32", ["batch", L + H, len(calendar)],
                                     "look-back then horizon steps x calendar features (series.calendar_features)",
                                     {"features": calendar, "holidays": preprocess["holidays"], "known_future": True}))
        if covariates:
            inputs.append(TensorSpec(COVARIATES_INPUT, "float32", ["batch", L, len(covariates)],
                                     "look-back steps x raw past-observed covariates",
                                     {"columns": covariates, "known_future": False}))
        extra_names = tuple(i.name for i in inputs[1:])

        def dummy_inputs(n: int) -> tuple:
            extra = {CALENDAR_INPUT: lambda: torch.rand(n, L + H, len(calendar)) - 0.5,
                     COVARIATES_INPUT: lambda: torch.randn(n, L, len(covariates))}
            return (torch.randn(n, L, C), *(extra[name]() for name in extra_names))

        # outputs are on the raw scale: allow float32 rounding relative to it (1e-5 of |mean| + 10 std)
        mean, std = stats["mean"], stats["std"]
        scale = max(1.0, max(abs(a) + 10 * b for a, b in zip(mean, std))) if mean is not None else 1e3
        return Built(
            net=net, datamodule=dm, kind=kind, inputs=inputs, outputs=[TensorSpec(OUTPUT_NAME, "float32")],
            preprocess=preprocess, weights="random initialisation", family=FAMILY, dummy_inputs=dummy_inputs,
            backbone=m.name, parity_tolerance=1e-5 * scale,
            auto_choices=[c.to_dict() for c in dm.auto_choices] if dm is not None else [],
        )

    def module(self, built: Built, cfg: ForecastFitConfig) -> ForecastModule:
        return ForecastModule(built.net, list(cfg.model.quantiles), cfg.optim, cfg.model.mse_weight)

    def post_fit(self, module: ForecastModule, built: Built, cfg: ForecastFitConfig) -> PostFit:
        """Interval calibration on the validation windows (baked into the export), and the ETS
        baseline's smoothing parameters on the training part (for evaluate, without statsmodels)."""
        from deepapps.apps.finance.forecast.baselines import fit_ets_params
        from deepapps.apps.finance.forecast.series import training_statistics

        dm = built.datamodule
        train, _, _ = training_statistics([s.values for s in dm.table.series], dm.ranges)
        alpha, beta, gamma, phi = fit_ets_params(train, dm.season)
        state = {"ets": {"alpha": alpha.tolist(), "beta": beta.tolist(), "gamma": gamma.tolist(), "phi": phi.tolist(),
                         "season_length": dm.season, "fitted_on": "the training part of every series"}}
        if cfg.model.calibrate and len(dm.index["val"]):
            state["interval_calibration"] = calibrate_intervals(module, dm, list(cfg.model.quantiles))
        return PostFit(state)

    def served(self, built: Built, state: dict) -> Served:
        """Raw-scale quantiles with the calibration in the graph; the state in the contract."""
        kind = built.kind
        calibration = state.get("interval_calibration")
        extra_names = tuple(i.name for i in built.inputs[1:])
        module = ServedForecaster(built.net, extra_names, calibration["scale"] if calibration else None,
                                  kind.median_index)
        kind = Forecast(kind.targets, kind.look_back, kind.horizon, kind.quantiles, kind.freq, kind.season_length,
                        calibration, state.get("ets"))
        return Served(module, kind)

    def artifacts(self, run: FitRun) -> dict:
        """The closed-form linear baseline (ridge map from look-back to horizon, fitted on the
        training windows) scored on the same test windows as the model, beside the other baselines."""
        from deepapps.apps.finance.forecast import baselines
        from deepapps.apps.finance.forecast.runtime import _mase_scale, point_metrics, split_windows
        from deepapps.apps.finance.forecast.series import season_length
        from deepapps.core.runtime.session import load_model

        model, data = load_model(run.onnx_path, "cpu"), str(run.cfg.data.path)
        train, test = split_windows(model, data, "train"), split_windows(model, data, "test")
        if not len(train.x) or not len(test.x):
            return {}
        weights = baselines.fit_linear_map(train.x.astype(np.float64), train.y, seed=run.cfg.seed)
        pred = baselines.linear_map(test.x.astype(np.float64), weights)
        kind = model.contract.forecast
        scale = _mase_scale(test.table, test.ranges, kind.season_length or season_length(test.table.freq))
        linear = point_metrics(pred, test.y, test.mean, test.std, scale) | {
            "method": "ridge least squares, look-back minus its last value -> horizon, shared by channels, "
                      "fitted on the training windows"}
        tested = dict(run.metrics["test"])
        tested["baselines"] = {**tested.get("baselines", {}), "linear_closed_form": linear}
        return {"test": tested}

    def int8_method(self, cfg: ForecastFitConfig) -> Int8Method:
        """Not offered: measured on the tiny DLinear, int8 does not pay (benchmarks/run_all.py)."""
        return Int8Method(None, FORECAST_INT8_REFUSAL)

    def report(self, run: FitRun) -> None:
        from deepapps.apps.finance.forecast.report import write_forecast_report  # matplotlib only when reporting

        write_forecast_report(run)


def calibrate_intervals(module: ForecastModule, dm: SeriesDataModule, quantiles: list[float]) -> dict:
    """Per-step factors on each quantile's distance to the median, fitted on the validation windows."""
    preds, ys = [], []
    module.eval()
    with torch.no_grad():
        for *inputs, y in dm.val_dataloader():
            preds.append(module(*(t.to(module.device) for t in inputs)).float().cpu().numpy())
            ys.append(y.numpy())
    pred, y = np.concatenate(preds).astype(np.float64), np.concatenate(ys).astype(np.float64)
    scale = fit_interval_scale(pred, y, quantiles)
    after = apply_interval_scale(pred, scale, quantiles.index(0.5))
    return {
        "method": "per-step factor on each quantile's distance to the median, fitted on the validation windows",
        "split": "val", "windows": int(len(y)),
        "val_coverage_before": _coverage(pred, y), "val_coverage_after": _coverage(after, y),
        "scale": np.round(scale, 6).tolist(),
    }


def _coverage(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((y >= pred[..., 0]) & (y <= pred[..., -1])))
