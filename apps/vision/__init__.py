"""Vision app: fine-tune any timm backbone on an image folder, manifest or .npz.

The image classification family it trains is shared with healthcare, so it lives in the core
(core.training.image_family, core.runtime.image_classification); this folder holds the configs.
"""

from pathlib import Path

from deepapps.core.registry import AppCommand, AppSpec

APP = AppSpec(
    name="vision",
    help="general image classification: fine-tune a timm backbone, export ONNX, predict images",
    family="image_classification",
    config_class="deepapps.core.config:ImageFitConfig",
    configs_dir=Path(__file__).parent / "configs",
    training="deepapps.core.training.image_family:ImageTraining",
    serving="deepapps.core.runtime.image_classification:ImageServing",
    family_default=True,
    commands=(
        AppCommand("explain", "attribution maps over input images from a checkpoint (Captum: Grad-CAM, IG, occlusion)",
                   "deepapps.core.training.image_explain:vision_main"),
    ),
)
