"""Forecast baselines on the same windows as the model (numpy; statsmodels for ETS parameters).

Each takes raw histories (N, L, C) and returns point forecasts (N, H, C).
"""

from __future__ import annotations

import warnings

import numpy as np


def last_value(x: np.ndarray, horizon: int) -> np.ndarray:
    """Repeat the last observation."""
    return np.repeat(x[:, -1:], horizon, axis=1)


def seasonal_naive(x: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Repeat the last full season; the last value when the season does not fit in the look-back."""
    if season <= 1 or season > x.shape[1]:
        return last_value(x, horizon)
    steps = x.shape[1] - season + np.arange(horizon) % season  # (H,)
    return x[:, steps]


def fit_ets_params(train: np.ndarray, season: int, max_points: int = 2000) -> np.ndarray:
    """Holt-Winters (additive, damped trend) smoothing parameters per channel, fitted by statsmodels.

    Args:
        train: (T, C) training part of the series.
        season: season length (1: no seasonal component).

    Returns:
        (4, C): alpha, beta, gamma, phi.
    """
    from statsmodels.tsa.holtwinters import ExponentialSmoothing

    seasonal = season > 1 and len(train) >= 3 * season
    params = []
    for c in range(train.shape[1]):
        y = train[-max(max_points, 3 * season):, c].astype(np.float64)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = ExponentialSmoothing(
                y, trend="add", damped_trend=True, seasonal="add" if seasonal else None,
                seasonal_periods=season if seasonal else None, initialization_method="estimated",
            ).fit()
        p = fit.params
        params.append([p["smoothing_level"], p["smoothing_trend"] or 0.0,
                       (p["smoothing_seasonal"] or 0.0) if seasonal else 0.0, p["damping_trend"]])
    return np.nan_to_num(np.asarray(params, dtype=np.float64).T)  # (4, C)


def ets(x: np.ndarray, horizon: int, season: int, params: np.ndarray) -> np.ndarray:
    """Holt-Winters forecasts with fixed parameters, states re-estimated on each window.

    The first season of the look-back initialises level and seasonal states, then the
    recursions run over the rest of the look-back (vectorised over windows and channels).
    """
    alpha, beta, gamma, phi = params  # each (C,)
    N, L, C = x.shape
    m = season if 1 < season <= L // 2 else 1
    x = x.astype(np.float64)
    level = x[:, :m].mean(axis=1)  # (N, C)
    trend = (x[:, m : 2 * m].mean(axis=1) - level) / m if m > 1 else x[:, 1] - x[:, 0]  # (N, C)
    seasons = x[:, :m] - level[:, None] if m > 1 else np.zeros((N, 1, C))  # (N, m, C)
    g = gamma if m > 1 else np.zeros_like(gamma)
    for t in range(m, L):
        s = seasons[:, t % m]
        new_level = alpha * (x[:, t] - s) + (1 - alpha) * (level + phi * trend)
        trend = beta * (new_level - level) + (1 - beta) * phi * trend
        seasons[:, t % m] = g * (x[:, t] - new_level) + (1 - g) * s
        level = new_level
    damp = np.cumsum(phi[None, :] ** np.arange(1, horizon + 1)[:, None], axis=0)  # (H, C)
    season_idx = (L + np.arange(horizon)) % m  # (H,)
    return level[:, None] + damp[None] * trend[:, None] + seasons[:, season_idx]  # (N, H, C)


def fit_linear_map(x: np.ndarray, y: np.ndarray, ridge: float = 1e-3, max_rows: int = 50_000,
                   seed: int = 0) -> np.ndarray:
    """The closed-form linear baseline: one ridge least-squares map from a look-back to a horizon,
    shared by every channel and applied to the window minus its last value (as NLinear does).

    Args:
        x: (N, L, C) raw training histories; y: (N, H, C) their raw actuals.
        ridge: L2 penalty relative to the mean diagonal of XᵀX.
        max_rows: at most this many (window, channel) rows, drawn at random, enter the solve.

    Returns:
        (L + 1, H): the weights, the last row being the intercept.
    """
    n, L, C = x.shape
    last = x[:, -1:, :]
    rows_x = np.transpose(x - last, (0, 2, 1)).reshape(n * C, L)  # (N*C, L)
    rows_y = np.transpose(y - last, (0, 2, 1)).reshape(n * C, -1)  # (N*C, H)
    scale = np.maximum(x.std(axis=1), 1e-8).reshape(n * C, 1)  # per (window, channel): scale-free map
    if len(rows_x) > max_rows:
        keep = np.random.default_rng(seed).choice(len(rows_x), max_rows, replace=False)
        rows_x, rows_y, scale = rows_x[keep], rows_y[keep], scale[keep]
    a = np.hstack([rows_x / scale, np.ones((len(rows_x), 1))])
    gram = a.T @ a
    gram[np.diag_indices(L)] += ridge * np.trace(gram[:L, :L]) / L
    return np.linalg.solve(gram, a.T @ (rows_y / scale))


def linear_map(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Forecasts (N, H, C) of the map `fit_linear_map` returned, for raw histories (N, L, C)."""
    n, L, C = x.shape
    last = x[:, -1:, :]
    rows = np.transpose(x - last, (0, 2, 1)).reshape(n * C, L)
    scale = np.maximum(x.std(axis=1), 1e-8).reshape(n * C, 1)
    out = (np.hstack([rows / scale, np.ones((len(rows), 1))]) @ weights) * scale  # (N*C, H)
    return np.transpose(out.reshape(n, C, -1), (0, 2, 1)) + last
