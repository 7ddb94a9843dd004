"""`deepapps <app> explain`: the command every app shares, with the attributions computed by Captum.

One grammar for every app:

    deepapps <app> explain (--ckpt FILE | --model FILE.onnx) INPUT... --out DIR [--method M] [--target CLASS]

Attributions need gradients, so they are always computed on the checkpoint's network. With
`--model RUN/model.onnx` the checkpoint is the run folder's `RUN/checkpoints/best.ckpt`, and every
input is also scored by the ONNX file: `agrees_with_onnx` in the manifest says whether the file
predicts what the explained network predicts (the explanation is of the shipped model).

An app supplies an `Explainer` (its methods, how to read its inputs and attribute them); this
module parses the arguments, loads the checkpoint (weights_only, see core.training.checkpoints),
checks ONNX agreement, writes the outputs atomically and the manifest `DIR/manifest.json`: the
model file and checkpoint with their sha256, the method, its baseline, and per input the
predicted class, the class explained, the files written, the convergence delta (integrated
gradients) and `agrees_with_onnx`.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from deepapps.core.errors import ConfigError
from deepapps.core.registry import AppSpec
from deepapps.core.runtime.io import atomic_write, write_json, write_text
from deepapps.core.training.checkpoints import Shipped, shipped_model

MANIFEST = "manifest.json"
RUN_CHECKPOINT = Path("checkpoints") / "best.ckpt"  # beside RUN/model.onnx


@dataclass
class Explained:
    """One input's explanation, as the manifest lists it.

    Attributes:
        input: the input's name (path, path:split[i], row number, the text).
        predicted: the label the checkpoint predicts (with the stored threshold).
        target: the class (or output) the attributions explain.
        files: the files written for it, relative to --out.
        delta: integrated gradients' convergence delta (sum of attributions minus the
            difference of outputs at the input and at the baseline), else None.
        agrees_with_onnx: with --model, whether the ONNX file predicts `predicted` too.
        onnx_max_abs_diff: with --model, the largest |ONNX - checkpoint| of the served outputs
            (a disagreement with a tiny difference is a tie at the decision threshold).
        error: why the input could not be explained (then nothing else is set).
    """

    input: str
    predicted: str | None = None
    target: str | None = None
    files: list[str] = field(default_factory=list)
    delta: float | None = None
    agrees_with_onnx: bool | None = None
    error: str | None = None
    onnx_max_abs_diff: float | None = None


@dataclass(frozen=True)
class Explainer:
    """What an app gives the shared command.

    Attributes:
        description: one line for `--help`.
        inputs_help: what INPUT... is for this app.
        methods: shipped -> the methods it offers, by name, with their one-line description; the
            first is the default (a function: healthcare's methods depend on the checkpoint's task).
        explain: (session, inputs) -> one `Explained` per input, writing its files on the way.
        add_arguments: the app's own options, if any.
    """

    description: str
    inputs_help: str
    methods: Callable[[Shipped], dict[str, str]]
    explain: Callable[[ExplainSession, list[str]], Iterable[Explained]]
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    method_names: tuple[str, ...] = ()  # every method of any task, for --help


@dataclass
class ExplainSession:
    """What an app's `explain` works with: the parsed arguments, the network and the writers."""

    app: AppSpec
    args: argparse.Namespace
    shipped: Shipped
    method: str
    out: Path
    onnx: object | None = None  # core.runtime.session.OnnxModel with --model
    baseline: str = ""  # the app states the method's baseline in words, for the manifest
    last_onnx_diff: float | None = None  # set by agrees_with_onnx, copied into the next record

    @property
    def labels(self) -> list[str]:
        """Class names (classifiers), or the forecast's target columns."""
        return output_names(self.shipped)

    def target_index(self, predicted_index: int) -> int:
        """The class to explain: --target when given (checked against the labels), else the predicted one."""
        if self.args.target is None:
            return predicted_index
        return label_index(self.labels, self.args.target)

    def agrees_with_onnx(self, inputs: tuple[torch.Tensor, ...], served_output: torch.Tensor,
                         decide: Callable[[np.ndarray], object]) -> bool | None:
        """With --model: whether `decide` gives the same answer on the ONNX file's output for the same
        graph inputs as on the checkpoint's served output (`served_output`, batch of one or more)."""
        if self.onnx is None:
            return None
        feeds = {name: t.detach().cpu().numpy() for name, t in zip(self.onnx.input_names, inputs)}
        onnx_out = self.onnx.run(feeds)
        torch_out = served_output.detach().cpu().numpy()
        self.last_onnx_diff = float(np.abs(np.asarray(onnx_out, np.float64) - torch_out).max())
        return bool(all(np.array_equal(np.asarray(decide(a)), np.asarray(decide(b)))
                        for a, b in zip(torch_out, onnx_out)))

    def path(self, name: str) -> Path:
        return self.out / name

    def write_png(self, name: str, image) -> str:
        """A PIL image or a matplotlib figure as `--out/name` (atomically); returns `name`."""
        if hasattr(image, "savefig"):
            import matplotlib.pyplot as plt

            atomic_write(self.path(name), lambda tmp: image.savefig(tmp, format="png", dpi=100, bbox_inches="tight"))
            plt.close(image)
        else:
            atomic_write(self.path(name), lambda tmp: image.save(tmp, format="PNG"))
        return name

    def write_npy(self, name: str, array: np.ndarray) -> str:
        def write(tmp: Path) -> None:
            with open(tmp, "wb") as f:
                np.save(f, np.asarray(array, np.float32))

        atomic_write(self.path(name), write)
        return name

    def write_csv(self, name: str, table) -> str:
        """A polars DataFrame as CSV."""
        atomic_write(self.path(name), lambda tmp: table.write_csv(tmp))
        return name

    def write_text(self, name: str, text: str) -> str:
        write_text(self.path(name), text)
        return name


def parser(app: AppSpec, explainer: Explainer) -> argparse.ArgumentParser:
    """The shared grammar plus the app's own options."""
    from deepapps.core.cli import OneLineParser

    p = OneLineParser(prog=f"deepapps {app.name} explain", description=explainer.description, allow_abbrev=False)
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--ckpt", help=f"Lightning checkpoint (.ckpt) of a {app.name} fit")
    source.add_argument("--model", help="the run's ONNX file: its checkpoints/best.ckpt is explained (gradients), "
                                        "and each prediction is checked against the ONNX file's")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help=explainer.inputs_help)
    p.add_argument("--out", required=True, help="output folder (images, tables and manifest.json)")
    methods = ", ".join(explainer.method_names) if explainer.method_names else "see the app's README"
    p.add_argument("--method", default=None, help=f"attribution method ({methods}; default: the first)")
    p.add_argument("--target", default=None, help="class (or output) to explain (default: the predicted one)")
    if explainer.add_arguments is not None:
        explainer.add_arguments(p)
    return p


def run_explain(app: AppSpec, argv: list[str], explainer: Explainer) -> int:
    """Parse, load, explain every input, write the manifest; exit 0, or 2 when no input could be explained."""
    args = parser(app, explainer).parse_args(argv)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out}: is a file; explain writes a folder")
    model_path, ckpt = _sources(args)
    onnx = None
    if model_path is not None:
        from deepapps.core.runtime.session import load_model

        onnx = load_model(model_path, "cpu", app=app.name)
    shipped = shipped_model(app, ckpt)
    methods = explainer.methods(shipped)
    method = args.method or next(iter(methods))
    if method not in methods:
        raise ConfigError(f"--method {method}: unknown for this model; choose one of {', '.join(methods)}")
    if args.target is not None:
        label_index(output_names(shipped), args.target)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot make the folder ({exc.strerror or type(exc).__name__})") from None
    session = ExplainSession(app, args, shipped, method, out, onnx)
    records: list[Explained] = []
    print("input,predicted,target,delta,agrees_with_onnx,files,error")
    for record in explainer.explain(session, list(args.inputs)):
        if record.agrees_with_onnx is not None and record.onnx_max_abs_diff is None:
            record.onnx_max_abs_diff, session.last_onnx_diff = session.last_onnx_diff, None
        records.append(record)
        if record.error:
            print(f"error: {record.error}", file=sys.stderr)
        print(",".join(_csv(v) for v in (record.input, record.predicted, record.target,
                                         None if record.delta is None else f"{record.delta:.3g}",
                                         record.agrees_with_onnx, ";".join(record.files), record.error)))
    done = [r for r in records if not r.error]
    deltas = [abs(r.delta) for r in done if r.delta is not None]
    manifest = {
        "app": app.name, "method": method, "method_description": methods[method], "baseline": session.baseline,
        "target": args.target or "predicted class",
        "checkpoint": {"path": str(ckpt), "sha256": sha256(ckpt)},
        "model": None if model_path is None else {"path": str(model_path), "sha256": sha256(model_path)},
        "explained": len(done), "failed": len(records) - len(done),
        "max_abs_delta": max(deltas) if deltas else None,
        "all_agree_with_onnx": None if onnx is None else all(r.agrees_with_onnx for r in done),
        "inputs": [asdict(r) for r in records],
    }
    write_json(out / MANIFEST, manifest)
    note = f"; largest |convergence delta| {max(deltas):.2g}" if deltas else ""
    if onnx is not None:
        disagree = sum(1 for r in done if r.agrees_with_onnx is False)
        note += f"; the ONNX file agrees on {len(done) - disagree} of {len(done)}"
    print(f"explained {len(done)} of {len(records)} inputs with {method}{note}; wrote {out}", file=sys.stderr)
    return 2 if not done else 0


def _sources(args: argparse.Namespace) -> tuple[Path | None, Path]:
    """(ONNX file or None, checkpoint): with --model, the run folder's checkpoints/best.ckpt beside it."""
    if args.ckpt is not None:
        return None, Path(args.ckpt)
    model = Path(args.model)
    if not model.is_file():
        raise ConfigError(f"--model {model}: no such model file")
    ckpt = model.parent / RUN_CHECKPOINT
    if not ckpt.is_file():
        raise ConfigError(f"--model {model}: attributions need the network's gradients, so its run folder's "
                          f"checkpoint {ckpt}, which is not there; pass --ckpt")
    return model, ckpt


def output_names(shipped: Shipped) -> list[str]:
    """What --target may name: a classifier's labels, a forecaster's target columns."""
    kind = shipped.built.kind
    return list(getattr(kind, "labels", None) or getattr(kind, "targets", None) or [])


def label_index(labels: list[str], target: str) -> int:
    """The index of class `target` (a label, or its index as text); else a one-line error."""
    if target in labels:
        return labels.index(target)
    if re.fullmatch(r"\d+", target) and int(target) < len(labels):
        return int(target)
    raise ConfigError(f"--target {target}: not one of {', '.join(labels)}")


def decide(kind) -> Callable[[np.ndarray], str]:
    """probabilities (K,) -> label, as predict decides: binary at the stored threshold, multi-label
    over the thresholds (`;`-joined), else the most probable."""
    labels, problem = list(kind.labels), kind.problem
    threshold = getattr(kind, "threshold", None)
    if problem == "binary" and threshold is not None:
        positive = kind.positive_index
        return lambda p: labels[positive] if p[positive] >= threshold else labels[1 - positive]
    if problem == "multilabel":
        cut = np.broadcast_to(np.asarray(0.5 if threshold is None else threshold, dtype=float), (len(labels),))
        return lambda p: ";".join(labels[i] for i in np.flatnonzero(p >= cut))
    return lambda p: labels[int(np.argmax(p))]


def explained_index(labels: list[str], label: str, probabilities: np.ndarray) -> int:
    """The class a prediction explains: its label, else (multi-label, none or several) the most probable."""
    return labels.index(label) if label in labels else int(np.argmax(probabilities))


def sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def safe_stem(index: int, name: str) -> str:
    """`0003_chest_xray`: a file-name stem for input `index` named `name`."""
    stem = re.sub(r"\.(png|jpe?g|dcm|dicom|bmp|tiff?|webp|csv|txt|parquet)$", "", Path(name).name, flags=re.IGNORECASE)
    return f"{index:04d}_{re.sub(r'[^A-Za-z0-9_.-]+', '_', stem)[:60]}"


def _csv(value: object) -> str:
    if value is None:
        return ""
    text = str(value)
    return '"' + text.replace('"', '""') + '"' if any(c in text for c in ',"\n') else text

