"""Everything a reviewer reads after fit: plots/*.png, samples/ and model_card.md."""

from __future__ import annotations

from pathlib import Path

from deepapps.core.pipelines import Built
from deepapps.core.registry import AppSpec
from deepapps.core.report.model_card import write_model_card
from deepapps.core.report.plots import confusion_matrix_plot, roc_plot, training_curves


def write_run_report(
    run_dir: Path, app: AppSpec, built: Built, cfg, config_yaml: str, metrics: dict, evaluation,
    info: dict | None = None, extra_plots: list[Path] = (),
) -> Path:
    """Plots from the logs and the ONNX test evaluation, sample inputs, and the model card.

    Args:
        info: model-card keys that replace the defaults (e.g. `intended_use`, `sections`).
        extra_plots: PNG files the app drew itself, shown after the shared plots.
    """
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    plots = [
        training_curves(run_dir / "csv" / "metrics.csv", plots_dir / "training_curves.png"),
        roc_plot(evaluation.problem, evaluation.targets, evaluation.probs, evaluation.labels, plots_dir / "roc.png"),
    ]
    if "confusion_matrix" in evaluation.metrics:
        plots.append(confusion_matrix_plot(
            evaluation.metrics["confusion_matrix"], evaluation.labels, plots_dir / "confusion_matrix.png"
        ))
    plots += list(extra_plots)
    dm = built.datamodule
    samples = dm.write_samples(run_dir / "samples") if hasattr(dm, "write_samples") else 0
    card = {
        "app": app.name,
        "title": f"deepapps {app.name}: {cfg.model.backbone} on {cfg.data.path}",
        "data": dm.summary(),
        "model": {
            "backbone": cfg.model.backbone,
            "weights": built.weights,
            "parameters": sum(p.numel() for p in built.net.parameters()),
        },
        "config_yaml": config_yaml,
        "metrics": {k: _headline(metrics[k]) for k in ("val", "test_torch", "test") if k in metrics},
        "export": metrics.get("export", {}),
        "plots": [str(p.relative_to(run_dir)) for p in plots if p],
        "onnx": "model.onnx",
    }
    if samples:
        card["data"]["notes"] = card["data"]["notes"] + [
            f"{samples} test inputs were saved to samples/ to try `deepapps {app.name} predict` on."
        ]
    return write_model_card(run_dir / "model_card.md", card | (info or {}))


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}
