"""Dynamic int8 quantization (onnxruntime.quantization) with the accuracy change measured.

`deepapps nlp quantize --model model.onnx [--out model.int8.onnx] [--data.path FILE] [--split test]`
runs without torch on any nlp model file; `fit --export_int8` and `export --int8` use the core's
(core.training.quantize: the same dynamic method, scored on the validation split).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from deepapps.core.contract import copy_with_metadata, read_metadata
from deepapps.core.runtime.io import atomic_write, write_json

log = logging.getLogger("deepapps.nlp")


def quantize(src: Path, out: Path) -> Path:
    """int8 weights for MatMul/Gemm (activations quantized on the fly); metadata kept
    (core.training.quantize, the method `fit --export_int8` uses for nlp)."""
    from deepapps.core.training.quantize import DYNAMIC, Int8Method, quantize_proto

    src, out = Path(src), Path(out)
    original = read_metadata(src)
    method = Int8Method(DYNAMIC, "nlp quantize")
    proto = quantize_proto(src, method)
    precision = {"precision": method.precision}
    return copy_with_metadata(proto, out, original, lambda meta: meta | {"export": meta.get("export", {}) | precision},
                              check=False)  # the checker does not know ONNX Runtime's quantized kernels


def _latency_ms(model, n: int = 20) -> float:
    """Median ms of one batch-1 call on 64 tokens (a rough CPU figure, same input for both)."""
    from deepapps.apps.nlp.runtime import tokenizer_of

    real = tokenizer_of(model).encode("an honest review of a product that works " * 16).ids
    ids = np.resize(np.asarray(real, dtype=np.int64), (1, 64))  # (1, 64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids)}
    model.run(feeds)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        model.run(feeds)
        times.append(time.perf_counter() - start)
    return 1000 * float(np.median(times))


def quantize_and_measure(src: Path, out: Path, data_path: str | None = None, split: str = "test",
                         fp32_metrics: dict | None = None) -> dict:
    """Quantize `src` to `out`, evaluate both on the same split; the change in a dict + Markdown.

    `data_path` defaults to the training data recorded in the model (so `split` is the same carve).
    """
    from deepapps.apps.nlp.runtime import NlpServing
    from deepapps.core.runtime.session import load_model

    evaluate = NlpServing().evaluate
    fp32 = load_model(src, provider="cpu", app="nlp")  # first: a missing file or another app's model stops here
    data_path = data_path or fp32.contract.train.data_config.get("path")
    before = fp32_metrics or evaluate(fp32, data_path, split).metrics  # bad data or split: stop before writing
    quantize(src, out)
    int8 = load_model(out, provider="cpu", app="nlp")
    after = evaluate(int8, data_path, split).metrics
    keys = [k for k in ("accuracy", "macro_f1", "auroc") if before.get(k) is not None]
    result = {
        "file": out.name, "split": split, "n": after["n"],
        "fp32": {k: before[k] for k in keys}, "int8": {k: after[k] for k in keys},
        "change": {k: after[k] - before[k] for k in keys},
        "size_mb": {"fp32": round(Path(src).stat().st_size / 2**20, 1), "int8": round(out.stat().st_size / 2**20, 1)},
        "latency_ms_batch1_64_tokens_cpu": {"fp32": round(_latency_ms(fp32), 2), "int8": round(_latency_ms(int8), 2)},
    }
    rows = "\n".join(f"| {k} | {result['fp32'][k]:.4f} | {result['int8'][k]:.4f} | {result['change'][k]:+.4f} |"
                     for k in keys)
    result["markdown"] = (
        f"`{out.name}`: dynamic int8 (onnxruntime.quantization.quantize_dynamic, per-channel QInt8 weights), "
        f"evaluated on the same {split} split ({after['n']} rows).\n\n| metric | fp32 | int8 | change |\n"
        f"|---|---|---|---|\n{rows}\n\nSize {result['size_mb']['fp32']} MB -> {result['size_mb']['int8']} MB; "
        f"batch 1 x 64 tokens on this CPU: {result['latency_ms_batch1_64_tokens_cpu']['fp32']} ms -> "
        f"{result['latency_ms_batch1_64_tokens_cpu']['int8']} ms (median of 20)."
    )
    log.info("int8: %s", {k: round(v, 4) for k, v in result["change"].items()})
    return result


def quantize_into_run(model_path: Path, out: Path | None = None, data_path: str | None = None,
                      split: str = "test") -> dict:
    """int8 copy beside `model_path`, its accuracy change in `<out>.json` and the run's model card
    (`data_path`: see `quantize_and_measure`)."""
    model_path = Path(model_path)
    out = Path(out) if out else model_path.with_suffix(".int8.onnx")
    result = quantize_and_measure(model_path, out, data_path, split)
    card = model_path.parent / "model_card.md"
    if card.is_file():
        text = card.read_text()
        if "## int8 quantization" in text:  # replace the earlier measurement, keep what follows it
            head, tail = text.split("## int8 quantization", 1)
            rest = tail.split("\n## ", 1)
            text = head.rstrip("\n") + "\n" + ("\n## " + rest[1] if len(rest) > 1 else "")
        atomic_write(card, lambda tmp: tmp.write_text(text.rstrip("\n") + "\n\n## int8 quantization\n\n"
                                                      + result["markdown"] + "\n"))
    summary = {k: v for k, v in result.items() if k != "markdown"}
    write_json(out.with_suffix(".json"), summary)
    return summary


def main(app, argv: list[str]) -> int:
    """`deepapps nlp quantize`: write the int8 copy, print the accuracy change as JSON."""
    from deepapps.core.cli import OneLineParser

    parser = OneLineParser(prog="deepapps nlp quantize", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="fp32 nlp .onnx file")
    parser.add_argument("--out", help="int8 file (default: <model>.int8.onnx)")
    parser.add_argument("--data.path", "--data", dest="data_path", help="labelled data (default: the training data)")
    parser.add_argument("--split", default="test", help="train, val, test or all")
    args = parser.parse_args(argv)
    summary = quantize_into_run(Path(args.model), args.out and Path(args.out), args.data_path, args.split)
    print(json.dumps(summary, indent=2))
    return 0
