"""Forecasting run configuration; each field's docstring is its CLI help. Torch-free."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepapps.core.config import OptimConfig, TrainerConfig


@dataclass
class SeriesDataConfig:
    """Where the series are, which columns matter, how they are regularised, split and windowed."""

    path: str = "builtin:co2"
    """CSV or Parquet file (long: one row per series and time; wide: one column per target), or
    `builtin:co2` (weekly Mauna Loa CO2 1958-2001 as shipped by statsmodels, with real gaps)."""
    timestamp: str = "date"
    """Timestamp column (parsed from text when needed)."""
    target: list[str] | None = None
    """Target columns; null takes every numeric column except timestamp and id (multivariate).
    One column, e.g. [OT], is the univariate mode."""
    covariates: list[str] = field(default_factory=list)
    """Past-observed covariate columns (numeric, known up to the forecast origin only): fed to the
    model over the look-back, not forecast. Example: [HUFL, HULL] with --data.target '[OT]'."""
    calendar: list[str] = field(default_factory=list)
    """Known-future calendar features generated from the timestamps, for the look-back and the
    horizon: any of minute, hour, weekday, day, month, dayofyear, holiday. Example: [hour, weekday, month]."""
    holidays: str | None = None
    """Region of the `holiday` calendar feature: a country code of the `holidays` package, optionally
    with a subdivision (`US`, `US-CA`, `GB`, `DE`, `CN`). Needed only when --data.calendar lists holiday."""
    id_column: str | None = None
    """Series id column of a long file holding many series; null means one series."""
    freq: str | None = None
    """Sampling interval as a polars duration (`1h`, `15m`, `1d`, `1w`, `1mo`); null infers it."""
    fill: str = "linear"
    """How missing steps and values are filled: `linear`, `ffill`, `zero`, or `none` (refuse)."""
    look_back: int | str = "auto"
    """Look-back window L (time steps fed to the model); `auto`: two of the frequency's longest natural cycles
    (hourly: two weeks, 336; weekly: two years, 104), within 720 steps and half the training part
    (apps/finance/forecast/auto.py)."""
    horizon: int | str = "auto"
    """Forecast horizon H (time steps predicted at once); `auto`: one shortest natural cycle of the frequency
    (hourly 24, daily 7, weekly 52, monthly 12)."""
    split: str = "fractions"
    """`ett` (12/4/4 months of 30 days: the ETT protocol) or `fractions` (val/test fractions)."""
    val_fraction: float = 0.1
    """Share of each series' time steps held out for validation (split: fractions)."""
    test_fraction: float = 0.2
    """Share of each series' time steps held out for testing (split: fractions)."""
    season_length: int | None = None
    """Season of the seasonal-naive and ETS baselines and MASE; null derives it from the frequency."""
    batch_size: int = 32
    """Windows per training step."""
    num_workers: int = 0
    """DataLoader workers (windows are cheap slices of one in-memory array)."""


@dataclass
class ForecastModelConfig:
    """Network: a linear, recurrent or patch-transformer forecaster with RevIN and quantile outputs."""

    name: str = "dlinear"
    """`dlinear` (trend/seasonal decomposition + linear), `rlinear` (RevIN + one linear map shared
    by all channels, Li et al. 2023), `rnn` (LSTM/GRU, direct multi-horizon
    head) or `patchtst` (channel-independent patch transformer)."""
    quantiles: list[float] = field(default_factory=lambda: [0.1, 0.5, 0.9])
    """Predicted quantiles (must include 0.5, the point forecast); trained with pinball loss."""
    revin: bool = True
    """Instance normalisation (RevIN) of each window inside the model."""
    kernel_size: int = 25
    """DLinear: moving-average kernel of the trend/seasonal decomposition."""
    cell: str = "gru"
    """RNN: `gru` or `lstm`."""
    hidden_size: int = 64
    """RNN hidden size."""
    num_layers: int = 2
    """RNN layers (PatchTST uses `depth`)."""
    patch_len: int = 16
    """PatchTST: patch length."""
    patch_stride: int = 8
    """PatchTST: stride between patches."""
    d_model: int = 128
    """PatchTST: embedding size."""
    n_heads: int = 16
    """PatchTST: attention heads."""
    depth: int = 3
    """PatchTST: transformer blocks."""
    d_ff: int = 256
    """PatchTST: feed-forward size."""
    dropout: float = 0.2
    """Dropout (PatchTST blocks and head, RNN between layers)."""
    mse_weight: float = 0.0
    """Weight of an extra MSE term on the median (0 = pure pinball loss)."""
    calibrate: bool = True
    """Calibrate the outer quantiles on the validation split (per horizon step, a factor on each
    quantile's distance to the median, split-conformal style), baked into the exported graph."""
    exog_hidden: int = 32
    """Hidden size of the small network that maps calendar features to an additive effect."""


@dataclass
class ForecastFitConfig:
    """Train a forecaster, export it to ONNX (normalisation inside) and backtest the exported file."""

    data: SeriesDataConfig = field(default_factory=SeriesDataConfig)
    model: ForecastModelConfig = field(default_factory=ForecastModelConfig)
    optim: OptimConfig = field(default_factory=lambda: OptimConfig(lr=1e-3, weight_decay=1e-4))
    trainer: TrainerConfig = field(
        default_factory=lambda: TrainerConfig(max_epochs=20, monitor="val/mse", monitor_mode="min")
    )
    run_dir: str | None = None
    """Output folder; None makes runs/<app>/<timestamp>."""
    resume: bool = False
    """Continue the run in run_dir from checkpoints/last.ckpt."""
    seed: int = 42
    """Global seed (weights init, data order)."""
    export_fp16: bool = False
    """Also write model.fp16.onnx for GPU serving."""
    export_int8: bool = False
    """Also write model.int8.onnx; refused for this app with the measured reason (see its
    Training.int8_method)."""
    int8_tolerance: float = 1.0
    """Largest loss of the monitored metric (trainer.monitor) the int8 copy may show on the
    validation split, in points (hundredths: 1.0 = 0.01)."""
