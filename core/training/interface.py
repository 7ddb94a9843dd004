"""The train side of an app: what `fit`, `validate`, `test` and `export` call (torch).

An app implements `Training` once; its AppSpec names the class. `build` is required; the
other members have the defaults of a classifier here, and tests/core/test_interfaces.py
checks every registered app against this class.

One fit (core.training.fit):

    build -> module -> Lightning fit -> best weights -> post_fit (validation-fitted state,
    stored in the best checkpoint) -> served -> ONNX export + parity -> evaluate the ONNX
    graph (the app's Serving) -> model.onnx -> int8 copy (int8_method) -> artifacts (attributions, ...) ->
    metrics.json -> report (plots, model card; reads only)
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from deepapps.core.contract import Classification, Forecast, Kind, ModelContract, TensorSpec
from deepapps.core.errors import ConfigError
from deepapps.core.training.quantize import Int8Method

if TYPE_CHECKING:
    import pytorch_lightning as L
    from torch import nn

    from deepapps.core.registry import AppSpec
    from deepapps.core.runtime.evaluation import Evaluation


@dataclass
class Saved:
    """What a checkpoint holds besides the weights: enough to rebuild the network without data.

    Attributes:
        config: the run's config as a dict.
        kind: the contract kind as built from the data (labels; or targets and geometry).
        preprocess: the data-derived preprocessing (statistics, vocabularies, tokenizer, ...).
        weights: where the pretrained weights came from (one line).
        post_fit: the state post_fit learnt on validation; None before post-fit ran, or in a
            checkpoint of an older deepapps (then the run's metrics.json is read instead).
        schema: 2; 1 for a checkpoint of deepapps 0.1 (read by core.training.checkpoints).
        app: the app that trained it (None in 0.1 checkpoints).
    """

    config: dict
    kind: Kind
    preprocess: dict
    weights: str = ""
    post_fit: dict | None = None
    schema: int = 2
    app: str | None = None

    def to_dict(self) -> dict:
        kind = {"type": self.kind.KIND} | asdict(self.kind)
        return {"schema": self.schema, "app": self.app, "config": self.config, "kind": kind,
                "preprocess": self.preprocess, "weights": self.weights, "post_fit": self.post_fit}

    @classmethod
    def from_dict(cls, d: dict) -> Saved:
        kind = dict(d["kind"])
        kind_class = {Classification.KIND: Classification, Forecast.KIND: Forecast}[kind.pop("type")]
        return cls(d["config"], kind_class(**kind), d["preprocess"], d.get("weights", ""), d.get("post_fit"),
                   d.get("schema", 2), d.get("app"))


@dataclass
class Built:
    """A network with its data and the parts of the contract known before training.

    Attributes:
        net: inputs -> logits (classifiers) or raw outputs.
        datamodule: the LightningDataModule, or None when built without data. It offers
            `summary() -> dict` (source, sizes, notes) and `example_batch(n)` (real graph inputs).
        kind: the contract kind, before post-fit state (threshold, calibration) is known.
        inputs, outputs: the graph's tensors as served.
        preprocess: what predict does outside the graph (data-derived, saved in checkpoints).
        weights: where the pretrained weights came from (one line).
        family: the contract family, e.g. `image_classification`.
        dummy_inputs: n -> example input tensors, used when no real data is at hand.
        backbone: the pretrained network's name (provenance), or None.
        write_samples: folder -> number of test inputs written there for users to try predict on.
        dynamic_axes: per graph input/output, its dynamic axes; None makes axis 0 `batch`.
        parity_tolerance: largest allowed |ONNX - torch| of the export check.
        auto_choices: the config fields `auto` resolved from the data ({field, value, reason};
            core.training.auto), written into config.yaml and the model card.
    """

    net: nn.Module
    datamodule: Any
    kind: Kind
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    preprocess: dict
    weights: str
    family: str
    dummy_inputs: Callable[[int], tuple]
    backbone: str | None = None
    write_samples: Callable[[Path], int] | None = None
    dynamic_axes: dict[str, dict[int, str]] | None = None
    parity_tolerance: float = 1e-4
    auto_choices: list[dict] = field(default_factory=list)

    @property
    def labels(self) -> list[str]:
        return self.kind.labels

    @property
    def multilabel(self) -> bool:
        return isinstance(self.kind, Classification) and self.kind.multilabel

    def example_inputs(self, n: int = 8) -> tuple:
        """A real validation batch when data is loaded, else dummy inputs."""
        if self.datamodule is not None:
            return self.datamodule.example_batch(n)
        return self.dummy_inputs(n)

    def saved(self, config: dict, app: str) -> Saved:
        return Saved(config, self.kind, self.preprocess, self.weights, app=app)


@dataclass
class PostFit:
    """What an app learns after training, on the validation split.

    Attributes:
        state: JSON-able; stored in the best checkpoint (so `export --ckpt` rebuilds the same
            model from any folder) and in metrics.json's `post_fit`; `served` reads it.
        scores: in-memory extras for the report only (e.g. baselines' scores), never stored.
    """

    state: dict = field(default_factory=dict)
    scores: dict = field(default_factory=dict)


@dataclass
class Served:
    """What is exported: the module, its contract kind and the app's own metadata sections."""

    module: nn.Module
    kind: Kind
    details: dict = field(default_factory=dict)


@dataclass
class FitRun:
    """One fit after its ONNX file is written: what artifacts and the report read."""

    run_dir: Path
    app: AppSpec
    cfg: Any
    config_yaml: str
    built: Built
    module: L.LightningModule
    metrics: dict
    evaluation: Evaluation
    post_fit: PostFit
    contract: ModelContract
    search: dict | None = None
    """The hyperparameter search that chose the config (`tune --tune.refit`), else None."""

    @property
    def onnx_path(self) -> Path:
        return self.run_dir / "model.onnx"


class Training(ABC):
    """The torch side of an app."""

    @abstractmethod
    def build(self, cfg, saved: Saved | None = None, with_data: bool = True) -> Built:
        """The network and its data.

        Args:
            cfg: the app's config dataclass.
            saved: a checkpoint's state: rebuild that network (its architecture, labels and
                data statistics; weights come from the checkpoint). None: a new fit, with
                the pretrained weights `cfg` names.
            with_data: index the data (False: export from a checkpoint without its data).
        """

    def module(self, built: Built, cfg) -> L.LightningModule:
        """The LightningModule that trains `built.net`; default: a ClassificationModule with a
        pretrained `backbone` frozen for `cfg.model.freeze_epochs`, its head started at the linear
        probe when `cfg.model.head_init` is `probe` (single-label, not when resuming)."""
        from deepapps.core.training.classifier import ClassificationModule

        dm, frozen = built.datamodule, cfg.model.freeze_epochs > 0
        module = ClassificationModule(
            built.net, built.labels, built.multilabel, cfg.optim,
            class_weights=dm.class_weights(cfg.optim.class_weights) if dm is not None else None,
            backbone="backbone", freeze_epochs=cfg.model.freeze_epochs,
            backbone_lr_ratio=cfg.model.unfreeze_lr_ratio if frozen else 1.0,
        )
        if cfg.model.head_init == "probe" and dm is not None and not built.multilabel and not cfg.resume:
            from deepapps.core.training.probe_init import probe_head

            probe_head(built.net, dm, cfg.seed)
        return module

    def post_fit(self, module: L.LightningModule, built: Built, cfg) -> PostFit:
        """State learnt on the validation split after training (calibration, thresholds,
        baselines); default: none."""
        return PostFit()

    def served(self, built: Built, state: dict) -> Served:
        """The exported module and contract kind for post-fit `state`; default: softmax (or
        sigmoid) over logits / `state["temperature"]`, the kind with `threshold` and
        `temperature` from `state`."""
        from deepapps.core.training.heads import WithProbabilities

        kind = built.kind
        if not isinstance(kind, Classification):
            raise ConfigError(f"{type(self).__name__}.served: the default exports classifiers; override it")
        temperature = float(state.get("temperature", 1.0))
        threshold = state.get("threshold", 0.5 if kind.multilabel else None)
        kind = Classification(kind.labels, kind.problem, threshold, temperature,
                              int(state.get("positive_index", kind.positive_index)))
        return Served(WithProbabilities(built.net, kind.multilabel, temperature), kind)

    def artifacts(self, run: FitRun) -> dict:
        """Extra files made from the written model (attributions, comparisons, ...); returns
        the sections they add to metrics.json. Default: none."""
        return {}

    def report(self, run: FitRun) -> None:
        """Plots and the model card (reads the run, writes nothing else); default: the shared
        classification report."""
        from deepapps.core.report.run_report import write_run_report

        write_run_report(run)

    def int8_method(self, cfg) -> Int8Method:
        """How `fit --export_int8` / `export --int8` quantise this app's models
        (core.training.quantize): `static` (QDQ, calibrated on validation inputs), `dynamic`, or
        None with the measured reason int8 is not offered. Default: not offered."""
        return Int8Method(None, f"int8 is not offered for {type(self).__name__} models (no method declared)")
