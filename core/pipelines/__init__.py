"""Per-family builders (torch side). Each returns a `Built`: the network, its data and specs.

A pipeline module has `build(cfg, pretrained, labels=None, multilabel=False, with_data=True)`
and may have `post_fit(task, built, cfg) -> dict`, run on the best checkpoint before export:
what it returns is merged into the ONNX metadata, and a `temperature` key scales the logits
inside the exported graph (calibration). An optional `restore_post_fit(built, post_fit)` puts
other post-fit state on `built` before each export (see core.training.export_built).

The datamodule must offer `labels`, `multilabel`, `summary()`, `class_weights(mode)`,
`example_batch(n)` and, optionally, `write_samples(folder) -> int`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Built:
    """What `core.training` needs from a model family to fit, test and export.

    Attributes:
        net: inputs -> logits module, with a `.backbone` attribute.
        labels: class or label names.
        multilabel: independent sigmoid labels instead of one softmax.
        datamodule: the LightningDataModule, or None when built without data.
        inputs: graph input spec for the metadata: name, dtype, shape, layout.
        preprocess: what predict does outside the graph, plus what the graph does inside.
        weights: where the pretrained weights came from (one line).
        dummy_inputs: n -> example input tensors, used when no real data is at hand.
        output_names: graph outputs, described in the metadata.
        task_factory: (built, cfg, config, class_weights) -> LightningModule; None makes a
            ClassificationTask.
        export_wrapper: (net, temperature) -> the module exported; None adds softmax/sigmoid.
        parity_tolerance: largest allowed |ONNX - torch| of the export check (raise it for
            outputs on a raw data scale, e.g. forecasts in the hundreds).
        dynamic_axes: per graph input/output, its dynamic axes (e.g. batch and sequence);
            None makes axis 0 of each `batch`.
    """

    net: Any
    labels: list[str]
    multilabel: bool
    datamodule: Any
    inputs: list[dict]
    preprocess: dict
    weights: str
    dummy_inputs: Callable[[int], tuple]
    output_names: list[str] = field(default_factory=lambda: ["probabilities"])
    task_factory: Callable | None = None
    export_wrapper: Callable | None = None
    parity_tolerance: float = 1e-4
    dynamic_axes: dict[str, dict[int, str]] | None = None

    def export_module(self, temperature: float = 1.0) -> Any:
        """The network as served: by default logits / temperature -> softmax or sigmoid."""
        if self.export_wrapper is not None:
            return self.export_wrapper(self.net, temperature)
        from deepapps.core.models.heads import WithProbabilities

        return WithProbabilities(self.net, self.multilabel, temperature)

    def example_inputs(self, n: int = 8) -> tuple:
        """A real validation batch when data is loaded, else dummy inputs."""
        if self.datamodule is not None:
            return self.datamodule.example_batch(n)
        return self.dummy_inputs(n)
