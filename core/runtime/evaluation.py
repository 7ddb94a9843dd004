"""What every app's `evaluate` returns (torch-free), the keys its metrics start with, and the
split `evaluate --split auto` scores.

Every evaluation's metrics begin with `split`, `n` (items scored; a forecaster's windows), `data`
(the path given) and `fingerprint` (core.data.fingerprint: which data that was).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from deepapps.core.data.fingerprint import fingerprint, same_data, same_path
from deepapps.core.errors import ConfigError

if TYPE_CHECKING:
    from deepapps.core.runtime.session import OnnxModel

#: what `evaluate --split` takes: auto, every item, or one split as fit carved it
SPLITS = ("auto", "all", "train", "val", "test")


@dataclass
class Evaluation:
    """Metrics of a model on one split (printed by `evaluate`, stored in metrics.json)."""

    metrics: dict


@dataclass
class ClassificationEvaluation(Evaluation):
    """A classifier's metrics with the raw targets and outputs, for plots.

    Attributes:
        targets: (N,) class ids, or (N, L) multi-hot.
        probs: (N, K) probabilities.
        labels: class names.
        problem: `binary`, `multiclass` or `multilabel`.
    """

    targets: np.ndarray
    probs: np.ndarray
    labels: list[str]
    problem: str = "multiclass"

    @property
    def scores(self) -> np.ndarray:
        """(N,) positive-class probability of a binary problem."""
        return self.probs[:, 1]


def evaluation_head(split: str, data_path: str, n: int) -> dict:
    """The keys every app's metrics start with: split, n, data and the data's fingerprint."""
    return {"split": split, "n": int(n), "data": str(data_path), "fingerprint": fingerprint(data_path)}


def choose_split(model: OnnxModel, data_path: str, split: str = "auto") -> tuple[str, str]:
    """(the split to score, its `split_chosen` line: `given` or `auto: <why>`) for `evaluate --split`.

    `auto` is `test` when `data_path` is the data the model was fit on (its fingerprint matches
    the one fit stored in `train.data`; a model without one compares the path with
    `train.data_config.path`), else `all`: labelled data the model never saw is scored whole.

    Raises:
        ConfigError: a split that is not one of SPLITS.
    """
    if split not in SPLITS:
        raise ConfigError(f"--split {split}: choose {', '.join(SPLITS[:-1])} or {SPLITS[-1]}")
    if split != "auto":
        return split, "given"
    train = model.contract.train
    same = same_data(fingerprint(data_path), train.data.get("fingerprint"))
    how = "fingerprint"
    if same is None:  # a model without a stored fingerprint (or data that cannot be read)
        same, how = same_path(data_path, train.data_config.get("path")), "path"
    if same:
        return "test", f"auto: the model's training data (same {how}): the test split fit held out"
    return "all", f"auto: not the model's training data (other {how}): every item"


def with_choice(metrics: dict, chosen: str) -> dict:
    """`metrics` with `split_chosen` right after `split` (what `evaluate` prints)."""
    out = {}
    for key, value in metrics.items():
        out[key] = value
        if key == "split":
            out["split_chosen"] = chosen
    return out if "split" in metrics else {"split_chosen": chosen} | metrics


def split_indices(splits: dict[str, np.ndarray], n: int, split: str, data_path: str, items: str) -> np.ndarray:
    """The item indices `evaluate --split` scores: every one of the `n` items for `all`, else the
    split as fit carved it.

    Raises:
        DeepappsError: a split the data does not have. DataError: the split is empty.
    """
    from deepapps.core.errors import DataError, DeepappsError

    if split == "all":
        indices = np.arange(n)
    elif split in splits:
        indices = splits[split]
    else:
        raise DeepappsError(f"--split {split}: choose all or one of {sorted(splits)}")
    if not len(indices):
        raise DataError(f"{data_path}: the {split} split is empty (the data is too small to carve it; "
                        f"--split all scores every {items})")
    return indices
