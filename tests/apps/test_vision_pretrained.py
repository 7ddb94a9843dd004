"""Real ImageNet EfficientNet-Lite0 weights classify a real cat photo as a cat."""

from __future__ import annotations

import pytest
import torch

from deepapps.core.training.backbones import create_timm_model, data_config, local_weights_path
from deepapps.core.runtime.images import ImageSpec, to_model_input
from tests.helpers import SHARED

CATS = range(281, 286)  # tabby, tiger cat, Persian, Siamese, Egyptian cat


def weight_files():
    files = []
    if local_weights_path("tf_efficientnet_lite0"):
        files.append(pytest.param(str(local_weights_path("tf_efficientnet_lite0")), id="pip-package"))
    shared = SHARED / "weights" / "tf_efficientnet_lite0" / "model.safetensors"
    if shared.is_file():
        files.append(pytest.param(str(shared), id="shared", marks=pytest.mark.shared))
    return files or [pytest.param(None, marks=pytest.mark.skip(reason="no EfficientNet-Lite0 weights here"))]


@pytest.mark.parametrize("weights", weight_files())
def test_lite0_sees_a_cat_in_chelsea(weights):
    skimage_data = pytest.importorskip("skimage.data")
    from PIL import Image

    model, _ = create_timm_model("tf_efficientnet_lite0", 1000, weights)
    cfg = data_config(model)
    assert cfg["mean"] == (0.5, 0.5, 0.5) and cfg["input_size"] == (3, 224, 224)
    spec = ImageSpec(224, cfg["crop_pct"], cfg["interpolation"])
    pixels = to_model_input(Image.fromarray(skimage_data.chelsea()), spec)
    x = (torch.from_numpy(pixels).permute(2, 0, 1)[None].float() / 255 - 0.5) / 0.5
    with torch.no_grad():
        probs = torch.softmax(model.eval()(x), -1)[0]
    top = int(probs.argmax())
    assert top in CATS, f"top-1 {top} is not a cat"
    assert float(probs[list(CATS)].sum()) > 0.5
