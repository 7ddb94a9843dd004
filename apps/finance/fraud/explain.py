"""`deepapps fraud explain (--ckpt FILE | --model FILE.onnx) TABLE... --out DIR`: per-transaction attributions.

Both methods (Captum) explain the fraud log-odds (logit fraud - logit normal; log reconstruction
error for the autoencoder) against a baseline row: every numeric at its training median, nothing
missing, every categorical at its most frequent training value. They work on the network's
continuous inputs (scaled numerics, missing flags, category embeddings; model.py `embed` /
`head_from`), so a missing value or a category can be moved to the baseline, and a column's
attribution is that of all its parts (value + missing flag; embedding dimensions):

- `feature_ablation` (default): FeatureAblation: the log-odds change when the column alone is
  set to the baseline's.
- `integrated_gradients`: IntegratedGradients along the straight path from the baseline; a row's
  attributions add up to its log-odds minus the baseline's (completeness), up to the
  convergence delta in the manifest.

Writes `attributions.csv` (ids, score, decision, log_odds, top_features, attr_<column>, error),
`row_NNNN.png` (a bar chart per row), `global_importance.png` (mean |attribution| per column) and
`manifest.json`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import numpy as np
import polars as pl
import torch

from deepapps.apps.finance.fraud.features import FeatureSpec, check_columns, encode
from deepapps.core.data.tables import scan_table, table_schema
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.registry import AppSpec
from deepapps.core.training.explain import (
    Explained,
    Explainer,
    ExplainSession,
    decide,
    run_explain,
)

METHODS = {
    "feature_ablation": "Captum FeatureAblation: log-odds change with the column set to the baseline row's",
    "integrated_gradients": "Captum IntegratedGradients of the log-odds from the baseline row",
}
BASELINE = "training medians for numerics, nothing missing, most frequent training value for categoricals"


def log_odds(logits: torch.Tensor) -> torch.Tensor:
    """(B,) logit fraud - logit normal: what the attributions explain."""
    return logits[:, 1] - logits[:, 0]


def baseline_inputs(net: torch.nn.Module, spec: FeatureSpec) -> tuple:
    """(x0 (1, F), missing0 (1, F), vectors0 (1, C, E) or None): medians, nothing missing, top categories."""
    f = len(spec.numeric)
    codes = torch.tensor([[1 if spec.vocab[c] else 0 for c in spec.categorical]], dtype=torch.int64)
    _, _, vectors = net.embed(torch.zeros(1, f), codes if spec.categorical else None)
    return torch.zeros(1, f), torch.zeros(1, f), vectors


def _continuous(net, spec: FeatureSpec, numeric: np.ndarray, categorical: np.ndarray):
    """(inputs, baselines, forward, feature masks) on the continuous side of the network."""
    cat = torch.from_numpy(categorical) if spec.categorical else None
    with torch.no_grad():
        x, m, v = net.embed(torch.from_numpy(numeric), cat)
        base = baseline_inputs(net, spec)
    inputs = tuple(t for t in (x, m, v) if t is not None)
    baselines = tuple(b.expand_as(t) for b, t in zip(base, inputs))

    def forward(*parts):
        return log_odds(net.head_from(*parts, *([None] if len(parts) == 2 else [])))

    f = len(spec.numeric)
    masks = [torch.arange(f)[None], torch.arange(f)[None]]  # value and its missing flag: one feature
    if v is not None:
        masks.append((f + torch.arange(v.shape[1]))[None, :, None].expand(1, -1, v.shape[2]))
    return inputs, baselines, forward, tuple(masks)


def _per_column(attr: tuple[torch.Tensor, ...]) -> torch.Tensor:
    per_column = attr[0] + attr[1]  # value + its missing flag: (B, F)
    if len(attr) == 3:
        per_column = torch.cat([per_column, attr[2].sum(-1)], dim=1)  # + each categorical: (B, F + C)
    return per_column


def integrated_gradients(net: torch.nn.Module, spec: FeatureSpec, numeric: np.ndarray, categorical: np.ndarray,
                         steps: int = 64) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Captum integrated gradients per raw column for each row.

    Args:
        net: a fraud network (eval mode) with `embed` and `head_from`.
        numeric: (B, F) raw numerics (NaN = missing); categorical: (B, C) codes.
        steps: integration steps (Gauss-Legendre).

    Returns:
        (attributions (B, F + C) in spec.numeric + spec.categorical order, log-odds (B,),
        convergence delta (B,): sum of attributions - (log-odds - baseline log-odds)).
    """
    from captum.attr import IntegratedGradients

    net.eval()
    inputs, baselines, forward, _ = _continuous(net, spec, numeric, categorical)
    with torch.no_grad():
        target = forward(*inputs)
    with torch.enable_grad():
        attr, delta = IntegratedGradients(forward).attribute(inputs, baselines=baselines, n_steps=steps,
                                                             return_convergence_delta=True)
    return _per_column(attr).detach().numpy(), target.numpy(), delta.detach().numpy()


def feature_ablation(net: torch.nn.Module, spec: FeatureSpec, numeric: np.ndarray,
                     categorical: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Captum feature ablation per raw column: (attributions (B, F + C), log-odds (B,))."""
    from captum.attr import FeatureAblation

    net.eval()
    inputs, baselines, forward, masks = _continuous(net, spec, numeric, categorical)
    with torch.no_grad():
        target = forward(*inputs)
        attr = FeatureAblation(forward).attribute(inputs, baselines=baselines, feature_mask=masks)
    return _per_column(attr).numpy(), target.numpy()


def global_importance(net: torch.nn.Module, spec: FeatureSpec, numeric: np.ndarray, categorical: np.ndarray,
                      steps: int = 32) -> dict[str, float]:
    """Mean |integrated-gradients attribution| per column over the rows given, largest first."""
    attr, _, _ = integrated_gradients(net, spec, numeric, categorical, steps)
    mean = np.abs(attr).mean(0)
    names = [*spec.numeric, *spec.categorical]
    return {names[i]: float(mean[i]) for i in np.argsort(-mean)}


# --- the command ---------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--rows", type=int, default=100, help="explain the first N rows of each table (default 100)")
    parser.add_argument("--steps", type=int, default=64, help="integrated-gradients steps (default 64)")
    parser.add_argument("--top", type=int, default=3, help="features named in the `top_features` column")
    parser.add_argument("--plot-rows", "--plot_rows", dest="plot_rows", type=int, default=100,
                        help="bar charts for the first N explained rows (default 100)")


def read_rows(path: str, spec: FeatureSpec, n: int) -> tuple[pl.DataFrame, list[str]]:
    """(the first `n` rows with the id and feature columns, the id columns present)."""
    names = table_schema(path).names()
    check_columns(names, spec, path)
    keep = [c for c in spec.ids if c in names]
    wanted = list(dict.fromkeys([*keep, *spec.numeric, *spec.categorical]))
    try:
        rows = scan_table(path).select(wanted).head(n).collect()
    except pl.exceptions.PolarsError:  # text further down a numeric CSV column: read them as text
        rows = scan_table(path, spec.numeric).select(wanted).head(n).collect()
    if rows.height == 0:
        raise DataError(f"{path}: empty table (no rows)")
    return rows, keep


def explain(session: ExplainSession, inputs: list[str]) -> Iterable[Explained]:
    args, shipped = session.args, session.shipped
    if args.rows < 1 or args.steps < 1 or args.top < 0 or args.plot_rows < 0:
        raise ConfigError("--rows and --steps must be at least 1, --top and --plot-rows at least 0")
    if session.args.target is not None and session.args.target != "fraud":
        raise ConfigError(f"--target {session.args.target}: fraud explains the fraud log-odds only (--target fraud)")
    net, spec = shipped.module.net.eval(), FeatureSpec.from_meta(shipped.built.preprocess)
    served, decide_label = shipped.served.module.eval(), decide(shipped.served.kind)
    session.baseline = BASELINE
    columns = [*spec.numeric, *spec.categorical]
    tables, every = [], []
    for t, path in enumerate(inputs):
        try:
            rows, keep = read_rows(path, spec, args.rows)
        except DataError as exc:
            yield Explained(path, error=str(exc))
            continue
        enc = encode(rows, spec)
        ok = np.flatnonzero(~enc.bad)
        attr = np.full((rows.height, len(columns)), np.nan, np.float32)
        odds = np.full(rows.height, np.nan, np.float32)
        deltas = np.full(rows.height, np.nan, np.float32)
        agrees = np.zeros(rows.height, bool)
        diffs = np.full(rows.height, np.nan)
        for i in range(0, len(ok), 256):
            idx = ok[i:i + 256]
            if session.method == "integrated_gradients":
                a, o, d = integrated_gradients(net, spec, enc.numeric[idx], enc.categorical[idx], args.steps)
                deltas[idx] = d
            else:
                a, o = feature_ablation(net, spec, enc.numeric[idx], enc.categorical[idx])
            attr[idx], odds[idx] = a, o
            graph = (torch.from_numpy(enc.numeric[idx]),
                     *([torch.from_numpy(enc.categorical[idx])] if spec.categorical else []))
            with torch.no_grad():
                probs = served(*graph)
            for j, row in enumerate(idx):
                agrees[row] = session.agrees_with_onnx(tuple(g[j:j + 1] for g in graph), probs[j:j + 1],
                                                       decide_label) is not False
                diffs[row] = np.nan if session.last_onnx_diff is None else session.last_onnx_diff
            session.last_onnx_diff = None
        score = 1 / (1 + np.exp(-odds.astype(np.float64)))  # softmax over two logits = sigmoid of their difference
        top = [None if np.isnan(a).all() else "; ".join(f"{columns[j]} {a[j]:+.3f}"
                                                          for j in np.argsort(-np.abs(a))[:args.top]) for a in attr]
        threshold = shipped.served.kind.threshold
        out = pl.DataFrame({"score": pl.Series(score, dtype=pl.Float32).fill_nan(None),
                            "decision": pl.Series(score >= (0.5 if threshold is None else float(threshold))),
                            "log_odds": pl.Series(odds).fill_nan(None), "top_features": pl.Series(top, dtype=pl.String),
                            **{f"attr_{c}": pl.Series(attr[:, j]).fill_nan(None) for j, c in enumerate(columns)},
                            "error": enc.errors})
        out = out.with_columns(decision=pl.when(pl.col("error").is_null()).then(pl.col("decision")))
        first = rows.select(keep) if keep else pl.DataFrame({"row": np.arange(rows.height, dtype=np.int64)})
        table = pl.concat([first, out], how="horizontal")
        if len(inputs) > 1:
            table = table.with_columns(pl.lit(path).alias("input"))
        tables.append(table)
        every.append(attr[ok])
        for r in range(rows.height):
            name = f"{path}[{r}]"
            if enc.errors[r] is not None:
                yield Explained(name, error=enc.errors[r])
                continue
            files = []
            if r < args.plot_rows:
                label = f"{name}: score {score[r]:.3f}, log-odds {odds[r]:+.2f}"
                files.append(session.write_png(f"row_{t:02d}_{r:04d}.png" if len(inputs) > 1 else f"row_{r:04d}.png",
                                               bar_chart(columns, attr[r], label, 12)))
            predicted = "fraud" if score[r] >= (0.5 if threshold is None else float(threshold)) else "normal"
            yield Explained(name, predicted, "fraud", files, None if np.isnan(deltas[r]) else float(deltas[r]),
                            None if session.onnx is None else bool(agrees[r]),
                            onnx_max_abs_diff=None if np.isnan(diffs[r]) else float(diffs[r]))
    if tables:
        session.write_csv("attributions.csv", pl.concat(tables, how="diagonal_relaxed"))
        pooled = np.concatenate(every) if every else np.zeros((0, len(columns)))
        if len(pooled):
            mean = np.abs(pooled).mean(0)
            session.write_png("global_importance.png",
                              bar_chart(columns, mean, f"mean |attribution| over {len(pooled)} rows ({session.method})",
                                        len(columns), signed=False))
            session.write_csv("global_importance.csv", pl.DataFrame(
                {"column": [columns[j] for j in np.argsort(-mean)], "mean_abs_attribution": np.sort(mean)[::-1]}))


def bar_chart(columns: list[str], values: np.ndarray, title: str, top: int, signed: bool = True):
    """Horizontal bars of the `top` largest |values|, red for toward fraud, blue for away."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    order = np.argsort(-np.abs(values))[:max(1, top)][::-1]
    fig, ax = plt.subplots(figsize=(6, 0.3 * len(order) + 1.2))
    colours = ["#c0392b" if v >= 0 else "#2e6fba" for v in values[order]] if signed else "#555555"
    ax.barh([columns[j] for j in order], values[order], color=colours)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("attribution to the fraud log-odds" if signed else "mean |attribution|")
    ax.set_title(title, fontsize=9)
    return fig


def main(app: AppSpec, argv: list[str]) -> int:
    explainer = Explainer("feature attributions per transaction from a fraud checkpoint (Captum)",
                          "CSV or Parquet tables of transactions (raw columns, as for predict)",
                          lambda shipped: METHODS, explain, add_arguments, tuple(METHODS))
    return run_explain(app, argv, explainer)
