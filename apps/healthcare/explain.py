"""`deepapps healthcare explain (--ckpt FILE | --model FILE.onnx) INPUT... --out DIR`: attributions by Captum.

Image models: the image family's methods (core.training.image_explain: Grad-CAM by default,
guided Grad-CAM, integrated gradients, occlusion) over PNG/JPEG/DICOM files, folders and
`FILE.npz[:split]`, with the DICOM window the model was trained with.

ECG (signal) models: integrated gradients of the explained class's logit from an all-zero signal
(stated in the manifest). A z-normalising front end (the default) makes every scaled copy of a
signal the same input, so the straight path from zero would jump at its start: the integral is
then taken over the front end's output (layer integrated gradients), where the zero signal is a
flat line. Per signal a PNG of the trace shaded by attribution (red pushes toward
the class, blue away) and a CSV `sample,value,attribution`.
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import polars as pl
import torch

from deepapps.core.errors import ConfigError, DataError
from deepapps.core.registry import AppSpec
from deepapps.core.training.explain import (
    Explained,
    Explainer,
    ExplainSession,
    decide,
    explained_index,
    run_explain,
    safe_stem,
)
from deepapps.core.training.image_explain import (
    IMAGE_METHODS,
    ImageItem,
    add_image_arguments,
    explain_images,
)

SIGNAL_METHODS = {"integrated_gradients": "Captum (layer) IntegratedGradients over the samples, from an all-zero signal"}


def methods(shipped) -> dict[str, str]:
    return SIGNAL_METHODS if shipped.cfg.task == "signal" else IMAGE_METHODS


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_image_arguments(parser)
    parser.set_defaults(steps=None)  # images 32, ECG signals 128 (cheap at one dimension)
    parser.add_argument("--rows", type=int, default=20, help="ECG: explain the first N signals of each file (default 20)")


def explain(session: ExplainSession, inputs: list[str]) -> Iterable[Explained]:
    if session.shipped.cfg.task == "signal":
        return explain_signals(session, inputs)
    session.args.steps = 32 if session.args.steps is None else session.args.steps
    from deepapps.apps.healthcare.data import list_inputs
    from deepapps.apps.healthcare.dicom import open_medical_image
    from deepapps.core.runtime.images import ImageSpec

    cfg = session.shipped.cfg
    channels = ImageSpec.from_meta(session.shipped.built.preprocess).channels
    reader = lambda path: open_medical_image(path, channels, cfg.data.window_center, cfg.data.window_width)
    items = [ImageItem(item.name, item.load, item.error) for item in list_inputs(inputs, reader)]
    return explain_images(session, items)


def explain_signals(session: ExplainSession, inputs: list[str]) -> Iterable[Explained]:
    """Integrated gradients of each ECG signal (the first --rows rows of each input)."""
    from captum.attr import IntegratedGradients

    from deepapps.apps.healthcare.signals import read_signal_rows

    args, shipped = session.args, session.shipped
    args.steps = 128 if args.steps is None else args.steps
    if args.rows < 1 or args.steps < 1:
        raise ConfigError("--rows and --steps must be at least 1")
    length = int(shipped.built.preprocess["length"])
    label_column = shipped.built.preprocess.get("label_column") or "label"
    net, served = shipped.module.net.eval(), shipped.served.module
    decide_label, labels = decide(shipped.served.kind), session.labels
    front = getattr(net, "front_end", None)
    on_front = front is not None and getattr(front, "normalize", False)
    if on_front:
        # a z-normalising front end maps every scaled copy of a signal to the same input, so a path
        # from the zero signal jumps at its start; integrate over the front end's output instead,
        # from the flat line the zero signal becomes there
        from captum.attr import LayerIntegratedGradients

        ig = LayerIntegratedGradients(net, front)
        session.baseline = ("all-zero signal, attributed at the front end's output (filtered, z-normalised "
                            "samples: the zero signal is a flat line there)")
    else:
        ig = IntegratedGradients(net)
        session.baseline = "all-zero signal"
    index = 0
    for path in inputs:
        try:
            rows = read_signal_rows(str(path), label_column, None, length)[:args.rows]
        except DataError as exc:
            yield Explained(str(path), error=str(exc))
            continue
        for row in rows:
            name = f"{row.path}[{row.row}]"
            if row.error:
                yield Explained(name, error=row.error)
                continue
            x = torch.from_numpy(np.ascontiguousarray(row.samples, np.float32))[None]  # (1, L)
            with torch.no_grad():
                probs = served(x)
            label = decide_label(probs[0].numpy())
            k = session.target_index(explained_index(labels, label, probs[0].numpy()))
            with torch.enable_grad():
                attr, delta = ig.attribute(x.clone().requires_grad_(True), baselines=torch.zeros_like(x), target=k,
                                           n_steps=args.steps, internal_batch_size=64,
                                           return_convergence_delta=True)
            a = attr[0].detach().numpy()
            if len(a) != length:  # a resampling front end: back onto the input's samples
                a = np.interp(np.linspace(0, len(a) - 1, length), np.arange(len(a)), a) * len(a) / length
            stem = f"{safe_stem(index, Path(row.path).name)}_r{row.row}_integrated_gradients"
            index += 1
            table = pl.DataFrame({"sample": np.arange(length), "value": row.samples.astype(np.float32),
                                  "attribution": a.astype(np.float32)})
            files = [session.write_png(f"{stem}.png", signal_figure(row.samples, a, f"{name}: {labels[k]}")),
                     session.write_csv(f"{stem}.csv", table)]
            yield Explained(name, label, labels[k], files, float(delta.abs().max()),
                            session.agrees_with_onnx((x,), probs, decide_label))


def signal_figure(samples: np.ndarray, attribution: np.ndarray, title: str):
    """The trace with each sample's attribution as a red (toward the class) / blue (away) band behind it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(10, 3))
    peak = float(np.abs(attribution).max()) or 1.0
    t = np.arange(len(samples))
    low, high = float(samples.min()), float(samples.max())
    ax.imshow(attribution[None] / peak, aspect="auto", cmap="bwr", vmin=-1, vmax=1, alpha=0.6,
              extent=(-0.5, len(samples) - 0.5, low, high if high > low else low + 1))
    ax.plot(t, samples, color="black", linewidth=1)
    ax.set_xlabel("sample")
    ax.set_title(f"integrated gradients ({title}); red: toward the class, blue: away", fontsize=9)
    return fig


def main(app: AppSpec, argv: list[str]) -> int:
    explainer = Explainer("attributions from a healthcare checkpoint (Captum): image maps or ECG sample shading",
                          "images (PNG/JPEG/DICOM files, folders, FILE.npz[:split]) or ECG signal files (UCR .txt, "
                          "CSV/Parquet)", methods, explain, add_arguments, (*IMAGE_METHODS, "ECG: integrated_gradients"))
    return run_explain(app, argv, explainer)
