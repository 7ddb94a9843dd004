"""Fairness by group in the run report: a model card section and a plot (matplotlib Agg; no torch).

Both read what core.fairness.group_fairness returned (metrics.json's `fairness`).
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from deepapps.core.runtime.io import atomic_write  # noqa: E402

PLOTTED = ("base_rate", "selection_rate", "tpr", "fpr")
TABLE = ("n", "base_rate", "selection_rate", "tpr", "fpr", "precision", "auroc")
HEADER = {"n": "n", "base_rate": "base rate", "selection_rate": "selection rate", "tpr": "TPR", "fpr": "FPR",
          "precision": "precision", "auroc": "AUROC"}


def fairness_section(by_split: dict, positive: str = "positive", features: list[str] | None = None,
                     thresholds: dict | None = None, note: str = "") -> tuple[str, str]:
    """(heading, Markdown body) of the model card: per split and attribute, a table of the groups
    and the disparities, with what they do and do not mean.

    Args:
        by_split: split -> group_fairness result (metrics.json's `fairness`).
        positive: what a positive decision means (e.g. `fraud`, `>50K`).
        features: the attributes that are also model inputs (the card says so); the others are
            reporting only.
        thresholds: per attribute, core.fairness.tpr_parity_thresholds (metrics.json's
            `fairness_thresholds`), or None.
        note: a sentence the app adds after the first paragraph (e.g. which manifest column is
            the split grouping and which are the sensitive attributes).
    """
    features = features or []
    parts = []
    first = next(iter(by_split.values()))
    names = list(first["attributes"])
    inputs = [n for n in names if n in features]
    role = (f"{', '.join(f'`{n}`' for n in inputs)} {'is' if len(inputs) == 1 else 'are'} also a model input "
            f"(listed as a feature); the others are reporting only." if inputs else
            "They are reporting only: the model never sees them (it may still infer them from correlated columns).")
    parts.append(
        f"Groups of {', '.join(f'`{n}`' for n in names)}. {role} A decision is positive ({positive}) when the score is at "
        f"or above the model's threshold {first['threshold']:.4g}. Base rate: share of positives in the data; selection "
        "rate: share decided positive; TPR and FPR: shares of actual positives and negatives decided positive; precision: "
        "share of positive decisions that are right; AUROC: ranking quality within the group (null: one class only). "
        "Computed with fairlearn's MetricFrame." + (f" {note}" if note else ""))
    for split, fairness in by_split.items():
        for name, attribute in fairness["attributes"].items():
            rows = [f"| {group} | " + " | ".join(_fmt(g[m]) for m in TABLE) + " |"
                    for group, g in attribute["groups"].items()]
            d = attribute["disparity"]
            parts.append(
                f"**{split}, `{name}`** ({fairness['n']} rows)\n\n| group | " + " | ".join(HEADER[m] for m in TABLE)
                + " |\n|---|" + "---|" * len(TABLE) + "\n" + "\n".join(rows) + "\n\n"
                f"Demographic-parity difference {_fmt(d['demographic_parity_difference'])} (ratio "
                f"{_fmt(d['demographic_parity_ratio'])}); equalized-odds difference {_fmt(d['equalized_odds_difference'])} "
                f"(TPR gap {_fmt(d['tpr_difference'])}, FPR gap {_fmt(d['fpr_difference'])}); base-rate gap in the data "
                f"{_fmt(d['base_rate_difference'])}.")
    if thresholds:
        parts.append(_thresholds_text(thresholds))
    parts.append(
        "What these figures mean: the demographic-parity difference is the largest gap between the groups' selection "
        "rates (0: every group is selected as often; the ratio is the smallest rate over the largest, 1 is parity); the "
        "equalized-odds difference is the larger of the TPR and FPR gaps (0: the model errs at the same rates in every "
        "group). What they do not mean: they describe these rows only, at this threshold; a base-rate gap in the labels "
        "makes demographic parity and equal error rates incompatible unless the model is perfect, so a non-zero figure "
        "is not by itself proof of unfair treatment, and a zero one is not proof of fairness (other attributes, "
        "intersections of groups, label bias). Small groups give noisy rates: read them with their n.")
    return "Fairness by group", "\n\n".join(parts)


def fairness_plot(fairness: dict, out: Path, title: str = "Fairness by group") -> Path:
    """Base rate, selection rate, TPR and FPR per group (n under each group), one panel per attribute."""
    attributes = fairness["attributes"]
    widths = [max(3.0, 0.9 * len(a["groups"]) + 1.5) for a in attributes.values()]
    fig, axes = plt.subplots(1, len(attributes), figsize=(sum(widths) + 1.5, 4.2), squeeze=False,
                             gridspec_kw={"width_ratios": widths})
    for ax, (name, attribute) in zip(axes[0], attributes.items()):
        groups = list(attribute["groups"])
        x = np.arange(len(groups))
        width = 0.8 / len(PLOTTED)
        for i, metric in enumerate(PLOTTED):
            values = [attribute["groups"][g][metric] for g in groups]
            ax.bar(x + (i - (len(PLOTTED) - 1) / 2) * width, [np.nan if v is None else v for v in values], width,
                   label=HEADER[metric])
        ax.set_xticks(x, [f"{g}\nn={attribute['groups'][g]['n']}" for g in groups], fontsize="small",
                      rotation=30 if len(groups) > 4 else 0)
        d = attribute["disparity"]
        ax.set(ylim=(0, 1.05), title=f"{name}: DP diff {_fmt(d['demographic_parity_difference'])}, "
                                     f"EO diff {_fmt(d['equalized_odds_difference'])}")
        ax.title.set_fontsize("medium")
    axes[0][0].set_ylabel("rate")
    axes[0][-1].legend(fontsize="small", loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.suptitle(f"{title} (threshold {fairness['threshold']:.3g})")
    fig.tight_layout()
    atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
    return out


def image_attributes_note(data) -> str:
    """The model card's line telling the sensitive attributes (data.group_columns, fairness only)
    from the split grouping (healthcare's patient_column); empty without group columns."""
    columns = getattr(data, "group_columns", None)
    if not columns:
        return ""
    patient = getattr(data, "patient_column", None)
    split = (f" The manifest's `{patient}` column (when present) is something else: the split grouping that keeps "
             f"each patient in one split; it is not a sensitive attribute here." if patient else "")
    return (f"The sensitive attributes ({', '.join(f'`{c}`' for c in columns)}) are manifest columns read for this "
            f"report only (data.group_columns); the network sees pixels alone.{split}")


def _thresholds_text(thresholds: dict) -> str:
    """The TPR-parity thresholds: test figures before and after, per attribute."""
    shown = ("accuracy", "balanced_accuracy", "selection_rate", "tpr_difference", "equalized_odds_difference",
             "demographic_parity_difference")
    rows, notes = [], []
    for name, result in thresholds.items():
        if "skipped" in result:
            notes.append(f"`{name}`: not fitted ({result['skipped']}).")
            continue
        for when in ("before", "after"):
            label = "one threshold (the model)" if when == "before" else "per-group thresholds"
            rows.append(f"| {name} | {label} | " + " | ".join(_fmt(result[when][m]) for m in shown) + " |")
    text = ("Mitigation, for comparison only (the model keeps its one threshold): per-group thresholds that equalise "
            "the TPR, fitted on validation by fairlearn's ThresholdOptimizer (objective balanced accuracy; it may mix "
            "two thresholds in a group at random), applied to the test rows. It needs the group of every row at "
            "decision time.")
    if rows:
        text += ("\n\n| attribute | decisions | accuracy | balanced accuracy | selection rate | TPR gap | "
                 "equalized-odds diff | DP diff |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows))
    return text + ("\n\n" + " ".join(notes) if notes else "")


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, int):
        return str(value)
    return f"{value:.3f}"
