"""Report plots written as PNG files (matplotlib Agg backend; no torch)."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402
from sklearn.metrics import roc_auc_score, roc_curve  # noqa: E402

from deepapps.core.runtime.io import atomic_write  # noqa: E402

LOSS_COLUMNS = {"train/loss_epoch": "train", "val/loss": "val"}
VAL_METRIC_COLUMNS = ("val/accuracy", "val/macro_f1", "val/auroc")
MAX_ROC_CURVES = 10


def training_curves(metrics_csv: Path, out: Path) -> Path | None:
    """Plot loss and validation metrics per epoch from a Lightning CSVLogger file.

    Args:
        metrics_csv: the logger's `metrics.csv` (sparse rows, one or more per step).
        out: PNG file to write.

    Returns:
        `out`, or None if the file is missing or has no epoch-level values.
    """
    series = _epoch_series(Path(metrics_csv), [*LOSS_COLUMNS, *VAL_METRIC_COLUMNS])
    if not series:
        return None
    fig, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=(11, 4))
    _plot_series(loss_ax, series, LOSS_COLUMNS, "loss")
    metric_names = {column: column.split("/", 1)[1] for column in VAL_METRIC_COLUMNS}
    _plot_series(metric_ax, series, metric_names, "validation metric")
    fig.suptitle("Training curves")
    return _save(fig, out)


def confusion_matrix_plot(matrix: list[list[int]], labels: list[str], out: Path) -> Path:
    """Draw a confusion matrix: counts in the cells, colour normalised per true row.

    Args:
        matrix: counts, rows = true class, cols = predicted class.
        labels: class names in matrix order.
        out: PNG file to write.
    """
    counts = np.asarray(matrix, dtype=np.int64)
    totals = counts.sum(axis=1, keepdims=True)
    norm = np.divide(counts, totals, out=np.zeros(counts.shape, dtype=float), where=totals > 0)
    size = max(4.0, 0.6 * len(labels) + 2)
    fig, ax = plt.subplots(figsize=(size, size))
    image = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04, label="fraction of true class")
    ticks = np.arange(len(labels))
    ax.set_xticks(ticks, labels, rotation=45, ha="right")
    ax.set_yticks(ticks, labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    _annotate_counts(ax, counts, norm)
    ax.set_title("Confusion matrix")
    return _save(fig, out)


def roc_plot(problem: str, targets: np.ndarray, probs: np.ndarray, labels: list[str], out: Path) -> Path:
    """Draw ROC curves with their AUC in the legend.

    Binary problems get one curve for the positive class (column 1); multiclass
    and multilabel problems get one-vs-rest curves, at most 10, plus a macro-AUC note.

    Args:
        problem: "binary", "multiclass" or "multilabel".
        targets: (N,) int class ids, or (N, L) 0/1 for multilabel.
        probs: (N, K) probabilities.
        labels: class names, one per column of `probs`.
        out: PNG file to write.
    """
    probs = np.asarray(probs, dtype=float)
    positives = _one_vs_rest(problem, np.asarray(targets), len(labels))
    columns = [1] if problem == "binary" else list(range(len(labels)))
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    aucs = [_roc_curve(ax, positives[:, k], probs[:, k], labels[k]) for k in columns[:MAX_ROC_CURVES]]
    aucs += [_auc(positives[:, k], probs[:, k]) for k in columns[MAX_ROC_CURVES:]]
    ax.set(xlim=(0, 1), ylim=(0, 1.02), xlabel="false positive rate", ylabel="true positive rate")
    ax.set_title(_roc_title(problem, aucs, len(columns)), fontsize="medium")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, out)


def _epoch_series(path: Path, columns: list[str]) -> dict[str, dict[int, float]]:
    """Read {column: {epoch: last value}} for the given columns that have any values."""
    if not path.is_file():
        return {}
    series: dict[str, dict[int, float]] = {}
    with path.open(newline="") as f:
        for row in csv.DictReader(f):
            epoch = _number(row.get("epoch"))
            if epoch is None:
                continue
            for column in columns:
                value = _number(row.get(column))
                if value is not None:
                    series.setdefault(column, {})[int(epoch)] = value
    return series


def _number(text: str | None) -> float | None:
    """Parse a CSV cell as a finite float, or None if empty or not a number."""
    try:
        value = float(text)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def _plot_series(
    ax: plt.Axes, series: dict[str, dict[int, float]], names: dict[str, str], ylabel: str
) -> None:
    """Plot the named columns of `series` against epoch on one axis."""
    for column, name in names.items():
        points = sorted(series.get(column, {}).items())
        if points:
            epochs, values = zip(*points)
            ax.plot(epochs, values, marker="o", label=name)
    ax.set_xlabel("epoch")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    else:
        ax.text(0.5, 0.5, "no data", ha="center", va="center", transform=ax.transAxes)


def _annotate_counts(ax: plt.Axes, counts: np.ndarray, norm: np.ndarray) -> None:
    """Write each cell's count, in white on dark cells."""
    for (i, j), count in np.ndenumerate(counts):
        colour = "white" if norm[i, j] > 0.5 else "black"
        ax.text(j, i, str(count), ha="center", va="center", color=colour, fontsize="small")


def _one_vs_rest(problem: str, targets: np.ndarray, n_classes: int) -> np.ndarray:
    """Targets as an (N, K) 0/1 matrix, one column per class."""
    if problem == "multilabel":
        return targets.astype(int)
    ids = targets.astype(int).reshape(-1)
    return (ids[:, None] == np.arange(n_classes)[None, :]).astype(int)


def _auc(positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC, or None when only one outcome occurs."""
    if len(np.unique(positive)) < 2:
        return None
    return float(roc_auc_score(positive, scores))


def _roc_curve(ax: plt.Axes, positive: np.ndarray, scores: np.ndarray, label: str) -> float | None:
    """Plot one ROC curve (if defined) and return its AUC."""
    auc = _auc(positive, scores)
    if auc is not None:
        fpr, tpr, _ = roc_curve(positive, scores)
        ax.plot(fpr, tpr, label=f"{label} (AUC {auc:.3f})")
    return auc


def _roc_title(problem: str, aucs: list[float | None], n_columns: int) -> str:
    """The title, with the macro AUC (and how many curves are shown) for one-vs-rest plots."""
    if problem == "binary":
        return "ROC"
    defined = [a for a in aucs if a is not None]
    note = f"macro AUC {np.mean(defined):.3f} over {len(defined)} classes" if defined else "AUC undefined"
    if n_columns > MAX_ROC_CURVES:
        note += f"; showing {MAX_ROC_CURVES} of {n_columns}"
    return f"ROC (one-vs-rest)\n{note}"


def _save(fig: Figure, out: Path) -> Path:
    """Save `fig` atomically as a PNG at `out` (creating its folder) and close it."""
    try:
        fig.tight_layout()
        return atomic_write(out, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)


def reliability_plot(bins: list[dict], ece: float | None, out: Path, title: str = "Reliability diagram") -> Path:
    """Accuracy against confidence per bin (from `core.metrics.calibration_metrics`), with counts.

    Args:
        bins: {lower, upper, count, confidence, accuracy} per equal-width confidence bin.
        ece: expected calibration error, shown in the title.
        out: PNG file to write.
    """
    fig, (ax, count_ax) = plt.subplots(2, 1, figsize=(5.5, 6), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1, label="perfect calibration")
    filled = [b for b in bins if b["count"]]
    lefts = [b["lower"] for b in bins]
    widths = [b["upper"] - b["lower"] for b in bins]
    ax.bar([b["lower"] for b in filled], [b["accuracy"] for b in filled],
           width=[b["upper"] - b["lower"] for b in filled], align="edge", edgecolor="black", alpha=0.7, label="accuracy")
    ax.plot([(b["lower"] + b["upper"]) / 2 for b in filled], [b["confidence"] for b in filled], "_", color="darkred",
            markersize=12, markeredgewidth=2, label="mean confidence in bin")
    ax.set(xlim=(0, 1), ylim=(0, 1.02), ylabel="observed frequency")
    ax.legend(loc="upper left", fontsize="x-small", framealpha=0.9)
    ax.set_title(f"{title}\nECE {ece:.4f}" if ece is not None else title, fontsize="medium")
    count_ax.bar(lefts, [b["count"] for b in bins], width=widths, align="edge", color="grey", edgecolor="black")
    count_ax.set(xlabel="predicted probability (confidence)", ylabel="count")
    return _save(fig, out)
