"""TF-IDF + logistic regression on the split `deepapps nlp fit` would make (the baseline of the README).

    python benchmarks/nlp_tfidf_baseline.py --data.path ../shared/data/sst2/train.tsv \
        [--val 0.02] [--test 0.03] [--split-seed 0]

`deepapps nlp fit` reports the same baseline on its own split (metrics.json `baselines`,
`--baselines true`); this script gives the figure without training the encoder.
"""

from __future__ import annotations

import argparse
import json
import time

from deepapps.apps.nlp.baselines import tfidf_baseline
from deepapps.apps.nlp.table import read_labelled
from deepapps.core.contract import problem_type
from deepapps.core.data.splits import stratified_split


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data.path", dest="path", required=True)
    parser.add_argument("--text-column", default="auto")
    parser.add_argument("--label-column", default="auto")
    parser.add_argument("--val", type=float, default=0.1)
    parser.add_argument("--test", type=float, default=0.1)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    table = read_labelled(args.path, args.text_column, args.label_column)
    splits = stratified_split(table.targets, args.val, args.test, args.split_seed)
    started = time.perf_counter()
    result = tfidf_baseline(table.texts, table.targets, splits, table.labels, problem_type(len(table.labels), False))
    sizes = {k: int(len(v)) for k, v in splits.items()}
    print(json.dumps({"data": args.path, "sizes": sizes, "C": result["C"], "seconds": round(time.perf_counter() - started, 1),
                      "val": {k: result["val"][k] for k in ("accuracy", "macro_f1", "auroc")},
                      "test": {k: result["test"][k] for k in ("accuracy", "macro_f1", "auroc")}}, indent=2))


if __name__ == "__main__":
    main()
