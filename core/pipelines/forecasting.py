"""Forecasting family: SeriesDataModule + DLinear / RNN / PatchTST with RevIN and quantile outputs.

The exported graph takes a raw history (batch, L, C) and returns raw-scale quantiles
(batch, H, C, Q): the train-statistics z-score and RevIN are inside it.
"""

from __future__ import annotations

import torch

from core.data.series import SeriesDataModule
from core.errors import ConfigError
from core.forecast_config import ForecastFitConfig
from core.models.forecasters import ServedForecaster, create_forecaster
from core.pipelines import Built
from core.tasks.forecasting import ForecastTask

INPUT_NAME = "history"
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
    net = create_forecaster(m, d.look_back, d.horizon, len(targets), mean, std)
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
        "in_graph": "z-score with training mean/std, RevIN, quantiles sorted, back to the raw scale",
        "mean": mean,
        "std": std,
    }
    L, C = d.look_back, len(targets)
    # outputs are on the raw scale: allow float32 rounding relative to it (1e-5 of |mean| + 10 std)
    scale = max(1.0, max(abs(a) + 10 * b for a, b in zip(mean, std))) if mean is not None else 1e3
    return Built(
        net=net, labels=targets, multilabel=False, datamodule=dm,
        inputs=[{"name": INPUT_NAME, "dtype": "float32", "shape": ["batch", L, C], "layout": "NLC (time, channel)"}],
        preprocess=preprocess, weights="random initialisation",
        dummy_inputs=lambda n: (torch.randn(n, L, C),),
        output_names=[OUTPUT_NAME],
        task_factory=make_task,
        export_wrapper=lambda net, temperature=1.0: ServedForecaster(net),
        parity_tolerance=1e-5 * scale,
    )


def make_task(built: Built, cfg: ForecastFitConfig, config: dict, class_weights=None) -> ForecastTask:
    hparams = {"config": config, "inputs": built.inputs, "preprocess": built.preprocess}
    return ForecastTask(built.net, list(cfg.model.quantiles), cfg.optim, cfg.model.mse_weight, hparams, built.labels)


def post_fit(task: ForecastTask, built: Built, cfg: ForecastFitConfig) -> dict:
    """Metadata keys that differ from the classification default."""
    return {"task": "forecasting", "threshold": None}


def write_report(run_dir, app, built: Built, cfg: ForecastFitConfig, config_yaml: str, metrics: dict, evaluation) -> None:
    from core.report.forecast_report import write_forecast_report  # matplotlib only when reporting

    write_forecast_report(run_dir, app, built, cfg, config_yaml, metrics, evaluation)
