"""`explain` of the image classification family (vision, healthcare images), by Captum.

Methods (the network sees the image as the ONNX file does: uint8 pixels resized and cropped by
predict's preprocessing, here as floats 0..255 so gradients flow):

- `gradcam` (default): LayerGradCam (Selvaraju et al. 2017) at a convolutional stage (the
  backbone's last, timm's `feature_info[-1]`; `--layer` picks another), rectified, upsampled
  bilinearly to the image.
- `guided_gradcam`: GuidedGradCam: Grad-CAM times guided backpropagation, per pixel.
- `integrated_gradients`: IntegratedGradients from a black image (every pixel 0); the manifest
  records each input's convergence delta.
- `occlusion`: Occlusion: the drop of the class logit when a square patch (1/8 of the side,
  stride 1/16) is set to 0.

Per input: `NNNN_<name>_<method>.png` (the map over the image) and `.npy` (the map, H x W).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import numpy as np
import torch

from deepapps.core.errors import ConfigError, DataError
from deepapps.core.training.explain import (
    Explained,
    ExplainSession,
    decide,
    explained_index,
    safe_stem,
)
from PIL import Image
from torch import nn

IMAGE_METHODS = {
    "gradcam": "Captum LayerGradCam at a convolutional stage, upsampled to the image",
    "guided_gradcam": "Captum GuidedGradCam (Grad-CAM x guided backpropagation)",
    "integrated_gradients": "Captum IntegratedGradients from a black image",
    "occlusion": "Captum Occlusion: logit drop when a patch is set to 0",
}
BASELINES = {
    "gradcam": "none (gradients at the input)",
    "guided_gradcam": "none (gradients at the input)",
    "integrated_gradients": "black image (every pixel 0)",
    "occlusion": "patches set to 0 (black)",
}


@dataclass
class ImageItem:
    """One image to explain: a name and how to load it as a PIL image (or why it cannot be)."""

    name: str
    load: Callable[[], Image.Image] | None = None
    error: str = ""


class ChannelsFirst(nn.Module):
    """The family's network (uint8-range NHWC in) taking float NCHW, the layout Captum's image
    methods (GuidedGradCam's upsampling, Occlusion's windows) assume."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x.permute(0, 2, 3, 1))


def add_image_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--layer", default=None, help="module of the backbone for the Grad-CAM methods "
                                                      "(default: its last stage)")
    parser.add_argument("--steps", type=int, default=32, help="integrated-gradients steps (default 32; 128 for ECG signals)")
    parser.add_argument("--alpha", type=float, default=0.45, help="map opacity over the image")
    parser.add_argument("--display-size", "--display_size", dest="display_size", type=int, default=256,
                        help="side of the written PNG in pixels")


def explain_images(session: ExplainSession, items: list[ImageItem]) -> Iterable[Explained]:
    """Attribute every image with the session's method; unreadable images become error records."""
    from deepapps.core.runtime.images import ImageSpec, to_model_input

    args, shipped = session.args, session.shipped
    if args.steps < 1 or not 0 <= args.alpha <= 1 or args.display_size < 8:
        raise ConfigError("--steps must be at least 1, --alpha in [0, 1] and --display-size at least 8")
    net = shipped.module.net.eval()
    model = ChannelsFirst(net).eval()
    spec = ImageSpec.from_meta(shipped.built.preprocess)
    layer_name, layer = (target_layer(net.backbone, args.layer) if session.method in ("gradcam", "guided_gradcam")
                         else ("", None))
    session.baseline = BASELINES[session.method]
    decide_label, served = decide(shipped.served.kind), shipped.served.module
    labels = session.labels
    for i, item in enumerate(items):
        try:
            if item.error:
                raise DataError(item.error)
            pixels = to_model_input(item.load(), spec)  # (H, W, C) uint8, as predict feeds the model
        except DataError as exc:
            yield Explained(item.name, error=str(exc))
            continue
        x = torch.from_numpy(pixels)[None]  # (1, H, W, C)
        with torch.no_grad():
            probs = served(x)
        label = decide_label(probs[0].numpy())
        k = session.target_index(explained_index(labels, label, probs[0].numpy()))
        attribution, delta = attribute(model, layer, x, k, session.method, args.steps)
        stem = f"{safe_stem(i, item.name)}_{session.method}"
        shown = np.abs(attribution) if session.method != "gradcam" else np.maximum(attribution, 0)
        peak = float(shown.max())
        files = [session.write_png(f"{stem}.png", overlay(pixels, shown / peak if peak > 0 else shown,
                                                          args.alpha, args.display_size)),
                 session.write_npy(f"{stem}.npy", attribution)]
        yield Explained(item.name, label, labels[k], files, delta,
                        session.agrees_with_onnx((x,), probs, decide_label))
    if session.method in ("gradcam", "guided_gradcam"):
        session.baseline += f"; layer {layer_name}"


def attribute(model: nn.Module, layer: nn.Module, x: torch.Tensor, k: int, method: str,
              steps: int = 32) -> tuple[np.ndarray, float | None]:
    """(map (H, W) of class `k` for one uint8 NHWC image `x` (1, H, W, C), convergence delta or None)."""
    from captum.attr import (
        GuidedGradCam,
        IntegratedGradients,
        LayerAttribution,
        LayerGradCam,
        Occlusion,
    )

    inputs = x.permute(0, 3, 1, 2).float().requires_grad_(True)  # (1, C, H, W) in 0..255
    size, channels = inputs.shape[-1], inputs.shape[1]
    delta = None
    with torch.enable_grad():
        if method == "gradcam":
            cam = LayerGradCam(model, layer).attribute(inputs, target=k, relu_attributions=True)  # (1, 1, h, w)
            attr = LayerAttribution.interpolate(cam, tuple(inputs.shape[-2:]), "bilinear")
        elif method == "guided_gradcam":
            attr = GuidedGradCam(model, layer).attribute(inputs, target=k)  # (1, C, H, W)
        elif method == "integrated_gradients":
            attr, d = IntegratedGradients(model).attribute(inputs, baselines=torch.zeros_like(inputs), target=k,
                                                           n_steps=steps, internal_batch_size=16,
                                                           return_convergence_delta=True)
            delta = float(d.abs().max())
        elif method == "occlusion":
            side = max(1, size // 8)
            stride = max(1, size // 16)
            attr = Occlusion(model).attribute(inputs, sliding_window_shapes=(channels, side, side),
                                              strides=(channels, stride, stride), baselines=0, target=k,
                                              perturbations_per_eval=16)
        else:
            raise ConfigError(f"--method {method}: unknown; choose one of {', '.join(IMAGE_METHODS)}")
    return attr[0].sum(0).detach().numpy().astype(np.float32), delta  # channels summed: (H, W)


def target_layer(backbone: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """(name, module): `name`, else the last feature stage timm reports, else the last Conv2d."""
    modules = dict(backbone.named_modules())
    if name is not None:
        if name not in modules:
            stages = [m["module"] for m in getattr(backbone, "feature_info", [])]
            raise ConfigError(f"--layer {name}: no such module in the backbone (its stages: {', '.join(stages)})")
        return name, modules[name]
    info = getattr(backbone, "feature_info", None)
    if info and info[-1].get("module") in modules:
        return info[-1]["module"], modules[info[-1]["module"]]
    convs = [n for n, m in modules.items() if isinstance(m, nn.Conv2d)]
    if not convs:
        raise ConfigError("the backbone has no convolution: Grad-CAM needs a CNN (pass --layer, or "
                          "--method integrated_gradients / occlusion)")
    return convs[-1], modules[convs[-1]]


def overlay(pixels: np.ndarray, heat: np.ndarray, alpha: float, size: int) -> Image.Image:
    """The image (grey or RGB) with the jet-coloured map (H, W) in [0, 1] blended over it, `size` px square."""
    from matplotlib import colormaps

    base = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB")
    base = base.resize((size, size), Image.BICUBIC)
    heat = Image.fromarray((np.clip(heat, 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    coloured = (colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(base, Image.fromarray(coloured), alpha)


# --- vision ---------------------------------------------------------------------------------


def vision_items(inputs: list[str], channels: int) -> list[ImageItem]:
    """Image files and folders, as `deepapps vision predict` reads them."""
    from functools import partial

    from deepapps.core.runtime.images import list_images, open_image

    return [ImageItem(str(p), partial(open_image, p, channels)) for p in list_images(inputs)]


def _vision_explain(session: ExplainSession, inputs: list[str]) -> Iterable[Explained]:
    from deepapps.core.runtime.images import ImageSpec

    channels = ImageSpec.from_meta(session.shipped.built.preprocess).channels
    return explain_images(session, vision_items(inputs, channels))


def vision_main(app, argv: list[str]) -> int:
    """`deepapps vision explain`."""
    from deepapps.core.training.explain import Explainer, run_explain

    explainer = Explainer("attribution maps over input images from a vision checkpoint (Captum)",
                          "image files (PNG/JPEG/...) or folders of them", lambda shipped: IMAGE_METHODS,
                          _vision_explain, add_image_arguments, tuple(IMAGE_METHODS))
    return run_explain(app, argv, explainer)
