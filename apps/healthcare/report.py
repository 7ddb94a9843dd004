"""The healthcare run report: the core's plots and card, plus calibration, threshold and
per-class sections, a reliability diagram and the confusion matrix at the operating threshold."""

from __future__ import annotations

from pathlib import Path

from deepapps.apps.healthcare.signals import ucr_set
from deepapps.core.report.model_card import _table
from deepapps.core.report.fairness import image_attributes_note
from deepapps.core.report.plots import confusion_matrix_plot, reliability_plot
from deepapps.core.report.run_report import write_run_report
from deepapps.core.training.interface import FitRun

INTENDED_USE = (
    "**Research use only. This is not a medical device** and has not been cleared or approved by any "
    "regulator. It may support research on {what} by people who can check its outputs; it must not be "
    "used to diagnose, treat or triage patients, or as the sole basis for any clinical decision."
)


def write_healthcare_report(run: FitRun) -> Path:
    run_dir, built, cfg, metrics, evaluation = run.run_dir, run.built, run.cfg, run.metrics, run.evaluation
    test = evaluation.metrics
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    extra = [reliability_plot(test["reliability"], test["ece"], plots_dir / "reliability.png",
                              "Reliability diagram (test split, shipped model)")]
    point = test.get("at_threshold")
    if evaluation.problem == "binary" and point:
        k = evaluation.labels.index(point["positive_label"])
        order = [1 - k, k]  # negative first
        cells = {(k, k): point["tp"], (k, 1 - k): point["fn"], (1 - k, 1 - k): point["tn"], (1 - k, k): point["fp"]}
        matrix = [[cells[(t, p)] for p in order] for t in order]
        extra.append(confusion_matrix_plot(matrix, [evaluation.labels[i] for i in order],
                                           plots_dir / "confusion_matrix_at_threshold.png"))
    clinical = metrics.get("post_fit", {}).get("clinical", {})
    labels = evaluation.labels
    signal = cfg.task == "signal"
    info = {
        "title": f"deepapps healthcare{' ECG' if signal else ''}: {cfg.model.backbone} on {cfg.data.path}",
        "intended_use": INTENDED_USE.format(what=", ".join(labels)),
        "limitations": signal_limitations(cfg) if signal else limitations(cfg, built),
        "sections": [
            ("Signal classification metrics (test split, shipped ONNX model)", signal_section(test, built))
            if signal else ("MedMNIST protocol (test split, shipped ONNX model)", protocol_section(test)),
            ("Per-class metrics (test split)", per_class_section(test, labels)),
            ("Operating threshold", threshold_section(clinical.get("threshold", {}), test, metrics)),
            ("Calibration", calibration_section(clinical.get("calibration", {}), test)),
        ],
    }
    if signal:
        info["model"] = {"backbone": cfg.model.backbone, "weights": built.weights,
                         "parameters": sum(p.numel() for p in built.net.parameters()),
                         "front end (in the graph)": "; ".join(built.preprocess["in_graph"]) or "none",
                         "input": f"float32 (batch, {built.preprocess['length']}) at a nominal "
                                  f"{built.preprocess['sample_rate_hz']:g} Hz"}
    return write_run_report(run, info=info, extra_plots=extra, fairness_note=image_attributes_note(cfg.data))


def signal_section(test: dict, built) -> str:
    rows = [["accuracy", _f(test.get("accuracy"))], ["macro-F1", _f(test.get("macro_f1"))],
            ["balanced accuracy (mean per-class recall)", _f(test.get("balanced_accuracy"))],
            ["AUC (one-vs-rest, macro)", _f(test.get("auroc"))], ["signals", str(test.get("n"))]]
    scored = test.get("classes_scored") or []
    return ("The classes are imbalanced: read macro-F1 and balanced accuracy beside accuracy. Computed by ONNX "
            "Runtime on the exported file, on the test split that fit held out; macro-F1 averages the classes "
            f"present in the split or predicted ({', '.join(scored)}).\n\n" + _table(["metric", "value"], rows))


def signal_limitations(cfg) -> list[str]:
    return [
        f"Trained and tested on `{cfg.data.path}` only"
        + (": UCR ECG5000 beats all come from one patient with severe congestive heart failure, labelled by "
           "automated annotation" if ucr_set(cfg.data.path) == "ecg5000" else "")
        + ". Other patients, leads, devices and beat-segmentation methods can score much lower. Validate locally "
        "before any research use.",
        "Inputs must be single beats cut and resampled like the training data (same length, same alignment); "
        f"the sampling rate {cfg.signal.sample_rate:g} Hz is nominal, not measured.",
        "Rare classes have few examples (a handful in validation and test), so their per-class numbers are "
        "very uncertain.",
        "Calibration and any operating threshold were fitted on the validation split; they hold only for data like it.",
        "The model only knows its training labels: every beat gets one of them, including artefacts and "
        "rhythms it has never seen.",
    ]


def protocol_section(test: dict) -> str:
    rows = [["ACC (argmax)", _f(test.get("accuracy"))], ["AUC (one-vs-rest, macro)", _f(test.get("auroc"))],
            ["images", str(test.get("n"))]]
    return ("ACC and AUC as MedMNIST v2 computes them (Yang et al. 2023), on the test split that fit held out, "
            "computed by ONNX Runtime on the exported file.\n\n" + _table(["metric", "value"], rows))


def per_class_section(test: dict, labels: list[str]) -> str:
    rows = []
    for name in labels:
        m = test.get("per_class", {}).get(name, {})
        rows.append([name, str(m.get("support")), _f(m.get("auroc")), _f(m.get("recall")), _f(m.get("specificity")),
                     _f(m.get("precision")), _f(m.get("f1"))])
    return ("One-vs-rest; sensitivity (recall) and specificity at the most probable class.\n\n"
            + _table(["class", "n", "AUC", "sensitivity", "specificity", "precision", "F1"], rows))


def threshold_section(info: dict, test: dict, metrics: dict) -> str:
    point = test.get("at_threshold")
    if not point:
        return "Multi-class task: predict reports the most probable class; no threshold is applied."
    if "positive_label" not in info:  # multi-label: one operating point per label
        rows = [[name, _f(p["threshold"]), _f(p["sensitivity"]), _f(p["specificity"])] for name, p in point.items()]
        return (f"One threshold per label, chosen by `{info.get('rule')}` on the {info.get('chosen_on')}.\n\n"
                + _table(["label", "threshold", "test sensitivity", "test specificity"], rows))
    val = info.get("val", {})
    rows = [[split, _f(p.get("sensitivity")), _f(p.get("specificity")), _f(p.get("ppv")), _f(p.get("npv")),
             _f(p.get("accuracy"))] for split, p in (("validation", val), ("test", point or {}))]
    return (
        f"Predict labels an image `{info['positive_label']}` when its calibrated probability of "
        f"`{info['positive_label']}` is at least **{_f(metrics['post_fit']['threshold'])}**. The threshold was "
        f"chosen by the rule `{info.get('rule')}` on the {info.get('chosen_on')}, never on the test split, and is "
        "stored in the model's metadata (`threshold`); `predict --threshold` overrides it.\n\n"
        + _table(["split", "sensitivity", "specificity", "PPV", "NPV", "accuracy"], rows)
    )


def calibration_section(calibration: dict, test: dict) -> str:
    if not calibration:
        return ""
    rows = [["validation (before)", _f(calibration.get("val_ece_before")), _f(calibration.get("val_nll_before"))],
            ["validation (after)", _f(calibration.get("val_ece_after")), _f(calibration.get("val_nll_after"))],
            ["test (shipped model)", _f(test.get("ece")), "—"]]
    return (
        f"Method: {calibration.get('method')}. Temperature T = {_f(calibration.get('temperature'))}: the exported "
        "graph divides the logits by T before the softmax, so every probability it gives is calibrated. "
        f"Test Brier score {_f(test.get('brier'))}. ECE: 15 equal-width bins of the top-class probability "
        "(see the reliability diagram).\n\n" + _table(["split", "ECE", "NLL"], rows)
    )


def limitations(cfg, built) -> list[str]:
    return [
        f"Trained and tested on `{cfg.data.path}` only; images from other hospitals, scanners, protocols or "
        "populations can score much lower. Validate locally before any research use.",
        "MedMNIST images are 28x28 (or small) downsampled crops: far less detail than a diagnostic image.",
        "The operating threshold trades sensitivity for specificity as chosen on the validation split; "
        "the prevalence in new data changes PPV and NPV.",
        "Calibration was fitted on the validation split; it holds only for data like it.",
        "The model only knows its training labels: every input gets one of them, including images of other "
        "body parts, modalities or findings.",
    ]


def _f(value) -> str:
    if value is None:
        return "—"
    return f"{value:.4f}" if isinstance(value, float) else str(value)
