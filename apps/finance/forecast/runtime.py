"""Serving side of forecasting: backtest and predict with ONNX Runtime only (no torch)."""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass, field

import numpy as np
import polars as pl

from deepapps.apps.finance.forecast import baselines
from deepapps.apps.finance.forecast.series import (
    SeriesTable, calendar_features, future_timestamps, load_table, prepare_frame, read_frame, season_length,
    shifted_timestamps, split_ranges, training_statistics, window_starts, windows,
)
from deepapps.core.contract import Forecast
from deepapps.core.errors import DataError, DeepappsError
from deepapps.core.runtime.evaluation import Evaluation, evaluation_head
from deepapps.core.runtime.interface import Predictions, Serving, positive_int
from deepapps.core.runtime.session import OnnxModel

BASELINES = ("last_value", "seasonal_naive", "ets")


@dataclass
class ForecastEvaluation(Evaluation):
    """Backtest metrics plus what the report plots: a few windows and error by horizon step."""

    quantiles: list[float]
    targets: list[str]
    histories: np.ndarray  # (K, L, C) raw, K sample windows
    actuals: np.ndarray  # (K, H, C) raw
    forecasts: np.ndarray  # (K, H, C, Q) raw
    mse_by_step: dict[str, list[float]] = field(default_factory=dict)  # name -> (H,) on the z-scale


def forecast(model: OnnxModel, histories: np.ndarray, batch_size: int = 256,
             calendar: np.ndarray | None = None, covariates: np.ndarray | None = None) -> np.ndarray:
    """Quantiles (N, H, C, Q) for raw histories (N, L, C) and, when the model takes them,
    calendar features (N, L+H, K) and raw past covariates (N, L, P)."""
    arrays = {"calendar": calendar, "covariates": covariates}
    feeds = []
    for i, spec in enumerate(model.contract.inputs):
        array = histories if i == 0 else arrays.get(spec.name)
        if array is None:
            raise DeepappsError(f"{model.path}: the model needs its {spec.name!r} input")
        feeds.append((spec.name, array))
    out = [model.run({name: np.ascontiguousarray(a[i : i + batch_size], dtype=np.float32) for name, a in feeds})
           for i in range(0, len(histories), batch_size)]
    return np.concatenate(out)


def _undo_calibration(q: np.ndarray, kind: Forecast) -> np.ndarray | None:
    """The quantiles before the in-graph calibration (exact for one quantile on each side of the
    median, where the rescaling cannot reorder them); None for an uncalibrated model."""
    calibration = kind.interval_calibration
    if not calibration:
        return None
    scale = np.asarray(calibration["scale"], dtype=np.float64)  # (H, Q)
    m = kind.median_index
    median = q[..., m : m + 1]
    return median + (q - median) / np.maximum(scale, 1e-12)[:, None, :]


@dataclass
class SplitWindows:
    """Every stride-1 window of one split, as the model takes them, with the training statistics."""

    x: np.ndarray  # (N, L, C) raw histories
    y: np.ndarray  # (N, H, C) raw actuals, float64
    calendar: np.ndarray | None  # (N, L+H, K)
    covariates: np.ndarray | None  # (N, L, P) raw
    train: np.ndarray  # (T, C) raw training values of every series, float64
    mean: np.ndarray  # (C,) training mean (training_statistics, as in fit)
    std: np.ndarray  # (C,) training std
    table: SeriesTable
    ranges: list[dict]


def split_windows(model: OnnxModel, data_path: str, split: str = "test") -> SplitWindows:
    """The windows of `split` of `data_path`, cut with the model's split settings (from its contract).

    `all`: every stride-1 window of every series (look-back and horizon inside the series, from
    its first step: N - L - H + 1 windows of a series of N steps). The z-scale of MSE/MAE and the
    MASE scale still come from each series' training part as the model's settings split it.
    """
    pre, kind = model.contract.preprocess, model.contract.forecast
    data = model.contract.train.data_config
    if split not in ("all", "train", "val", "test"):
        raise DeepappsError(f"--split {split}: choose all, train, val or test")
    L, H = kind.look_back, kind.horizon
    table = load_table(data_path, pre["timestamp"], kind.targets, pre["id_column"], kind.freq, pre["fill"],
                       pre.get("covariates"))
    ranges = [split_ranges(len(s.values), data.get("split", "fractions"), table.freq, data.get("val_fraction", 0.1),
                           data.get("test_fraction", 0.2)) for s in table.series]
    train, mean, std = training_statistics([s.values for s in table.series], ranges)
    xs, ys, cals, covs = [], [], [], []
    for s, r in zip(table.series, ranges):
        starts = window_starts((0, len(s.values)) if split == "all" else r[split], L, H)
        x, y = windows(s.values, starts, L, H)
        xs.append(x)
        ys.append(y)
        if pre.get("calendar"):
            cal = calendar_features(s.timestamps, pre["calendar"], pre.get("holidays"))
            past, future = windows(cal, starts, L, H)
            cals.append(np.concatenate([past, future], axis=1))  # (n, L+H, K)
        if pre.get("covariates"):
            covs.append(windows(s.covariates, starts, L, H)[0])  # (n, L, P)
    x, y = np.concatenate(xs), np.concatenate(ys).astype(np.float64)
    if len(x) == 0:
        raise DataError(f"{data_path}: no {split} window of {L} + {H} steps")
    return SplitWindows(x, y, np.concatenate(cals) if cals else None, np.concatenate(covs) if covs else None,
                        train, mean, std, table, ranges)


def series_parts(history: str, pre: dict, targets: list[str], series: str | None) -> tuple[dict, list[str]]:
    """({series id: its rows}, the ids asked for) of a history file (`--series a,b`: those only).

    Raises:
        DataError: a column the model needs is missing (one line naming the file).
    """
    df = read_frame(history)
    id_col, covariates = pre["id_column"], pre.get("covariates") or []
    needed = [pre["timestamp"], *targets, *covariates]
    for column in [*needed, *([id_col] if id_col else [])]:
        if column not in df.columns:
            raise DataError(f"{history}: no column {column!r} (the model needs {', '.join(needed)})")
    ids = df[id_col].cast(pl.String) if id_col else pl.Series([""] * df.height)
    parts = {key[0]: part.drop("__sid") for key, part in
             df.with_columns(ids.alias("__sid")).partition_by("__sid", maintain_order=True, as_dict=True).items()}
    wanted = [s.strip() for s in series.split(",")] if series else list(parts)
    return parts, wanted


def point_metrics(pred: np.ndarray, y: np.ndarray, mean: np.ndarray, std: np.ndarray, scale: np.ndarray) -> dict:
    """mse, mae (z-scale), mase, smape (raw scale, percent) of point forecasts (N, H, C)."""
    z_err = (pred - y) / std
    abs_err = np.abs(pred - y)
    denom = np.abs(y) + np.abs(pred)
    smape = np.where(denom > 0, 2 * abs_err / np.where(denom > 0, denom, 1), 0.0)
    return {
        "mse": float(np.mean(z_err**2)),
        "mae": float(np.mean(np.abs(z_err))),
        "mase": float(np.mean(abs_err.mean(axis=(0, 1)) / scale)),
        "smape": float(100 * np.mean(smape)),
    }


def _mase_scale(table, ranges: list[dict], season: int) -> np.ndarray:
    """Per channel: mean |y_t - y_{t-m}| over the training parts (m = 1 when too short)."""
    diffs = []
    for s, r in zip(table.series, ranges):
        train = s.values[: r["train"][1]].astype(np.float64)
        m = season if len(train) > season else 1
        if len(train) > m:
            diffs.append(np.abs(train[m:] - train[:-m]))
    scale = np.concatenate(diffs).mean(axis=0) if diffs else np.ones(len(table.targets))
    return np.maximum(scale, 1e-8)


# the range of datetime64[ns] timestamps, which the calendar arithmetic (polars) stays inside
FIRST_YEAR, LAST_YEAR = 1678, 2261


def parse_timestamp(value: object) -> np.datetime64:
    """An ISO timestamp of a request (`last_timestamp`) as datetime64[us]; DataError when it is not
    one, or lies outside the years 1678-2261."""
    try:
        stamp = np.datetime64(value, "us") if isinstance(value, str) else None
    except (TypeError, ValueError, OverflowError):
        stamp = None
    if stamp is None or np.isnat(stamp):
        raise DataError(f"last_timestamp {str(value)[:40]!r}: not a timestamp such as \"2018-06-26T19:00:00\"")
    year = stamp.astype("datetime64[Y]").astype(np.int64) + 1970
    if not FIRST_YEAR <= year <= LAST_YEAR:
        raise DataError(f"last_timestamp {value!r}: outside the years {FIRST_YEAR}-{LAST_YEAR}")
    return stamp


def _qname(level: float) -> str:
    return f"p{100 * level:g}"


def _error_row(sid: str, error: str, qs: list[float]) -> dict:
    return {"series_id": sid, "timestamp": None, "target": None, "step": None,
            **{_qname(level): None for level in qs}, "filled": None, "error": error}


def _decode_extra(pre: dict, kind: Forecast, item: dict) -> dict:
    extra = {}
    if pre.get("calendar"):
        if "last_timestamp" not in item:
            raise DataError("last_timestamp: required (calendar features are generated from it), e.g. "
                            '"2018-06-26T19:00:00"')
        last = parse_timestamp(item["last_timestamp"])
        stamps = shifted_timestamps(last, kind.freq, range(1 - kind.look_back, kind.horizon + 1))
        extra["calendar"] = calendar_features(np.array(stamps, dtype="datetime64[us]"), pre["calendar"],
                                              pre.get("holidays"))
    if pre.get("covariates"):
        P, L = len(pre["covariates"]), kind.look_back
        try:
            cov = np.asarray(item["covariates"], dtype=np.float32).reshape(L, P)
        except (KeyError, TypeError, ValueError):
            raise DataError(f"covariates: need {L} rows x {P} values ({', '.join(pre['covariates'])})") from None
        if not np.isfinite(cov).all():
            raise DataError("covariates: NaN or infinite values")
        extra["covariates"] = cov
    return extra


class ForecastServing(Serving):
    """Forecast the latest window of every series of a history file; backtest on every test window."""

    spark_column = None  # a request item is a JSON object (history, last_timestamp, covariates)

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("inputs", nargs=1, metavar="history", help="CSV or Parquet history with the training "
                            "columns; the latest look-back of each series is forecast")
        parser.add_argument("--series", help="comma-separated series ids to forecast (default: every series)")
        parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=256)

    def predict(self, model: OnnxModel, args: argparse.Namespace) -> Predictions:
        """Forecast the next H steps of every series; a series that cannot be forecast is an error row.

        Rows: series_id, timestamp, target, step, one column per quantile (p10, p50, ...), filled, error.
        """
        pre, kind = model.contract.preprocess, model.contract.forecast
        L, H, qs, targets, freq = kind.look_back, kind.horizon, kind.quantiles, kind.targets, kind.freq
        if not freq:
            raise DeepappsError(f"{model.path}: the model does not record its data frequency")
        history = args.inputs[0]
        id_col, covariates, calendar = pre["id_column"], pre.get("covariates") or [], pre.get("calendar") or []
        parts, wanted = series_parts(history, pre, targets, args.series)
        rows, ok_ids, histories, futures, filled, cals, covs = [], [], [], [], [], [], []
        for sid in wanted:
            try:
                if sid not in parts:
                    raise DataError(f"unknown series id {sid!r}: not in {history}")
                table = prepare_frame(parts[sid], history, pre["timestamp"], targets, id_col, freq, pre["fill"],
                                      covariates)
                series = table.series[0]
                if len(series.values) < L:
                    raise DataError(f"series {sid or '(single)'} has {len(series.values)} steps; "
                                    f"the model needs {L} (look-back)")
                window = series.values[-L:]
                if not np.isfinite(window).all():
                    raise DataError(f"series {sid or '(single)'}: non-finite values in the latest window")
                if covariates:
                    past = series.covariates[-L:]
                    if not np.isfinite(past).all():
                        raise DataError(f"series {sid or '(single)'}: non-finite covariate values in the latest window")
                    covs.append(past)
                future = np.array(future_timestamps(series.timestamps[-1], freq, H), dtype="datetime64[us]")
                if calendar:
                    stamps = np.concatenate([series.timestamps[-L:], future])
                    cals.append(calendar_features(stamps, calendar, pre.get("holidays")))
                histories.append(window)
                futures.append(future.tolist())  # datetime objects, as the output column takes them
                filled.append(int(series.filled))
                ok_ids.append(sid)
            except DataError as exc:
                print(f"error: {exc}", file=sys.stderr)
                rows.append(_error_row(sid, str(exc), qs))
        if histories:
            quantiles = forecast(model, np.stack(histories), args.batch_size, np.stack(cals) if cals else None,
                                 np.stack(covs) if covs else None)  # (S, H, C, Q)
            for sid, stamps, n_filled, q in zip(ok_ids, futures, filled, quantiles):
                for c, target in enumerate(targets):
                    for h in range(H):
                        rows.append({"series_id": sid, "timestamp": stamps[h], "target": target, "step": h + 1}
                                    | {_qname(level): float(q[h, c, k]) for k, level in enumerate(qs)}
                                    | {"filled": n_filled, "error": None})
        order = {sid: i for i, sid in enumerate(wanted)}
        rows.sort(key=lambda r: order[r["series_id"]])
        schema = {"series_id": pl.String, "timestamp": pl.Datetime("us"), "target": pl.String, "step": pl.Int64,
                  **{_qname(level): pl.Float64 for level in qs}, "filled": pl.Int64, "error": pl.String}
        return Predictions.of(pl.DataFrame(rows, schema=schema), sum(1 for r in rows if r["error"]))

    def evaluate(self, model: OnnxModel, data_path: str, split: str = "test",
                 batch_size: int = 256) -> ForecastEvaluation:
        """Rolling-origin backtest (stride 1) over every window of `split` (`all`: of the whole
        series, see `split_windows`), against baselines; `n` = `windows`.

        MSE and MAE are on the z-scale of the training statistics (the ETT protocol); MASE and
        sMAPE on the raw scale; coverage and width of the outer quantile interval.
        """
        kind = model.contract.forecast
        L, H, qs = kind.look_back, kind.horizon, kind.quantiles
        w = split_windows(model, data_path, split)
        x, y, mean, std, table, ranges = w.x, w.y, w.mean, w.std, w.table, w.ranges
        season = kind.season_length or season_length(table.freq)
        q = forecast(model, x, batch_size, w.calendar, w.covariates).astype(np.float64)  # (N, H, C, Q)
        median = q[..., kind.median_index]
        points = {"model": median,
                  "last_value": baselines.last_value(x, H),
                  "seasonal_naive": baselines.seasonal_naive(x, H, season)}
        if kind.ets is not None:  # smoothing parameters fitted on the training part at fit time
            ets = kind.ets
            params = np.asarray([ets["alpha"], ets["beta"], ets["gamma"], ets["phi"]], dtype=np.float64)  # (4, C)
            points["ets"] = baselines.ets(x, H, ets.get("season_length", season), params)
        scale = _mase_scale(table, ranges, season)  # (C,)
        metrics = evaluation_head(split, data_path, len(x)) | {"windows": int(len(x)), "look_back": L, "horizon": H,
                                                                 "season_length": season}
        metrics |= point_metrics(median, y, mean, std, scale)
        lo, hi = q[..., 0], q[..., -1]
        metrics["coverage"] = float(np.mean((y >= lo) & (y <= hi)))
        metrics["nominal_coverage"] = round(qs[-1] - qs[0], 6)
        metrics["interval_width"] = float(np.mean((hi - lo) / std))
        raw = _undo_calibration(q, kind)
        if raw is not None:
            metrics["coverage_uncalibrated"] = float(np.mean((y >= raw[..., 0]) & (y <= raw[..., -1])))
            metrics["interval_width_uncalibrated"] = float(np.mean((raw[..., -1] - raw[..., 0]) / std))
        metrics["baselines"] = {name: point_metrics(points[name], y, mean, std, scale)
                                for name in BASELINES if name in points}
        by_step = {name: np.mean(((p - y) / std) ** 2, axis=(0, 2)).tolist() for name, p in points.items()}
        picks = np.linspace(0, len(x) - 1, min(4, len(x))).astype(int)
        return ForecastEvaluation(metrics, qs, kind.targets, x[picks], y[picks], q[picks], by_step)

    def decode_item(self, model: OnnxModel, item: dict) -> tuple[np.ndarray, str | None, dict]:
        """`{"history": [[v_1..v_C] x L], "last_timestamp": "..."?, "covariates": [[..P] x L]?}` ->
        ((L, C) window, last time, extra inputs). Models with calendar features need `last_timestamp`
        (the features are generated from it), models with covariates need `covariates`."""
        kind = model.contract.forecast
        L, C = kind.look_back, len(kind.targets)
        if not isinstance(item, dict) or "history" not in item:
            raise DataError(f'expected {{"history": [[...{C} values] x {L} rows], "last_timestamp": optional}}')
        try:
            window = np.asarray(item["history"], dtype=np.float32).reshape(-1, C) if C == 1 else np.asarray(
                item["history"], dtype=np.float32)
        except (TypeError, ValueError):
            raise DataError("history: not a list of numbers") from None
        if window.shape != (L, C):
            raise DataError(f"history: shape {window.shape}, the model needs ({L}, {C}) = look-back x targets")
        if not np.isfinite(window).all():
            raise DataError("history: NaN or infinite values")
        last = item.get("last_timestamp")
        if last is not None:
            parse_timestamp(last)  # a bad one is this item's 4xx, not a failure of the batch it joins
        return window, last, _decode_extra(model.contract.preprocess, kind, item)

    def run_items(self, model: OnnxModel, items: list[tuple[np.ndarray, str | None, dict]]) -> list[dict]:
        """One ONNX Runtime call for a micro-batch of windows."""
        kind = model.contract.forecast
        extras = {name: np.stack([e[name] for _, _, e in items]) for name in items[0][2]}
        quantiles = forecast(model, np.stack([w for w, _, _ in items]), calendar=extras.get("calendar"),
                             covariates=extras.get("covariates"))  # (N, H, C, Q)
        out = []
        for (_, last, _), q in zip(items, quantiles):
            result = {"targets": kind.targets} | {
                _qname(level): np.round(q[..., k].astype(np.float64), 6).tolist()
                for k, level in enumerate(kind.quantiles)
            }
            if last and kind.freq:
                try:
                    stamps = future_timestamps(parse_timestamp(last), kind.freq, kind.horizon)
                    result["timestamps"] = [str(s) for s in stamps]
                except DataError as exc:
                    result["timestamps_error"] = str(exc)
            out.append(result)
        return out
