"""Vision app: fine-tune any timm backbone on an image folder, manifest or .npz."""

from pathlib import Path

from deepapps.core.registry import AppSpec

APP = AppSpec(
    name="vision",
    help="general image classification: fine-tune a timm backbone, export ONNX, predict images",
    task="image_classification",
    config_class="deepapps.core.config:ImageFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    pipeline="deepapps.core.pipelines.image_classification",
    runtime="deepapps.core.runtime.image_classification",
)
