"""Text classification family (torch side): encoder + head + TextDataModule, int8 after fit."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from deepapps.apps.nlp.config import NlpFitConfig
from deepapps.apps.nlp.data import TextDataModule
from deepapps.apps.nlp.model import TextClassifier, load_encoder
from deepapps.apps.nlp.task import TextClassificationTask
from deepapps.core.pipelines import Built

log = logging.getLogger("deepapps.nlp")
INPUTS = ("input_ids", "attention_mask")


def _task(built: Built, cfg: NlpFitConfig, config: dict, class_weights: list[float] | None) -> TextClassificationTask:
    hparams = {"config": config, "inputs": built.inputs, "preprocess": built.preprocess, "weights": built.weights}
    frozen = cfg.model.freeze_epochs > 0
    return TextClassificationTask(
        built.net, built.labels, False, cfg.optim, class_weights, hparams,
        freeze_epochs=cfg.model.freeze_epochs, backbone_lr_ratio=cfg.model.unfreeze_lr_ratio if frozen else 1.0,
    )


def tokenizer_spec(tokenizer, max_length: int) -> dict:
    """What predict needs to tokenise: the tokenizer JSON, max length, pad id."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {"tokenizer_json": tokenizer.backend_tokenizer.to_str(), "max_length": max_length, "pad_id": int(pad_id),
            "in_graph": "encoder, pooling, head, softmax; outside: tokenisation (tokenizers), padding"}


def build(cfg: NlpFitConfig, pretrained: str | None, labels: list[str] | None = None, multilabel: bool = False,
          with_data: bool = True) -> Built:
    """Encoder and tokenizer first (the tokenizer fixes the data's token ids), then data, then head.

    Args:
        pretrained: hub name / folder / `package:...` to load weights from; None builds the
            architecture of cfg.model.pretrained only (its weights come from a checkpoint).
        labels: known label names (from a checkpoint); None reads them from the data.
    """
    encoder, tokenizer, weights = load_encoder(pretrained or cfg.model.pretrained, weights=pretrained is not None)
    spec = tokenizer_spec(tokenizer, cfg.data.max_length)
    datamodule = TextDataModule(cfg.data, spec["tokenizer_json"], spec["pad_id"], cfg.seed) if with_data else None
    if labels is None:
        labels = datamodule.labels
    net = TextClassifier(encoder, len(labels), cfg.model.pooling, cfg.model.drop_rate)
    inputs = [{"name": name, "dtype": "int64", "shape": ["batch", "sequence"]} for name in INPUTS]
    axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {"probabilities": {0: "batch"}}

    def dummy(n: int) -> tuple[torch.Tensor, torch.Tensor]:
        ids = torch.randint(0, encoder.config.vocab_size, (n, 12))
        mask = torch.ones_like(ids)
        mask[n // 2 :, 8:] = 0  # half the batch padded: the export must honour the mask
        return ids, mask

    return Built(
        net=net, labels=labels, multilabel=False, datamodule=datamodule, inputs=inputs, preprocess=spec,
        weights=weights, dummy_inputs=dummy, task_factory=_task, dynamic_axes=axes, export_wrapper=_served,
    )


def _served(net: TextClassifier, temperature: float) -> torch.nn.Module:
    """Softmax head on the network, attention switched to transformers' "eager" kernels first.

    SDPA (the training default) traces into a graph with extra mask and shape ops that ran ~8%
    slower in ONNX Runtime at 32 x 128 tokens than the eager-attention graph, which is also what
    Optimum exports (benchmarks/nlp_vs_optimum.py). The maths are the same; parity is checked.
    """
    from deepapps.core.models.heads import WithProbabilities

    if hasattr(net.backbone, "set_attn_implementation"):
        net.backbone.set_attn_implementation("eager")
    return WithProbabilities(net, multilabel=False, temperature=temperature)


def export_int8(onnx_path: Path, cfg: NlpFitConfig) -> Path:
    """`deepapps nlp export --int8`: dynamic int8 copy, accuracy change measured on the test carve."""
    from deepapps.apps.nlp.quantize import quantize_into_run

    quantize_into_run(onnx_path, data_path=cfg.data.path)
    return onnx_path.with_suffix(".int8.onnx")


def write_report(run_dir: Path, app, built: Built, cfg: NlpFitConfig, config_yaml: str, metrics: dict,
                 evaluation) -> Path:
    """int8 copy (accuracy change measured on the same test split) + the shared run report."""
    from deepapps.apps.nlp.quantize import quantize_and_measure
    from deepapps.core.report.run_report import write_run_report
    from deepapps.core.runtime.io import write_json

    sections = []
    if cfg.export_int8:
        result = quantize_and_measure(run_dir / "model.onnx", run_dir / "model.int8.onnx", cfg.data.path, "test",
                                      fp32_metrics=metrics["test"])
        metrics["int8"] = result
        write_json(run_dir / "metrics.json", metrics)
        sections.append(("int8 quantization", result["markdown"]))
    info = {"sections": sections,
            "intended_use": "Scoring short English texts (reviews, tickets, posts) for the labels it was trained on.",
            "limitations": [f"Texts longer than {cfg.data.max_length} tokens are truncated.",
                            "Accuracy drops under domain shift from the training data.",
                            "The test split is carved from the training file, not an independent sample."]}
    return write_run_report(run_dir, app, built, cfg, config_yaml, metrics, evaluation, info=info)
