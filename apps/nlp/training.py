"""Text classification (torch side): encoder + head + TextDataModule, an int8 copy after fit."""

from __future__ import annotations

import logging

import torch

from deepapps.apps.nlp.config import NlpFitConfig
from deepapps.apps.nlp.data import TextDataModule
from deepapps.apps.nlp.model import TextClassifier, layer_depth, load_encoder
from deepapps.core.contract import PROBABILITIES, Classification, TensorSpec, problem_type
from deepapps.core.training.classifier import ClassificationModule
from deepapps.core.training.heads import WithProbabilities
from deepapps.core.training.interface import Built, FitRun, Saved, Served, Training
from deepapps.core.training.optim import LrSchedule
from deepapps.core.training.quantize import DYNAMIC, Int8Method

log = logging.getLogger("deepapps.nlp")
INPUTS = ("input_ids", "attention_mask")
TEXT_SCHEDULES = ("linear", "cosine", "constant")  # TextOptimConfig.schedule
FAMILY = "text_classification"


def tokenizer_spec(tokenizer, max_length: int) -> dict:
    """What predict needs to tokenise: the tokenizer JSON, max length, pad id."""
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    return {"tokenizer_json": tokenizer.backend_tokenizer.to_str(), "max_length": max_length, "pad_id": int(pad_id),
            "in_graph": "encoder, pooling, head, softmax; outside: tokenisation (tokenizers), padding"}


def text_classification_module(net: TextClassifier, labels: list[str], multilabel: bool, optim,
                               class_weights: list[float] | None = None, freeze_epochs: int = 0,
                               backbone_lr_ratio: float = 1.0) -> ClassificationModule:
    """A ClassificationModule with the usual transformer optimiser: layer-wise LR decay
    (`optim.layer_decay`), warm-up then linear/cosine decay, no weight decay on biases and norms."""
    num_layers = net.backbone.config.num_hidden_layers

    def layer_scale(name: str) -> float:
        depth = layer_depth(name, num_layers) if name.startswith("net.backbone.") else num_layers + 1
        return optim.layer_decay ** (num_layers + 1 - depth)

    return ClassificationModule(net, labels, multilabel, optim, class_weights, backbone="backbone",
                                freeze_epochs=freeze_epochs, backbone_lr_ratio=backbone_lr_ratio,
                                lr_scale=layer_scale, schedules=TEXT_SCHEDULES)


def warmup_decay(kind: str, warmup: int, total: int, frozen: int = 0) -> LrSchedule:
    """The nlp schedule: linear or cosine decay after a linear warm-up, or constant."""
    return LrSchedule(kind, warmup, total, frozen, choices=TEXT_SCHEDULES)


class NlpTraining(Training):
    """Fine-tune a Hugging Face encoder; the tokenizer travels in the model."""

    def build(self, cfg: NlpFitConfig, saved: Saved | None = None, with_data: bool = True) -> Built:
        """Encoder and tokenizer first (the tokenizer fixes the data's token ids), then data, then head.

        A new fit loads the pretrained weights `cfg.model.pretrained` names; from a checkpoint
        (`saved`) only its architecture is built (the weights come from the checkpoint).
        """
        encoder, tokenizer, weights = load_encoder(cfg.model.pretrained, weights=saved is None)
        spec = tokenizer_spec(tokenizer, cfg.data.max_length)
        datamodule = TextDataModule(cfg.data, spec["tokenizer_json"], spec["pad_id"], cfg.seed) if with_data else None
        if datamodule is not None:  # `auto` columns as resolved: the model's data_config names them for evaluate
            cfg.data.text_column, cfg.data.label_column = datamodule.text_column, datamodule.label_column
        if datamodule is not None and cfg.data.group_columns:  # before the run folder exists
            from deepapps.apps.nlp.table import read_frame
            from deepapps.core.fairness import check_binary, check_group_columns

            check_binary(datamodule.labels)
            check_group_columns(read_frame(cfg.data.path).columns, cfg.data.group_columns, cfg.data.path)
        kind = saved.kind if saved is not None else Classification(
            datamodule.labels, problem_type(len(datamodule.labels), False))
        net = TextClassifier(encoder, len(kind.labels), cfg.model.pooling, cfg.model.drop_rate)
        axes = {name: {0: "batch", 1: "sequence"} for name in INPUTS} | {"probabilities": {0: "batch"}}

        def dummy(n: int) -> tuple[torch.Tensor, torch.Tensor]:
            ids = torch.randint(0, encoder.config.vocab_size, (n, 12))
            mask = torch.ones_like(ids)
            mask[n // 2 :, 8:] = 0  # half the batch padded: the export must honour the mask
            return ids, mask

        return Built(
            net=net, datamodule=datamodule, kind=kind,
            inputs=[TensorSpec(name, "int64", ["batch", "sequence"]) for name in INPUTS], outputs=[PROBABILITIES],
            preprocess=spec, weights=saved.weights if saved else weights, family=FAMILY, dummy_inputs=dummy,
            backbone=cfg.model.pretrained, dynamic_axes=axes,
        )

    def module(self, built: Built, cfg: NlpFitConfig) -> ClassificationModule:
        dm, frozen = built.datamodule, cfg.model.freeze_epochs > 0
        return text_classification_module(
            built.net, built.labels, False, cfg.optim,
            class_weights=dm.class_weights(cfg.optim.class_weights) if dm is not None else None,
            freeze_epochs=cfg.model.freeze_epochs, backbone_lr_ratio=cfg.model.unfreeze_lr_ratio if frozen else 1.0,
        )

    def served(self, built: Built, state: dict) -> Served:
        """Softmax head on the network, attention switched to transformers' "eager" kernels first.

        SDPA (the training default) traces into a graph with extra mask and shape ops that ran ~8%
        slower in ONNX Runtime at 32 x 128 tokens than the eager-attention graph, which is also what
        Optimum exports (benchmarks/nlp_vs_optimum.py). The maths are the same; parity is checked.
        """
        built.net.backbone.set_attn_implementation("eager")
        return Served(WithProbabilities(built.net, multilabel=False), built.kind)

    def artifacts(self, run: FitRun) -> dict:
        """The TF-IDF baseline on the same split (`baselines`); with data.group_columns, fairness by
        group of the ONNX model on val and test (core.fairness.run_fairness); the int8 copy is
        the core's (`int8_method`)."""
        from deepapps.core.fairness import run_fairness

        return ({"baselines": text_baselines(run)} if run.cfg.baselines else {}) | run_fairness(run)

    def int8_method(self, cfg: NlpFitConfig) -> Int8Method:
        """Dynamic: a transformer's time is in MatMul/Gemm, whose int8 weights need no calibration."""
        return Int8Method(DYNAMIC, "transformer encoder: int8 MatMul/Gemm weights, activations quantised at run time")

    def report(self, run: FitRun) -> None:
        """The shared run report, with the int8 measurement and the text model's limitations."""
        from deepapps.core.report.run_report import write_run_report

        cfg = run.cfg
        sections = [("Baseline on the same split", baseline_markdown(run.metrics))] if "baselines" in run.metrics else []
        info = {"sections": sections,
                "intended_use": "Scoring short English texts (reviews, tickets, posts) for the labels it was trained on.",
                "limitations": [f"Texts longer than {cfg.data.max_length} tokens are truncated.",
                                "Accuracy drops under domain shift from the training data.",
                                "The test split is carved from the training file, not an independent sample."]}
        write_run_report(run, info=info)


def text_baselines(run: FitRun) -> dict:
    """{name: {"val", "test", ...}} of the TF-IDF baseline on the fit's split, or the reason it was skipped."""
    from deepapps.apps.nlp.baselines import NAME, tfidf_baseline

    dm = run.built.datamodule
    try:
        result = tfidf_baseline(dm.texts, dm.targets, dm.splits, run.built.labels, run.contract.kind.problem, run.cfg.seed)
    except ValueError as exc:  # e.g. a vocabulary left empty by min_df on a tiny table
        log.info("TF-IDF baseline skipped: %s", exc)
        return {NAME: {"skipped": str(exc).splitlines()[0]}}
    return {NAME: result}


def baseline_markdown(metrics: dict) -> str:
    """The model (ONNX, test) against each baseline on the same test rows."""
    keys = [k for k in ("accuracy", "macro_f1", "auroc", "auprc") if k in metrics.get("test", {})]
    rows = ["| model | " + " | ".join(f"test {k}" for k in keys) + " |", "|---" * (len(keys) + 1) + "|",
            "| this model (ONNX) | " + " | ".join(f"{metrics['test'][k]:.4f}" for k in keys) + " |"]
    for result in metrics["baselines"].values():
        if "test" in result:
            rows.append(f"| {result['name']} (C={result['C']}) | "
                        + " | ".join(f"{result['test'].get(k, float('nan')):.4f}" for k in keys) + " |")
    return "Same training rows, same test rows. " + "\n".join(["", *rows])

