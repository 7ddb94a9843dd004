"""Fraud run report: PR/ROC curves (model vs baselines), score distributions, comparison table, model card."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import average_precision_score, precision_recall_curve, roc_auc_score, roc_curve  # noqa: E402

from deepapps.apps.finance.fraud.baselines import NAMES  # noqa: E402
from deepapps.core.report.fairness import fairness_plot, fairness_section  # noqa: E402
from deepapps.core.report.model_card import privacy_section, search_section, write_model_card  # noqa: E402
from deepapps.core.report.plots import training_curves  # noqa: E402
from deepapps.core.runtime.io import atomic_write  # noqa: E402
from deepapps.core.training.interface import FitRun  # noqa: E402

HEADLINE = ("auprc", "auroc")


def comparison(metrics: dict) -> dict:
    """Test metrics side by side: the exported model (ONNX Runtime) and each baseline."""
    def flat(m: dict) -> dict:
        d = m.get("decision", {})
        out = {k: v for k, v in m.items() if isinstance(v, (int, float)) and k not in ("n", "frauds")}
        return out | {"cost_per_1000 @ val threshold": d.get("cost_per_1000"), "recall @ threshold": d.get("recall"),
                      "precision @ threshold": d.get("precision")}

    table = {"model (ONNX)": flat(metrics["test"])}
    for name, by_split in metrics.get("post_fit", {}).get("baselines", {}).items():
        table[NAMES.get(name, name)] = flat(by_split["test"])
    return table


def write_fraud_report(run: FitRun) -> Path:
    """Reads the run (its metrics hold `comparison_test` and `feature_importance`, see
    FraudTraining.artifacts); writes the plots and model_card.md."""
    run_dir, built, cfg, metrics, evaluation = run.run_dir, run.built, run.cfg, run.metrics, run.evaluation
    plots_dir = run_dir / "plots"
    plots_dir.mkdir(exist_ok=True)
    y, curves = evaluation.targets, {"model (ONNX)": evaluation.scores}
    baseline_targets = run.post_fit.scores.get("baseline_targets", {}).get("test")  # their rows' order (streamed)
    for name, by_split in run.post_fit.scores.get("baseline_scores", {}).items():
        curves[NAMES.get(name, name)] = by_split["test"] if baseline_targets is None else (baseline_targets, by_split["test"])
    plots = [
        training_curves(run_dir / "csv" / "metrics.csv", plots_dir / "training_curves.png"),
        _pr_plot(y, curves, plots_dir / "pr_curve.png"),
        _roc_plot(y, curves, plots_dir / "roc.png"),
        _score_plot(y, evaluation.scores, metrics.get("post_fit", {}).get("threshold"), plots_dir / "score_distribution.png"),
    ]
    importance = metrics["feature_importance"]
    plots.append(_importance_plot(importance, plots_dir / "feature_importance.png"))
    fairness = metrics.get("fairness")
    if fairness:
        plots.append(fairness_plot(fairness["test"], plots_dir / "fairness_test.png", "Fairness by group (test)"))
    summary = built.datamodule.summary()
    card_metrics = {"val": _scalars(metrics["val"]), "test_torch": _scalars(metrics["test_torch"])}
    card_metrics |= {f"test: {k}": v for k, v in metrics["comparison_test"].items()}
    threshold = metrics.get("post_fit", {}).get("threshold")
    info = {
        "app": run.app.name,
        "title": f"deepapps fraud: {cfg.model.arch} on {cfg.data.path}",
        "data": summary,
        "model": {"architecture": cfg.model.arch, "weights": built.weights,
                  "parameters": sum(p.numel() for p in built.net.parameters()),
                  "decision threshold": threshold,
                  "costs": f"missed fraud {cfg.decision.cost_missed:g}, review {cfg.decision.cost_review:g}"},
        "config_yaml": run.config_yaml,
        "metrics": card_metrics,
        "export": metrics.get("export", {}),
        "plots": [str(p.relative_to(run_dir)) for p in plots if p],
        "onnx": "model.onnx",
        "sections": [("Feature importance (integrated gradients, test)", _importance_text(importance)),
                     *([fairness_section(fairness, f"label {built.datamodule.spec.positive!r}",
                                         built.datamodule.columns.features, metrics.get("fairness_thresholds"))]
                       if fairness else []),
                     *([group_thresholds_section(metrics["group_thresholds"])] if metrics.get("group_thresholds") else []),
                     *([privacy_section(run.post_fit.state["privacy"])] if run.post_fit.state.get("privacy") else []),
                     *([search_section(run.search)] if run.search else [])],
        "intended_use": (
            "Ranking card or payment transactions by fraud risk for review. The decision column flags rows whose "
            "score is at or above a threshold chosen on validation to minimise expected cost "
            f"(missed fraud {cfg.decision.cost_missed:g} vs review {cfg.decision.cost_review:g}); change the costs and refit, "
            "or pass --threshold to predict, when yours differ. A person reviews flagged transactions."
        ),
        "limitations": [
            "AUPRC and precision depend on the fraud rate of the evaluated data: the numbers hold for this "
            "data's class balance only (see Data).",
            "Columns 'test: model (ONNX)' and 'test: <baseline>' are the same test rows; baselines use the same "
            "split and features.",
            "Fraud patterns drift; re-check the threshold and metrics on recent data before relying on them.",
            "Categories unseen in training are scored as `unknown`; predict counts them.",
        ],
    }
    return write_model_card(run_dir / "model_card.md", info)


def feature_importance(net, dm, rows: int = 512) -> dict:
    """Mean |integrated-gradients attribution| of the fraud log-odds per column, on up to `rows`
    test rows (explain.py; the same attributions `deepapps fraud explain` gives per row)."""
    from deepapps.apps.finance.fraud.explain import global_importance

    enc = dm.encoded["test"]
    pick = np.random.default_rng(0).permutation(len(enc.numeric))[:rows]
    return {"rows": int(len(pick)), "mean_abs_attribution": global_importance(
        net.cpu().eval(), dm.spec, enc.numeric[pick], enc.categorical[pick])}


def _importance_text(importance: dict) -> str:
    values = importance["mean_abs_attribution"]
    total = sum(values.values()) or 1.0
    rows = "\n".join(f"| {name} | {v:.4f} | {v / total:.1%} |" for name, v in values.items())
    return (f"Mean absolute attribution of each column to the fraud log-odds over {importance['rows']} test rows, "
            "against a baseline row (training medians, nothing missing, most frequent categories). "
            "Per-transaction attributions: `deepapps fraud explain --model model.onnx INPUT --out DIR` (Captum feature ablation or integrated gradients).\n\n"
            f"| column | mean abs attribution | share |\n|---|---|---|\n{rows}")


def _importance_plot(importance: dict, out: Path) -> Path:
    values = importance["mean_abs_attribution"]
    names = list(values)[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(names) + 1.2))
    ax.barh(names, [values[n] for n in names])
    ax.set(xlabel="mean |attribution| (fraud log-odds)", title="Feature importance (integrated gradients, test)")
    return _save(fig, out)


def _scalars(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, (int, float))}


def _pr_plot(y: np.ndarray, curves: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    for name, s in curves.items():
        t, s = s if isinstance(s, tuple) else (y, s)  # (targets, scores): rows in another order than y's
        p, r, _ = precision_recall_curve(t, s)
        ax.plot(r, p, label=f"{name} (AP {average_precision_score(t, s):.3f})")
    ax.axhline(y.mean(), color="grey", linestyle="--", linewidth=1, label=f"fraud rate {y.mean():.3%}")
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1.02), title="Precision-recall (test)")
    ax.legend(fontsize="small")
    return _save(fig, out)


def _roc_plot(y: np.ndarray, curves: dict, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1)
    for name, s in curves.items():
        t, s = s if isinstance(s, tuple) else (y, s)
        fpr, tpr, _ = roc_curve(t, s)
        ax.plot(fpr, tpr, label=f"{name} (AUC {roc_auc_score(t, s):.3f})")
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (test)")
    ax.legend(fontsize="small")
    return _save(fig, out)


def _score_plot(y: np.ndarray, s: np.ndarray, threshold: float | None, out: Path) -> Path:
    fig, ax = plt.subplots(figsize=(6, 4))
    bins = np.linspace(0, 1, 51)
    for label, name in ((0, "normal"), (1, "fraud")):
        ax.hist(s[y == label], bins=bins, alpha=0.6, density=True, label=f"{name} (n={int((y == label).sum())})")
    if threshold is not None:
        ax.axvline(threshold, color="black", linestyle="--", label=f"threshold {threshold:.3f}")
    ax.set(yscale="log", xlabel="fraud score", ylabel="density (log)", title="Score distribution by class (test)")
    ax.legend(fontsize="small")
    return _save(fig, out)


def _save(fig, out: Path) -> Path:
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def group_thresholds_section(effect: dict) -> tuple[str, str]:
    """(heading, Markdown) of the per-group thresholds the model applies (metrics.json `group_thresholds`)."""
    column, before, after = effect["column"], effect["before"], effect["after"]
    rows = [[g, f"{effect['thresholds'][g]:.3f}" if g in effect["thresholds"] else "the cost threshold",
             _fmt(before["groups"][g]["tpr"]), _fmt(after["groups"][g]["tpr"]),
             _fmt(before["groups"][g]["selection_rate"]), _fmt(after["groups"][g]["selection_rate"])]
            for g in after["groups"]]
    table = "\n".join(["| group | threshold | TPR (one threshold) | TPR (per group) | selected (one) | selected (per group) |",
                       "|---|---|---|---|---|---|", *("| " + " | ".join(map(str, r)) + " |" for r in rows)])
    text = (f"This model decides with one threshold per value of `{column}`, a model input: chosen on validation so "
            f"that each group's TPR reaches the model's overall TPR (groups with few positives keep the cost threshold). "
            f"On the test rows the TPR gap is {_fmt(before['tpr_difference'])} with one threshold and "
            f"{_fmt(after['tpr_difference'])} with the per-group ones; accuracy {_fmt(before['accuracy'])} -> "
            f"{_fmt(after['accuracy'])}, cost {before['decision']['cost']:g} -> {after['decision']['cost']:g}. "
            f"Treating groups differently on purpose is a policy choice; `predict --threshold T` applies one threshold "
            f"to everyone.\n\n{table}")
    return "Per-group decision thresholds", text


def _fmt(value) -> str:
    return "n/a" if value is None else f"{value:.3f}"
