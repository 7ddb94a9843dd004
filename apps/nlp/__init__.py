"""NLP app: fine-tune a Hugging Face encoder for text classification (sentiment), ONNX fp32 + int8."""

from pathlib import Path

from deepapps.core.registry import AppCommand, AppSpec

APP = AppSpec(
    name="nlp",
    help="text classification (sentiment): fine-tune a transformer, export ONNX fp32/int8, predict with tokenizers",
    family="text_classification",
    config_class="deepapps.apps.nlp.config:NlpFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    training="deepapps.apps.nlp.training:NlpTraining",
    serving="deepapps.apps.nlp.runtime:NlpServing",
    commands=(
        AppCommand("quantize", "dynamic int8 copy of an nlp ONNX model, with its accuracy change measured",
                   "deepapps.apps.nlp.quantize:main"),
        AppCommand("explain", "per-token attributions from a checkpoint (Captum layer integrated gradients): HTML + JSON",
                   "deepapps.apps.nlp.explain:main"),
    ),
)
