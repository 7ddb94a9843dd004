"""`deepapps healthcare explain --ckpt FILE INPUT...`: Grad-CAM heatmaps over the inputs (PNG).

Grad-CAM (Selvaraju et al. 2017): the activations A (C, h, w) of a convolutional stage are
weighted by the spatial mean of d(class logit)/dA per channel, summed over channels and
rectified; the map is scaled to [0, 1], resized to the image and overlaid on it. The default
stage is the backbone's last (timm's `feature_info[-1]`, e.g. `blocks.6` of EfficientNet,
`layer4` of a ResNet); `--layer` picks another module by name.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from deepapps.core.cli import explain_parser
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.registry import AppSpec
from deepapps.core.runtime.io import atomic_write


def parser():
    p = explain_parser("healthcare", "Grad-CAM heatmaps overlaid on each input, from a checkpoint (torch)",
                       "output folder for the PNG files", "gradcam")
    p.add_argument("inputs", nargs="+", help="PNG/JPEG/DICOM files, folders, FILE.npz[:split]")
    p.add_argument("--class", dest="target", default=None, help="class to explain (default: the predicted one)")
    p.add_argument("--layer", default=None, help="module of the backbone to explain (default: its last stage)")
    p.add_argument("--alpha", type=float, default=0.45, help="heatmap opacity over the image")
    p.add_argument("--display-size", "--display_size", dest="display_size", type=int, default=256,
                   help="side of the written PNG in pixels")
    return p


def main(app: AppSpec, argv: list[str]) -> int:
    args = parser().parse_args(argv)
    import torch

    from deepapps.apps.healthcare.data import list_inputs
    from deepapps.apps.healthcare.dicom import open_medical_image
    from deepapps.apps.healthcare.runtime import decide_label
    from deepapps.core.runtime.images import to_model_input
    from deepapps.core.training.checkpoints import shipped_model

    ckpt = Path(args.ckpt)
    shipped = shipped_model(app, ckpt)
    cfg, built = shipped.cfg, shipped.built
    if cfg.task != "image":
        raise ConfigError(f"--ckpt {ckpt}: an ECG signal model; Grad-CAM here explains image models only")
    net, labels, spec = shipped.module.net.eval(), built.labels, _spec(built)
    decide = decide_label(shipped.served.kind, shipped.served.kind.threshold)
    served = shipped.served.module  # as exported: TTA and temperature included
    if args.target is not None and args.target not in labels:
        raise ConfigError(f"--class {args.target}: not one of the labels {labels}")
    layer_name, layer = target_layer(net.backbone, args.layer)
    reader = lambda path: open_medical_image(path, spec.channels, cfg.data.window_center, cfg.data.window_width)  # noqa: E731
    items = list_inputs(args.inputs, reader)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    print("path,label,probability,explained,heatmap,error")
    failures = 0
    for i, item in enumerate(items):
        try:
            if item.error:
                raise DataError(item.error)
            pixels = to_model_input(item.load(), spec)  # (H, W, C) uint8, as predict feeds the model
        except DataError as exc:
            failures += 1
            print(f"error: {exc}", file=sys.stderr)
            print(f"{_csv(item.name)},,,,,{_csv(str(exc))}")
            continue
        x = torch.from_numpy(pixels)[None]  # (1, H, W, C)
        with torch.no_grad():
            probs = served(x)[0].numpy()
        label = decide(probs)
        k = labels.index(args.target or (label if label in labels else labels[int(np.argmax(probs))]))
        cam = grad_cam(net, layer, x, k)
        if i == 0 and min(cam.shape) < 4:
            print(f"note: {layer_name} gives a {cam.shape[0]}x{cam.shape[1]} map at {spec.size} px; "
                  "--layer with an earlier stage gives a finer one", file=sys.stderr)
        stem = re.sub(r"\.(png|jpe?g|dcm|dicom|bmp|tiff?|webp)$", "", Path(item.name).name, flags=re.I)
        path = out / f"{i:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)}_gradcam.png"
        image = overlay(pixels, cam, args.alpha, args.display_size)
        atomic_write(path, lambda tmp: image.save(tmp, format="PNG"))
        print(f"{_csv(item.name)},{_csv(label)},{probs[k]:.6f},{_csv(labels[k])},{path},")
    print(f"explained {len(items) - failures} of {len(items)} inputs with Grad-CAM on {layer_name}; PNGs in {out}",
          file=sys.stderr)
    return 2 if failures == len(items) else 0


def target_layer(backbone, name: str | None):
    """(name, module): `name`, else the last feature stage timm reports, else the last Conv2d."""
    from torch import nn

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
        raise ConfigError("the backbone has no convolution: Grad-CAM needs a CNN (pass --layer)")
    return convs[-1], modules[convs[-1]]


def grad_cam(net, layer, pixels, k: int):
    """Grad-CAM (h, w) in [0, 1] of class `k` at `layer` for one uint8 NHWC image (1, H, W, C)."""
    import torch

    store = {}

    def hook(module, inputs, output):
        store["activation"] = output
        output.register_hook(lambda grad: store.__setitem__("gradient", grad))

    handle = layer.register_forward_hook(hook)
    try:
        with torch.enable_grad():
            logits = net(pixels)  # (1, K)
            net.zero_grad(set_to_none=True)
            logits[0, k].backward()
    finally:
        handle.remove()
    activation, gradient = store["activation"][0].detach(), store["gradient"][0]  # (C, h, w)
    cam = torch.relu((gradient.mean(dim=(1, 2))[:, None, None] * activation).sum(0))  # (h, w)
    return (cam / cam.max() if cam.max() > 0 else cam).numpy()


def overlay(pixels: np.ndarray, cam: np.ndarray, alpha: float, size: int) -> Image.Image:
    """The image (grey or RGB) with the jet-coloured heatmap blended over it, `size` px square."""
    from matplotlib import colormaps

    base = Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).convert("RGB").resize((size, size), Image.BICUBIC)
    heat = Image.fromarray((cam * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
    coloured = (colormaps["jet"](np.asarray(heat) / 255.0)[..., :3] * 255).astype(np.uint8)
    return Image.blend(base, Image.fromarray(coloured), alpha)


def _spec(built):
    from deepapps.core.runtime.images import ImageSpec

    return ImageSpec.from_meta(built.preprocess)


def _csv(text: str) -> str:
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text
