"""Forecasting run report: fan charts, error by horizon step, training curves, model card (no torch)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from deepapps.core.report.model_card import _config_section, _export_section, _table, auto_section, search_section
from deepapps.core.report.plots import _epoch_series, _plot_series, _save, plt
from deepapps.core.runtime.io import write_text
from deepapps.core.training.interface import FitRun


def fan_chart(evaluation, out: Path, channel: int = -1) -> Path:
    """History, actuals and the quantile fan of a few test windows for one channel."""
    k = len(evaluation.histories)
    fig, axes = plt.subplots(k, 1, figsize=(10, 2.6 * k), squeeze=False)
    qs = evaluation.quantiles
    median = qs.index(0.5)
    for ax, x, y, q in zip(axes[:, 0], evaluation.histories, evaluation.actuals, evaluation.forecasts):
        L, H = len(x), len(y)
        past, future = np.arange(-L, 0), np.arange(H)
        ax.plot(past, x[:, channel], color="0.3", lw=1, label="history")
        ax.plot(future, y[:, channel], color="black", lw=1, label="actual")
        ax.fill_between(future, q[:, channel, 0], q[:, channel, -1], color="tab:blue", alpha=0.25,
                        label=f"{qs[0]:g}-{qs[-1]:g} quantiles")
        ax.plot(future, q[:, channel, median], color="tab:blue", lw=1.2, label="median")
        ax.axvline(0, color="0.6", lw=0.8, ls="--")
    axes[0, 0].legend(loc="upper left", fontsize=8, ncol=4)
    axes[0, 0].set_title(f"Test windows: {evaluation.targets[channel]}")
    axes[-1, 0].set_xlabel("step relative to the forecast origin")
    return _save(fig, out)


def error_by_step(evaluation, out: Path) -> Path:
    """MSE (z-scale) at each horizon step, model against the baselines."""
    fig, ax = plt.subplots(figsize=(8, 4))
    for name, values in evaluation.mse_by_step.items():
        ax.plot(np.arange(1, len(values) + 1), values, lw=2 if name == "model" else 1, label=name)
    ax.set_xlabel("horizon step")
    ax.set_ylabel("MSE (z-scale)")
    ax.set_title("Error by horizon step (test windows)")
    ax.legend()
    return _save(fig, out)


def curves(metrics_csv: Path, out: Path) -> Path | None:
    series = _epoch_series(metrics_csv, ["train/loss_epoch", "val/loss", "val/mse"])
    if not series:
        return None
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    _plot_series(a, series, {"train/loss_epoch": "train", "val/loss": "val"}, "pinball loss")
    _plot_series(b, series, {"val/mse": "val mse"}, "MSE (z-scale)")
    return _save(fig, out)


def backtest_table(test: dict) -> str:
    """Model and baselines side by side on the same windows."""
    names = ("mse", "mae", "mase", "smape")
    rows = [["model", *(_f(test.get(n)) for n in names)]]
    rows += [[b, *(_f(m.get(n)) for n in names)] for b, m in test.get("baselines", {}).items()]
    return _table(["forecaster", "MSE (z)", "MAE (z)", "MASE", "sMAPE %"], rows)


def _auto_lines(choices: list[dict]) -> list[str]:
    if not choices:
        return []
    heading, body = auto_section(choices)
    return [f"## {heading}", "", body, ""]


def write_forecast_report(run: FitRun) -> Path:
    run_dir, app, built, cfg, metrics, evaluation = run.run_dir, run.app, run.built, run.cfg, run.metrics, run.evaluation
    plots_dir = run_dir / "plots"
    plots = [
        curves(run_dir / "csv" / "metrics.csv", plots_dir / "training_curves.png"),
        fan_chart(evaluation, plots_dir / "fan_chart.png"),
        error_by_step(evaluation, plots_dir / "error_by_step.png"),
    ]
    data, test = built.datamodule.summary(), metrics["test"]
    params = sum(p.numel() for p in built.net.parameters())
    lines = [
        f"# deepapps {app.name}: {cfg.model.name} on {cfg.data.path}",
        "",
        f"**Summary:** a {cfg.model.name} forecaster of {len(data['targets'])} series column(s) "
        f"({', '.join(data['targets'][:8])}), {cfg.data.look_back} -> {cfg.data.horizon} steps at {data['freq']}, "
        f"quantiles {cfg.model.quantiles}; test MSE {test['mse']:.4f}, MAE {test['mae']:.4f} (z-scale), "
        f"coverage {test['coverage']:.3f} of nominal {test['nominal_coverage']:.2f}.",
        "",
        "## Data",
        "",
        f"Source: `{data['source']}`",
        "",
        _table(["split", "windows"], [[k, v] for k, v in data["sizes"].items()]),
        "",
        *(f"- {n}" for n in data["notes"]),
        "",
        "## Model",
        "",
        _table(["field", "value"], [["network", cfg.model.name], ["RevIN", cfg.model.revin],
                                    ["parameters", f"{params:,}"], ["loss", "pinball" + (
                                        f" + {cfg.model.mse_weight} x MSE(median)" if cfg.model.mse_weight else "")]]),
        "",
        "## Backtest (ONNX Runtime, every test window, stride 1)",
        "",
        backtest_table(test),
        "",
        f"Interval {test['nominal_coverage']:.2f} nominal: coverage {test['coverage']:.4f}, mean width "
        f"{test['interval_width']:.4f} (z-scale). Torch test MSE {metrics['test_torch'].get('mse', float('nan')):.4f}, "
        f"validation MSE {metrics['val'].get('mse', float('nan')):.4f}.",
        "",
        *_calibration_lines(metrics),
        *_auto_lines(built.auto_choices),
        *_search_lines(run.search),
        "## Plots",
        "",
        *(f"![{p.stem}](plots/{p.name})\n" for p in plots if p),
        _config_section(run.config_yaml),
        "",
        _export_section(metrics.get("export", {}), "model.onnx"),
        "",
        "## Intended use and limitations",
        "",
        "- Multi-horizon forecasts with prediction intervals for series like the training data, at the same frequency.",
        "- Intervals are quantiles learnt on the training period (rescaled on the validation period when calibrated); "
        "check coverage above before trusting them.",
        (f"- Inputs besides the targets' history: past covariates {cfg.data.covariates or 'none'}, "
         f"calendar features {cfg.data.calendar or 'none'}"
         + (f" (holidays of {cfg.data.holidays})." if "holiday" in cfg.data.calendar else ".")),
        "- The scores come from one held-out period; regime changes after it are not covered.",
    ]
    return write_text(run_dir / "model_card.md", "\n".join(lines) + "\n")


def _search_lines(search: dict | None) -> list[str]:
    """The hyperparameter search that chose the config (a `tune --tune.refit` run), else nothing."""
    if not search:
        return []
    heading, body = search_section(search)
    return [f"## {heading}", "", body, ""]


def _calibration_lines(metrics: dict) -> list[str]:
    """Coverage before/after the validation-fitted interval calibration, on validation and test."""
    calibration = metrics.get("post_fit", {}).get("interval_calibration")
    test = metrics["test"]
    if not calibration:
        return ["Intervals not calibrated (`--model.calibrate false` or no validation windows).", ""]
    rows = [["validation (fitted here)", _f(calibration["val_coverage_before"]), _f(calibration["val_coverage_after"])],
            ["test", _f(test.get("coverage_uncalibrated")), _f(test["coverage"])]]
    return ["### Interval calibration", "",
            f"Method: {calibration['method']} ({calibration['windows']} windows); nominal {test['nominal_coverage']:.2f}.", "",
            _table(["split", "coverage before", "coverage after"], rows), ""]


def _f(value) -> str:
    return "—" if value is None else f"{value:.4f}"
