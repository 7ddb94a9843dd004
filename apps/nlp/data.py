"""Text DataModule: tokenise once, dynamic padding, length-bucketed batches."""

from __future__ import annotations

import logging

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Sampler

from deepapps.apps.nlp.config import TextDataConfig
from deepapps.apps.nlp.table import read_labelled
from deepapps.apps.nlp.tokens import encode, load_tokenizer, pad
from deepapps.core.data.class_weights import class_weights
from deepapps.core.data.splits import stratified_split

log = logging.getLogger("deepapps.nlp")


class BucketSampler(Sampler[list[int]]):
    """Batches of similar length: shuffle, sort each window of `window` batches by length,
    cut into batches, shuffle the batches (the usual `group_by_length` trick).

    The order depends on the seed and the epoch alone, so a resumed fit sees the order the
    uninterrupted one saw: Lightning sets the epoch before each training epoch. It calls `set_epoch`
    on `dataloader.batch_sampler.sampler`, not on a batch sampler, hence `sampler` is this one.
    """

    def __init__(self, lengths: np.ndarray, batch_size: int, shuffle: bool, bucket: bool, seed: int = 0,
                 window: int = 50):
        self.lengths, self.batch_size, self.shuffle, self.bucket = lengths, batch_size, shuffle, bucket
        self.seed, self.window, self.epoch = seed, window, 0

    @property
    def sampler(self) -> BucketSampler:
        """Where Lightning looks for `set_epoch`."""
        return self

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose order the next iteration gives."""
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng(self.seed + self.epoch)
        order = rng.permutation(len(self.lengths)) if self.shuffle else np.arange(len(self.lengths))
        if self.bucket:
            size = self.batch_size * self.window if self.shuffle else len(order)
            order = np.concatenate([c[np.argsort(-self.lengths[c], kind="stable")]
                                    for c in np.split(order, range(size, len(order), size))])
        batches = [order[i : i + self.batch_size].tolist() for i in range(0, len(order), self.batch_size)]
        if self.shuffle:
            batches = [batches[i] for i in rng.permutation(len(batches))]
        return iter(batches)

    def __len__(self) -> int:
        return -(-len(self.lengths) // self.batch_size)


class TextDataModule(L.LightningDataModule):
    """Reads the table, carves the stratified splits, tokenises every text once.

    Batches are (input_ids (B, T), attention_mask (B, T), target (B,)), T = longest in batch.
    """

    def __init__(self, cfg: TextDataConfig, tokenizer_json: str, pad_id: int, seed: int = 0):
        super().__init__()
        self.cfg, self.pad_id, self.seed = cfg, pad_id, seed
        table = read_labelled(cfg.path, cfg.text_column, cfg.label_column, cfg.label_names)
        self.labels, self.multilabel, self.notes = table.labels, False, list(table.notes)
        self.text_column, self.label_column = table.text_column, table.label_column  # `auto` resolved
        self.splits = stratified_split(table.targets, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        if cfg.max_train_rows and len(self.splits["train"]) > cfg.max_train_rows:
            full = len(self.splits["train"])
            rng = np.random.default_rng(cfg.split_seed + 1)
            self.splits["train"] = np.sort(rng.choice(self.splits["train"], cfg.max_train_rows, replace=False))
            self.notes.append(f"trained on a random {cfg.max_train_rows} of the {full} training rows")
        tok = load_tokenizer(tokenizer_json, cfg.max_length)
        self.texts, self.targets = table.texts, table.targets
        used = np.concatenate(list(self.splits.values()))
        ids, truncated = encode(tok, [table.texts[i] for i in used])
        self.ids: dict[int, list[int]] = dict(zip(used.tolist(), ids))
        if truncated:
            self.notes.append(f"{truncated} texts longer than {cfg.max_length} tokens were truncated")
            log.warning("%d texts truncated to %d tokens", truncated, cfg.max_length)

    def summary(self) -> dict:
        sizes = {k: int(len(v)) for k, v in self.splits.items()}
        counts = {name: int((self.targets[self.splits["train"]] == k).sum()) for k, name in enumerate(self.labels)}
        return {"source": self.cfg.path, "sizes": sizes, "labels": self.labels, "train_counts": counts,
                "notes": self.notes}

    def class_weights(self, mode: str | None) -> list[float] | None:
        """None, `balanced`, `sqrt` or explicit comma-separated weights (core.data.class_weights)."""
        return class_weights(mode, np.bincount(self.targets[self.splits["train"]], minlength=len(self.labels)))

    def collate(self, rows: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        ids, mask = pad([self.ids[r] for r in rows], self.pad_id)
        return torch.from_numpy(ids), torch.from_numpy(mask), torch.from_numpy(self.targets[rows])

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        rows = self.splits[split]
        lengths = np.array([len(self.ids[r]) for r in rows])
        sampler = BucketSampler(lengths, self.cfg.batch_size, shuffle, self.cfg.bucket, self.seed)
        return DataLoader(_Rows(rows), batch_sampler=sampler, collate_fn=self.collate,
                          num_workers=self.cfg.num_workers)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def example_batch(self, n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
        """n validation texts of mixed lengths (padding included), for the export parity check."""
        rows = self.splits["val"] if len(self.splits["val"]) else self.splits["train"]
        rows = rows[np.linspace(0, len(rows) - 1, min(n, len(rows))).astype(int)]
        ids, mask, _ = self.collate(rows.tolist())
        return ids, mask


class _Rows(torch.utils.data.Dataset):
    """Row numbers; collate looks the tokens up."""

    def __init__(self, rows: np.ndarray):
        self.rows = rows

    def __len__(self) -> int:
        return len(self.rows)

    def __getitem__(self, i: int) -> int:
        return int(self.rows[i])
