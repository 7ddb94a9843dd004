"""Forecasting family: SeriesDataModule + DLinear / RLinear / RNN / PatchTST with RevIN and quantile outputs.

The exported graph takes a raw history (batch, L, C), optionally calendar features
(batch, L+H, K) and raw past covariates (batch, L, P), and returns raw-scale quantiles
(batch, H, C, Q): the train-statistics z-score, RevIN and the interval calibration are inside it.
"""

from __future__ import annotations

import numpy as np
import torch

from deepapps.core.data.series import SeriesDataModule
from deepapps.core.errors import ConfigError
from deepapps.core.forecast_config import ForecastFitConfig
from deepapps.core.models.forecasters import ServedForecaster, create_forecaster
from deepapps.core.pipelines import Built
from deepapps.core.tasks.forecasting import ForecastTask, apply_interval_scale, fit_interval_scale

INPUT_NAME = "history"
CALENDAR_INPUT = "calendar"
COVARIATES_INPUT = "covariates"
OUTPUT_NAME = "quantiles"


def build(
    cfg: ForecastFitConfig, pretrained: str | None = None, labels: list[str] | None = None,
    multilabel: bool = False, with_data: bool = True,
) -> Built:
    """Data first (it fixes the channels and the statistics), then the network.

    Args:
        cfg: the run config.
        pretrained: unused (forecasters train from scratch).
        labels: target columns (from a checkpoint); None reads them from the data.
        multilabel: unused.
        with_data: read the series (False for export from a checkpoint without data).
    """
    d, m = cfg.data, cfg.model
    if 0.5 not in m.quantiles or sorted(m.quantiles) != list(m.quantiles) or not all(0 < q < 1 for q in m.quantiles):
        raise ConfigError(f"--model.quantiles {m.quantiles}: need increasing levels in (0, 1) including 0.5")
    if d.look_back < 2 or d.horizon < 1:
        raise ConfigError(f"--data.look_back {d.look_back} / --data.horizon {d.horizon}: need L >= 2 and H >= 1")
    dm = SeriesDataModule(d) if with_data else None
    targets = dm.targets if dm is not None else list(labels or d.target or [])
    if not targets:
        raise ConfigError("the target columns are unknown without data: give --data.target")
    mean = dm.mean.tolist() if dm is not None else None
    std = dm.std.tolist() if dm is not None else None
    covariates, calendar = list(d.covariates), list(d.calendar)
    cov_mean = dm.covariate_mean.tolist() if dm is not None and covariates else None
    cov_std = dm.covariate_std.tolist() if dm is not None and covariates else None
    net = create_forecaster(m, d.look_back, d.horizon, len(targets), mean, std, len(calendar), len(covariates),
                            cov_mean, cov_std)
    freq = dm.table.freq if dm is not None else d.freq
    preprocess = {
        "timestamp": d.timestamp,
        "id_column": d.id_column,
        "targets": targets,
        "freq": freq,
        "fill": d.fill,
        "look_back": d.look_back,
        "horizon": d.horizon,
        "quantiles": list(m.quantiles),
        "season_length": dm.season if dm is not None else d.season_length,
        "in_graph": "z-score with training mean/std, RevIN, back to the raw scale, interval calibration, quantiles sorted",
        "mean": mean,
        "std": std,
        "calendar": calendar,
        "holidays": d.holidays if "holiday" in calendar else None,
        "covariates": covariates,
        "covariate_mean": cov_mean,
        "covariate_std": cov_std,
    }
    L, H, C = d.look_back, d.horizon, len(targets)
    inputs = [{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", L, C], "layout": "NLC (time, channel)"}]
    if calendar:
        inputs.append({"name": CALENDAR_INPUT, "dtype": "float32", "shape": ["batch", L + H, len(calendar)],
                       "layout": "look-back then horizon steps x calendar features (runtime.series.calendar_features)",
                       "features": calendar, "holidays": preprocess["holidays"], "known_future": True})
    if covariates:
        inputs.append({"name": COVARIATES_INPUT, "dtype": "float32", "shape": ["batch", L, len(covariates)],
                       "layout": "look-back steps x raw past-observed covariates", "columns": covariates,
                       "known_future": False})
    extra_names = tuple(i["name"] for i in inputs[1:])

    def dummy_inputs(n: int) -> tuple:
        extra = {CALENDAR_INPUT: lambda: torch.rand(n, L + H, len(calendar)) - 0.5,
                 COVARIATES_INPUT: lambda: torch.randn(n, L, len(covariates))}
        return (torch.randn(n, L, C), *(extra[name]() for name in extra_names))

    def export_wrapper(net, temperature: float = 1.0) -> ServedForecaster:
        calibration = preprocess.get("interval_calibration")
        scale = calibration["scale"] if calibration else None
        return ServedForecaster(net, extra_names, scale, list(m.quantiles).index(0.5))

    # outputs are on the raw scale: allow float32 rounding relative to it (1e-5 of |mean| + 10 std)
    scale = max(1.0, max(abs(a) + 10 * b for a, b in zip(mean, std))) if mean is not None else 1e3
    return Built(
        net=net, labels=targets, multilabel=False, datamodule=dm,
        inputs=inputs,
        preprocess=preprocess, weights="random initialisation",
        dummy_inputs=dummy_inputs,
        output_names=[OUTPUT_NAME],
        task_factory=make_task,
        export_wrapper=export_wrapper,
        parity_tolerance=1e-5 * scale,
    )


def make_task(built: Built, cfg: ForecastFitConfig, config: dict, class_weights=None) -> ForecastTask:
    hparams = {"config": config, "inputs": built.inputs, "preprocess": built.preprocess}
    return ForecastTask(built.net, list(cfg.model.quantiles), cfg.optim, cfg.model.mse_weight, hparams, built.labels)


def post_fit(task: ForecastTask, built: Built, cfg: ForecastFitConfig) -> dict:
    """Interval calibration on the validation windows (baked into the export), and metadata keys
    that differ from the classification default."""
    extra = {"task": "forecasting", "threshold": None}
    dm = built.datamodule
    if not cfg.model.calibrate or dm is None or len(dm.index["val"]) == 0:
        return extra
    preds, ys = [], []
    task.eval()
    with torch.no_grad():
        for *inputs, y in dm.val_dataloader():
            preds.append(task(*(t.to(task.device) for t in inputs)).float().cpu().numpy())
            ys.append(y.numpy())
    pred, y = np.concatenate(preds).astype(np.float64), np.concatenate(ys).astype(np.float64)
    qs = list(cfg.model.quantiles)
    scale = fit_interval_scale(pred, y, qs)
    after = apply_interval_scale(pred, scale, qs.index(0.5))
    calibration = {
        "method": "per-step factor on each quantile's distance to the median, fitted on the validation windows",
        "split": "val", "windows": int(len(y)),
        "val_coverage_before": _coverage(pred, y), "val_coverage_after": _coverage(after, y),
        "scale": np.round(scale, 6).tolist(),
    }
    return extra | {"interval_calibration": calibration}  # export puts it on `built` (restore_post_fit)


def restore_post_fit(built: Built, extra: dict) -> None:
    """The calibration into the graph and its metadata; core.training.export_built calls this
    before every export (fit, and `export --ckpt` with post_fit from the run's metrics.json)."""
    if extra.get("interval_calibration"):
        built.preprocess["interval_calibration"] = extra["interval_calibration"]


def _coverage(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((y >= pred[..., 0]) & (y <= pred[..., -1])))


def write_report(run_dir, app, built: Built, cfg: ForecastFitConfig, config_yaml: str, metrics: dict, evaluation) -> None:
    from deepapps.core.report.forecast_report import write_forecast_report  # matplotlib only when reporting

    write_forecast_report(run_dir, app, built, cfg, config_yaml, metrics, evaluation)
