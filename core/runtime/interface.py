"""The serve side of an app: what predict, evaluate, `deepapps serve` and Spark call (no torch).

An app implements `Serving` once; its AppSpec names the class. Required members are abstract,
optional ones have defaults here, and tests/core/test_interfaces.py checks every registered app.
"""

from __future__ import annotations

import argparse
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import polars as pl

from deepapps.core.errors import ConfigError
from deepapps.core.runtime.evaluation import Evaluation
from deepapps.core.runtime.session import OnnxModel


@dataclass
class Predictions:
    """What `predict` produced.

    Attributes:
        table: one row per input (an `error` column for the bad ones), written by the CLI; None
            when the app wrote `args.out` itself (streaming outputs larger than memory).
        failures: inputs that became error rows.
        rows: rows predicted (and written).
        message: one line for the user after writing (e.g. throughput), or None.
    """

    table: pl.DataFrame | None
    failures: int
    rows: int
    message: str | None = None

    @classmethod
    def of(cls, table: pl.DataFrame, failures: int) -> Predictions:
        return cls(table, failures, len(table))


def positive_int(text: str) -> int:
    """argparse type of counts such as `--batch-size`: an integer of at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    return value


class Serving(ABC):
    """The torch-free side of an app."""

    #: `predict --engine spark`: the input column holding one item (what `decode_item` takes);
    #: None hands `decode_item` each row as a dict of its columns
    spark_column: ClassVar[str | None] = "image"
    #: ONNX Runtime session config entries for command-line predict
    session_config: ClassVar[dict[str, str]] = {}
    #: predict writes --out itself (so --out is required) instead of returning a table
    writes_output: ClassVar[bool] = False

    @abstractmethod
    def add_predict_arguments(self, parser: argparse.ArgumentParser) -> None:
        """The app's own predict options, and its positional inputs with dest `inputs` (a list;
        `--engine spark` scores `inputs[0]`). The CLI adds --model, --provider, --out, --engine."""

    @abstractmethod
    def predict(self, model: OnnxModel, args: argparse.Namespace) -> Predictions:
        """Predict every input of `args`; a bad input is an error row, not an exception."""

    @abstractmethod
    def evaluate(self, model: OnnxModel, data_path: str, split: str = "test") -> Evaluation:
        """Metrics of `model` on `split` of labelled data: `train`, `val` or `test` as fit split it,
        or `all` (every item). They start with `evaluation_head` (core.runtime.evaluation):
        split, n, data and the data's fingerprint."""

    def group_values(self, model: OnnxModel, data_path: str, split: str, columns: list[str]) -> dict[str, list]:
        """The values of `columns` (sensitive attributes, for `evaluate --group-columns`) of the rows
        `evaluate(model, data_path, split)` scores, in its order. Optional: this default refuses.

        Raises:
            ConfigError: the app cannot read group columns; DataError: a column is not in the data.
        """
        raise ConfigError(f"--group-columns: not supported by this app ({type(self).__name__})")

    @abstractmethod
    def decode_item(self, model: OnnxModel, item: Any) -> Any:
        """One HTTP request item (JSON value, or uploaded bytes) -> model input; DataError if bad."""

    @abstractmethod
    def run_items(self, model: OnnxModel, items: list) -> list[dict]:
        """One ONNX Runtime call for a micro-batch of decoded items; one JSON-able dict each."""
