"""Everything a reviewer reads after fit: plots/*.png, samples/ and model_card.md."""

from __future__ import annotations

from pathlib import Path

from deepapps.core.report.model_card import auto_section, privacy_section, search_section, write_model_card
from deepapps.core.report.plots import confusion_matrix_plot, roc_plot, training_curves
from deepapps.core.training.interface import FitRun


def write_run_report(run: FitRun, info: dict | None = None, extra_plots: list[Path] = (),
                     fairness_note: str = "") -> Path:
    """Plots from the logs and the ONNX test evaluation, sample inputs, and the model card.

    Args:
        run: the fit, after its model and metrics are final.
        info: model-card keys that replace the defaults (e.g. `intended_use`, `sections`).
        extra_plots: PNG files the app drew itself, shown after the shared plots.
        fairness_note: a sentence for the fairness section (metrics.json's `fairness`, drawn
            when present), e.g. which columns are sensitive attributes and which is not.
    """
    run_dir, built, evaluation, cfg = run.run_dir, run.built, run.evaluation, run.cfg
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
    fairness = run.metrics.get("fairness")  # data.group_columns (core.fairness.served_fairness)
    if fairness:
        from deepapps.core.report.fairness import fairness_plot

        plots.append(fairness_plot(fairness["test"], plots_dir / "fairness_test.png", "Fairness by group (test)"))
    plots += list(extra_plots)
    samples = built.write_samples(run_dir / "samples") if built.write_samples is not None else 0
    card = {
        "app": run.app.name,
        "title": f"deepapps {run.app.name}: {built.backbone} on {cfg.data.path}",
        "data": built.datamodule.summary(),
        "model": {
            "backbone": built.backbone,
            "weights": built.weights,
            "parameters": sum(p.numel() for p in built.net.parameters()),
        },
        "config_yaml": run.config_yaml,
        "metrics": {k: _headline(run.metrics[k]) for k in ("val", "test_torch", "test") if k in run.metrics},
        "export": run.metrics.get("export", {}),
        "plots": [str(p.relative_to(run_dir)) for p in plots if p],
        "onnx": "model.onnx",
    }
    if samples:
        card["data"]["notes"] = card["data"]["notes"] + [
            f"{samples} test inputs were saved to samples/ to try `deepapps {run.app.name} predict` on."
        ]
    card |= info or {}
    if built.auto_choices:
        card["sections"] = [auto_section(built.auto_choices), *(card.get("sections") or [])]
    if fairness:
        from deepapps.core.report.fairness import fairness_section

        card["sections"] = [*(card.get("sections") or []), fairness_section(
            fairness, f"label {fairness['test']['positive']!r}", thresholds=run.metrics.get("fairness_thresholds"),
            note=fairness_note)]
    if privacy := run.post_fit.state.get("privacy"):  # a DP-SGD fit (core.training.privacy)
        card["sections"] = [*(card.get("sections") or []), privacy_section(privacy)]
    if run.search:
        card["sections"] = [*(card.get("sections") or []), search_section(run.search)]
    if "int8" in run.metrics:  # fit --export_int8: the copy's measurement, or why it was refused
        int8 = run.metrics["int8"]
        card["sections"] = [*(card.get("sections") or []), ("int8 quantization", int8.get("markdown") or int8["refused"])]
    return write_model_card(run_dir / "model_card.md", card)


def _headline(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if isinstance(v, (int, float)) or v is None}
