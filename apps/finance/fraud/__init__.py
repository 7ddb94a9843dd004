"""Fraud app: tabular transactions -> MLP / FT-Transformer -> one ONNX file taking raw columns."""

from pathlib import Path

from deepapps.core.registry import AppCommand, AppSpec

APP = AppSpec(
    name="fraud",
    help="fraud detection on tabular transactions: MLP/FT-Transformer/autoencoder, cost threshold, streaming ONNX scoring",
    task="tabular_classification",
    config_class="deepapps.apps.finance.fraud.config:FraudFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    pipeline="deepapps.apps.finance.fraud.pipeline",
    runtime="deepapps.apps.finance.fraud.runtime",
    commands=(
        AppCommand("predict", "score a CSV/Parquet table in streaming chunks (ONNX Runtime, no torch)",
                   "deepapps.apps.finance.fraud.runtime:predict_command"),
        AppCommand("explain", "integrated-gradients feature attributions per transaction, from a checkpoint (torch)",
                   "deepapps.apps.finance.fraud.explain:main"),
    ),
)
