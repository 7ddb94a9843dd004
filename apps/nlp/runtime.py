"""Serving side of text classification: predict, evaluate and the HTTP adapter, with
`tokenizers` + ONNX Runtime only (never torch or transformers)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import polars as pl

from deepapps.apps.nlp.table import AUTO, TextTable, read_frame, read_labelled
from deepapps.apps.nlp.tokens import encode, load_tokenizer, pad
from deepapps.core.data.splits import stratified_split
from deepapps.core.errors import DataError, DeepappsError
from deepapps.core.runtime.evaluation import ClassificationEvaluation, evaluation_head
from deepapps.core.runtime.image_classification import prediction
from deepapps.core.runtime.interface import Predictions, Serving, positive_int
from deepapps.core.runtime.session import OnnxModel

log = logging.getLogger("deepapps.nlp")


def tokenizer_of(model: OnnxModel):
    pre = model.contract.preprocess
    return load_tokenizer(pre["tokenizer_json"], int(pre["max_length"]))


def score_ids(model: OnnxModel, seqs: list[list[int]], batch_size: int = 32) -> np.ndarray:
    """Probabilities (N, K) for token-id sequences; batched by length to pad little."""
    pad_id = int(model.contract.preprocess["pad_id"])
    order = np.argsort([len(s) for s in seqs], kind="stable")
    probs = np.zeros((len(seqs), len(model.labels)), np.float32)
    for start in range(0, len(seqs), batch_size):
        rows = order[start : start + batch_size]
        ids, mask = pad([seqs[i] for i in rows], pad_id)  # (B, T) each
        probs[rows] = model.run({"input_ids": ids, "attention_mask": mask})
    return probs


def score_texts(model: OnnxModel, texts: list[str], batch_size: int = 32) -> tuple[np.ndarray, int]:
    """(probabilities (N, K), number of texts truncated to max_length)."""
    seqs, truncated = encode(tokenizer_of(model), texts)
    return score_ids(model, seqs, batch_size), truncated


def read_inputs(args: argparse.Namespace) -> list[tuple[str, str | None, str]]:
    """(source, text or None, error) per item; a non-UTF-8 line or empty text is an error item."""
    items = [("--text", t, "") for t in args.text]
    for path in args.inputs:
        file = Path(path)
        if not file.is_file():
            raise DataError(f"{path}: no such file")
        if file.suffix.lower() in (".csv", ".tsv", ".parquet", ".jsonl", ".ndjson", ".json"):
            frame = read_frame(path, [args.column])
            texts = frame[args.column].cast(pl.String).to_list()
            items += [(f"{path}:{i + 2 if file.suffix.lower() in ('.csv', '.tsv') else i + 1}", t, "")
                      for i, t in enumerate(texts)]
            continue
        for i, raw in enumerate(file.read_bytes().splitlines()):
            try:
                items.append((f"{path}:{i + 1}", raw.decode("utf-8"), ""))
            except UnicodeDecodeError as exc:
                items.append((f"{path}:{i + 1}", None, f"line {i + 1}: not UTF-8 (byte {exc.start})"))
    if not items:
        given = ", ".join(map(str, args.inputs))
        raise DataError(f"{given}: no text to predict in it" if given else 'nothing to predict: give --text "..." or a file')
    return items



def evaluated_rows(model: OnnxModel, data_path: str, split: str, quiet: bool = False) -> tuple[TextTable, np.ndarray]:
    """(the labelled texts of the file, the indices of `split` in them), carved exactly as in fit.

    Args:
        quiet: no warning for a model of deepapps 0.1 (said once, by evaluate).
    """
    cfg = model.contract.train.data_config
    table = read_labelled(data_path, cfg.get("text_column", "text"), cfg.get("label_column", "label"),
                          cfg.get("label_names"), labels=model.labels)
    if split == "all":
        rows = np.arange(len(table.texts))
    else:
        if split not in ("train", "val", "test"):
            raise DeepappsError(f"--split {split}: choose one of train, val, test, all")
        if model.contract.schema_version < 2 and not quiet:
            print(f"warning: {model.path} was made by deepapps 0.1, which carved text splits another way; "
                  f"its {split} rows are re-carved by today's rule and may include rows it trained on",
                  file=sys.stderr)
        splits = stratified_split(table.targets, cfg.get("val_fraction", 0.1), cfg.get("test_fraction", 0.1),
                                  cfg.get("split_seed", 0))
        rows = splits[split]
    if not len(rows):
        raise DataError(f"{data_path}: the {split} split is empty")
    return table, rows

class NlpServing(Serving):
    """Texts from --text, text files (a line each) or tables; tokenised with `tokenizers` only."""

    spark_column = "text"

    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        parser.add_argument("inputs", nargs="*", help="text file (one text per line) or CSV/TSV/Parquet/JSONL table")
        parser.add_argument("--text", action="append", default=[], help="a text to score (repeat for several)")
        parser.add_argument("--column", default=None,
                            help="text column of a table input (default: the model's text column, else `text`)")
        parser.add_argument("--batch-size", "--batch_size", dest="batch_size", type=positive_int, default=32)

    def predict(self, model: OnnxModel, args: argparse.Namespace) -> Predictions:
        """Score every text; empty or undecodable ones become error rows. Returns (table, failures)."""
        if args.column is None:
            trained = model.contract.train.data_config.get("text_column")
            args.column = trained if isinstance(trained, str) and trained != AUTO else "text"
        items = read_inputs(args)
        rows = []
        for source, text, error in items:
            if not error and (text is None or not text.strip()):
                error = "empty text"
            rows.append({"source": source, "text": text, "error": error})
        ok = [i for i, r in enumerate(rows) if not r["error"]]
        probs, truncated = score_texts(model, [rows[i]["text"] for i in ok], args.batch_size)
        if truncated:
            print(f"warning: {truncated} texts longer than {model.contract.preprocess['max_length']} tokens "
                  "were truncated", file=sys.stderr)
        for i, p in zip(ok, probs):
            top = int(np.argmax(p))
            rows[i] |= {"label": model.labels[top], "probability": round(float(p[top]), 6)}
            rows[i] |= {f"p_{name}": round(float(v), 6) for name, v in zip(model.labels, p)}
        for r in rows:
            if r["error"]:
                print(f"error: {r['source']}: {r['error']}", file=sys.stderr)
        schema = {"source": pl.String, "text": pl.String, "label": pl.String, "probability": pl.Float64}
        schema |= {f"p_{name}": pl.Float64 for name in model.labels} | {"error": pl.String}
        table = pl.DataFrame([{k: r.get(k) for k in schema} for r in rows], schema=schema)
        return Predictions.of(table, sum(1 for r in rows if r["error"]))

    def evaluate(self, model: OnnxModel, data_path: str, split: str = "test",
                 batch_size: int = 32) -> ClassificationEvaluation:
        """Metrics of the ONNX model on `split` of the data, carved exactly as in fit."""
        from deepapps.core.metrics import classification_metrics

        table, rows = evaluated_rows(model, data_path, split)
        probs, _ = score_texts(model, [table.texts[i] for i in rows], batch_size)
        targets = table.targets[rows]
        problem = model.contract.task
        metrics = evaluation_head(split, data_path, len(rows)) | classification_metrics(
            problem, targets, probs, model.labels)
        return ClassificationEvaluation(metrics, targets, probs, model.labels, problem)

    def group_values(self, model: OnnxModel, data_path: str, split: str, columns: list[str]) -> dict[str, list]:
        """The group columns of the rows `evaluate` scores: the same file rows, split and order."""
        frame = read_frame(data_path)
        missing = [c for c in columns if c not in frame.columns]
        if missing:
            raise DataError(f"{data_path}: group column(s) not found: {', '.join(missing)} "
                            f"(columns: {', '.join(frame.columns)})")
        table, rows = evaluated_rows(model, data_path, split, quiet=True)
        picked = table.rows[rows]
        return {c: frame[c].gather(picked).to_list() for c in columns}

    def decode_item(self, model: OnnxModel, item: dict | bytes) -> list[int]:
        """`{"text": "..."}` (or raw UTF-8 bytes) -> token ids.

        Raises:
            DataError: one line saying what is wrong with the item.
        """
        if isinstance(item, (bytes, bytearray)):
            try:
                item = {"text": bytes(item).decode("utf-8")}
            except UnicodeDecodeError:
                raise DataError("text: not UTF-8") from None
        if isinstance(item, str):  # a Spark column of texts
            item = {"text": item}
        if not isinstance(item, dict) or set(item) != {"text"} or not isinstance(item["text"], str):
            got = sorted(item) if isinstance(item, dict) else type(item).__name__
            raise DataError(f'expected {{"text": "..."}}, got {got}')
        if not item["text"].strip():
            raise DataError("text: empty")
        try:
            item["text"].encode("utf-8")
        except UnicodeEncodeError as exc:
            raise DataError(f"text: not valid Unicode ({exc.reason} at character {exc.start})") from None
        return encode(tokenizer_of(model), [item["text"]])[0][0]

    def run_items(self, model: OnnxModel, items: list[list[int]]) -> list[dict]:
        """One ONNX Runtime call for a micro-batch: items of different lengths padded together."""
        probs = score_ids(model, items, batch_size=max(1, len(items)))
        return [prediction(p, model) for p in probs]
