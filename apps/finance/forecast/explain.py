"""`deepapps forecast explain (--ckpt FILE | --model FILE.onnx) HISTORY --out DIR`: which past steps drove a forecast.

Captum IntegratedGradients over the look-back window of each series (time x target channel) and
its past covariates, of the mean over the horizon of the median forecast of one target (--target;
default the first), through the served graph (raw scale, as the ONNX file computes it). The
baseline is every step at the training mean of its channel (targets and covariates); calendar
features, known in advance, are held as they are. Per series: `NNNN_<id>.png` (a heatmap time x
channel) and `.csv` (step, timestamp, channel, value, attribution); `manifest.json` has each
series' convergence delta and, with --model, whether the ONNX file forecasts the same (1e-4 of
the scale).
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

import numpy as np
import polars as pl
import torch

from deepapps.core.errors import ConfigError, DataError
from deepapps.core.registry import AppSpec
from deepapps.core.training.explain import (
    Explained,
    Explainer,
    ExplainSession,
    label_index,
    run_explain,
    safe_stem,
)

METHODS = {"integrated_gradients": "Captum IntegratedGradients over the look-back window and past covariates"}
BASELINE = "every look-back step at its channel's training mean (targets and covariates); calendar held"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--series", help="comma-separated series ids to explain (default: every series)")
    parser.add_argument("--steps", type=int, default=64, help="integrated-gradients steps (default 64)")


def latest_inputs(frame: pl.DataFrame, source: str, pre: dict, kind, sid: str) -> tuple:
    """(window (L, C), calendar (L+H, K) or None, covariates (L, P) or None, look-back timestamps)
    of one series, as `deepapps forecast predict` builds them; a DataError says why not."""
    from deepapps.apps.finance.forecast.series import (
        calendar_features,
        future_timestamps,
        prepare_frame,
    )

    L, H = kind.look_back, kind.horizon
    covariates, calendar = pre.get("covariates") or [], pre.get("calendar") or []
    table = prepare_frame(frame, source, pre["timestamp"], kind.targets, pre["id_column"], kind.freq, pre["fill"],
                          covariates)
    series = table.series[0]
    name = sid or "(single)"
    if len(series.values) < L:
        raise DataError(f"series {name} has {len(series.values)} steps; the model needs {L} (look-back)")
    window = series.values[-L:]
    if not np.isfinite(window).all():
        raise DataError(f"series {name}: non-finite values in the latest window")
    past = series.covariates[-L:] if covariates else None
    if past is not None and not np.isfinite(past).all():
        raise DataError(f"series {name}: non-finite covariate values in the latest window")
    cal = None
    if calendar:
        future = np.array(future_timestamps(series.timestamps[-1], kind.freq, H), dtype="datetime64[us]")
        cal = calendar_features(np.concatenate([series.timestamps[-L:], future]), calendar, pre.get("holidays"))
    return window, cal, past, series.timestamps[-L:]


def explain(session: ExplainSession, inputs: list[str]) -> Iterable[Explained]:
    from captum.attr import IntegratedGradients
    from deepapps.apps.finance.forecast.runtime import series_parts

    args, shipped = session.args, session.shipped
    if args.steps < 1:
        raise ConfigError("--steps must be at least 1")
    if len(inputs) != 1:
        raise ConfigError("forecast explain takes one HISTORY file (CSV or Parquet)")
    pre, kind = shipped.built.preprocess, shipped.served.kind
    c = 0 if args.target is None else label_index(list(kind.targets), args.target)
    served = shipped.served.module.eval()
    names = [i.name for i in shipped.built.inputs]
    covariates = pre.get("covariates") or []
    session.baseline = BASELINE
    mean = torch.tensor(pre["mean"], dtype=torch.float32)
    cov_mean = torch.tensor(pre["covariate_mean"], dtype=torch.float32) if covariates else None
    median = kind.quantiles.index(0.5)
    history = inputs[0]
    parts, wanted = series_parts(history, pre, list(kind.targets), args.series)

    def graph(history_, calendar_, covariates_):
        extra = {"calendar": calendar_, "covariates": covariates_}
        return (history_, *(extra[n] for n in names[1:]))

    for i, sid in enumerate(wanted):
        name = f"{history}[{sid}]" if sid else history
        try:
            if sid not in parts:
                raise DataError(f"unknown series id {sid!r}: not in {history}")
            window, cal, past, stamps = latest_inputs(parts[sid], history, pre, kind, sid)
        except DataError as exc:
            yield Explained(name, error=str(exc))
            continue
        x = torch.from_numpy(np.ascontiguousarray(window, np.float32))[None]  # (1, L, C)
        cal_t = None if cal is None else torch.from_numpy(np.ascontiguousarray(cal, np.float32))[None]
        cov_t = None if past is None else torch.from_numpy(np.ascontiguousarray(past, np.float32))[None]

        def mean_median(h, *rest, calendar=cal_t):
            cal_b = None if calendar is None else calendar.expand(h.shape[0], -1, -1)
            return served(*graph(h, cal_b, rest[0] if rest else None))[:, :, c, median].mean(1)  # (B,)

        attr_in = (x,) if cov_t is None else (x, cov_t)
        base = (mean.expand_as(x),) if cov_t is None else (mean.expand_as(x), cov_mean.expand_as(cov_t))
        with torch.enable_grad():
            attr, delta = IntegratedGradients(mean_median).attribute(
                tuple(a.clone().requires_grad_(True) for a in attr_in), baselines=base, n_steps=args.steps,
                internal_batch_size=64, return_convergence_delta=True)
        with torch.no_grad():
            out = served(*graph(x, cal_t, cov_t))  # (1, H, C, Q)
        channels = [*kind.targets, *covariates]
        heat = torch.cat([a[0] for a in attr], dim=1).detach().numpy()  # (L, C + P)
        values = np.concatenate([window, *([past] if past is not None else [])], axis=1)
        stem = safe_stem(i, sid or "series")
        L = len(stamps)
        table = pl.DataFrame({
            "step": np.repeat(np.arange(-L, 0), len(channels)),
            "timestamp": np.repeat(stamps.astype("datetime64[us]"), len(channels)),
            "channel": channels * L,
            "value": values.reshape(-1).astype(np.float32),
            "attribution": heat.reshape(-1).astype(np.float32)})
        title = f"{name}: mean median forecast of {kind.targets[c]} over {kind.horizon} steps"
        files = [session.write_png(f"{stem}.png", heatmap(heat, channels, title)),
                 session.write_csv(f"{stem}.csv", table)]
        forecast_value = float(out[0, :, c, median].mean())
        yield Explained(name, f"{forecast_value:.6g}", kind.targets[c], files, float(delta.abs().max()),
                        _agrees(session, graph(x, cal_t, cov_t), out))


def _agrees(session: ExplainSession, inputs: tuple, out: torch.Tensor) -> bool | None:
    """With --model: the ONNX file's quantiles equal the checkpoint's to 1e-4 of their scale."""
    if session.onnx is None:
        return None
    feeds = {n: t.numpy() for n, t in zip(session.onnx.input_names, inputs)}
    onnx_out, torch_out = session.onnx.run(feeds), out.numpy()
    scale = max(1.0, float(np.abs(torch_out).max()))
    session.last_onnx_diff = float(np.abs(onnx_out - torch_out).max())
    return bool(session.last_onnx_diff <= 1e-4 * scale)


def heatmap(attribution: np.ndarray, channels: list[str], title: str):
    """Look-back steps (x) by channel (y), red raising the forecast, blue lowering it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    peak = float(np.abs(attribution).max()) or 1.0
    L = attribution.shape[0]
    fig, ax = plt.subplots(figsize=(10, 0.4 * len(channels) + 1.6))
    image = ax.imshow(attribution.T, aspect="auto", cmap="bwr", vmin=-peak, vmax=peak,
                      extent=(-L - 0.5, -0.5, len(channels) - 0.5, -0.5))
    ax.set_yticks(range(len(channels)), channels)
    ax.set_xlabel("look-back step (-1 = latest)")
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, label="attribution")
    return fig


def main(app: AppSpec, argv: list[str]) -> int:
    explainer = Explainer("integrated-gradients attributions of a forecast over its look-back window (Captum)",
                          "one CSV or Parquet history with the training columns (the latest look-back of each "
                          "series is explained)", lambda shipped: METHODS, explain, add_arguments, tuple(METHODS))
    return run_explain(app, argv, explainer)
