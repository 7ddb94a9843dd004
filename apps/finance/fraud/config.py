"""Fraud fit config (torch-free: `deepapps fraud --help` and serving import it cheaply)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepapps.core.config import PrivacyConfig, TrainerConfig


@dataclass
class TabularDataConfig:
    """Where the transactions are, which column plays which role, and how they are split."""

    path: str = "builtin:transactions"
    """CSV or Parquet file, or `builtin:transactions` (the synthetic generator, see apps/finance/fraud/synth.py)."""
    label_column: str = "auto"
    """Label column (0/1 or two values, the rarer = fraud); `auto`: is_fraud, fraud, class, label, target, y."""
    time_column: str | None = "auto"
    """Time column for the time split; `auto`: timestamp, time, ... or a Datetime column; null: none."""
    id_columns: list[str] | None = None
    """Columns copied to predictions and never used as features; null: names ending in `_id` or `id`."""
    categorical_columns: list[str] | None = None
    """Categorical features; null: every text/bool column."""
    numeric_columns: list[str] | None = None
    """Numeric features; null: every number column that has no other role."""
    exclude_columns: list[str] = field(default_factory=list)
    """Columns never used as features."""
    group_columns: list[str] | None = None
    """Sensitive attributes (e.g. `[sex, race]`): fairness by group in metrics.json and the model card. Reporting
    only: not features, unless also listed in categorical_columns or numeric_columns."""
    missing_values: list[str] = field(default_factory=lambda: ["?"])
    """Text values read as missing besides empty fields (compared without surrounding spaces)."""
    log_columns: list[str] | None = None
    """Numeric columns given sign(x)*log1p(|x|) before scaling; null: names containing `amount`."""
    use_time_as_feature: bool = False
    """Also feed the time column as a number (off: time drifts between train and serving)."""
    split: str = "time"
    """`time` (train on the earliest rows, validate then test on later ones) or `random` (stratified)."""
    val_fraction: float = 0.15
    """Share of rows for validation."""
    test_fraction: float = 0.15
    """Share of rows for testing."""
    split_seed: int = 0
    """Seed of the random split."""
    min_category_count: int = 5
    """Categories seen fewer times in train go to the unknown bucket."""
    synth_rows: int = 200_000
    """builtin:transactions: number of rows generated."""
    synth_fraud_rate: float = 0.002
    """builtin:transactions: share of fraudulent rows."""
    synth_seed: int = 0
    """builtin:transactions: generator seed."""
    gan_oversample: float = 0.0
    """Add GAN-generated frauds to the training split only, as a multiple of its real frauds (1.0 doubles them); 0: off."""
    gan_steps: int = 2000
    """Generator steps of the oversampling WGAN-GP (5 critic steps each)."""
    batch_size: int = 512
    """Rows per training step."""
    num_workers: int = 0
    """DataLoader workers (tensors are in memory: 0 is fastest)."""
    streaming: str = "auto"
    """`true`: stream a Parquet file (or folder of them) larger than memory: the split from a pass over the
    label/time columns, the statistics column by column, the train rows in shuffled record batches, val/test in
    batches (metrics keep scores and labels only); `false`: read the table into memory; `auto`: stream Parquet above
    10% of RAM (printed)."""
    shuffle_buffer: int = 200_000
    """Streaming: rows of the shuffle buffer the train batches are drawn from."""


@dataclass
class TabularModelConfig:
    """The network: an MLP, an FT-Transformer-like attention model, or an autoencoder anomaly score."""

    arch: str = "mlp"
    """`mlp` (batch norm, dropout), `ft_transformer` (a token per feature, self-attention) or `autoencoder`
    (reconstruction error as the score; for scarce labels)."""
    hidden: list[int] = field(default_factory=lambda: [128, 64])
    """MLP hidden widths."""
    dropout: float = 0.1
    """Dropout in MLP blocks and transformer layers."""
    embedding_dim: int = 8
    """MLP: width of each categorical embedding."""
    d_token: int = 32
    """FT-Transformer: token width."""
    n_layers: int = 2
    """FT-Transformer: attention layers."""
    n_heads: int = 4
    """FT-Transformer: attention heads."""
    ae_hidden: list[int] = field(default_factory=lambda: [32, 8])
    """Autoencoder: encoder widths, the last is the bottleneck (the decoder mirrors them)."""
    ae_train_on: str = "normal"
    """Autoencoder: learn to reconstruct `normal` rows only (labels needed on train) or `all` rows (no labels)."""


@dataclass
class TabularOptimConfig:
    """Loss, imbalance handling, optimizer and schedule."""

    lr: float = 2e-3
    """Peak learning rate of AdamW."""
    weight_decay: float = 1e-4
    """AdamW weight decay."""
    schedule: str = "cosine"
    """`cosine` (with linear warm-up), `onecycle`, or `constant`."""
    warmup_fraction: float = 0.05
    """Share of the steps spent warming up (cosine)."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss."""
    class_weights: str | None = "sqrt"
    """null, `balanced` (inverse class frequency), `sqrt` (its square root) or `w0,w1`."""
    focal_gamma: float = 0.0
    """Focal loss gamma (0 = plain weighted cross-entropy)."""


@dataclass
class DecisionConfig:
    """Costs that set the decision threshold on validation (stored in the model, used by predict)."""

    cost_missed: float = 100.0
    """Cost of a missed fraud (false negative)."""
    cost_review: float = 5.0
    """Cost of reviewing a flagged transaction (every positive decision)."""
    fpr: float = 0.01
    """False-positive rate at which recall is reported."""
    top_k: int = 100
    """k of precision at k (the k highest scores of a split)."""
    group_thresholds: str | None = None
    """A categorical feature column (also a model input) whose groups get their own decision thresholds, set on
    validation so that each group's TPR equals the model's overall TPR (core.fairness.equal_tpr_thresholds; groups
    with fewer than 20 validation frauds keep the cost threshold). Stored in the model and applied by predict, serve
    and evaluate; metrics.json `group_thresholds` reports the test TPR gap and cost before and after."""


@dataclass
class FraudFitConfig:
    """Train a fraud model on transactions, export it to ONNX and evaluate the exported file."""

    data: TabularDataConfig = field(default_factory=TabularDataConfig)
    model: TabularModelConfig = field(default_factory=TabularModelConfig)
    optim: TabularOptimConfig = field(default_factory=TabularOptimConfig)
    trainer: TrainerConfig = field(default_factory=lambda: TrainerConfig(monitor="val/auprc", max_epochs=10, patience=4))
    decision: DecisionConfig = field(default_factory=DecisionConfig)
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)
    fairness_thresholds: bool = True
    """With data.group_columns: also fit per-group thresholds equalising the TPR on validation (fairlearn
    ThresholdOptimizer) and report their test cost against the disparity removed (reporting only; the model keeps
    one threshold)."""
    baselines: bool = True
    """Also train logistic regression and HistGradientBoosting on the same split and report them."""
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
