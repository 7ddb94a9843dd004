"""Fraud app: tabular transactions -> MLP / FT-Transformer -> one ONNX file taking raw columns."""

from pathlib import Path

from deepapps.core.registry import AppCommand, AppSpec

APP = AppSpec(
    name="fraud",
    help="fraud detection on tabular transactions: MLP/FT-Transformer/autoencoder, cost threshold, streaming ONNX scoring",
    family="tabular_classification",
    config_class="deepapps.apps.finance.fraud.config:FraudFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    training="deepapps.apps.finance.fraud.training:FraudTraining",
    serving="deepapps.apps.finance.fraud.runtime:FraudServing",
    commands=(
        AppCommand("explain", "feature attributions per transaction from a checkpoint (Captum: feature ablation, IG)",
                   "deepapps.apps.finance.fraud.explain:main"),
    ),
)
