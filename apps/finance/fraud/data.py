"""Tabular DataModule: a table -> column roles -> split -> features fitted on train -> tensors."""

from __future__ import annotations

import sys

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, TensorDataset

from deepapps.apps.finance.fraud.features import LABELS, Encoded, FeatureSpec, encode, find_columns, load_source, targets
from deepapps.apps.finance.fraud.tables import split_frame
from deepapps.core.data.class_weights import class_weights
from deepapps.core.errors import ConfigError, DataError


class TabularDataModule(L.LightningDataModule):
    """Reads the whole table (training data fits in memory), splits it and fits the features.

    Attributes:
        spec: the fitted FeatureSpec (numeric stats, vocabularies) that goes into the graph.
        frames: raw train/val/test tables (for baselines and reports).
        y: 0/1 targets per split.
    """

    def __init__(self, cfg):
        super().__init__()
        self.cfg = cfg
        source = cfg.path
        self.read_notes: list[str] = []
        df = load_source(source, cfg, self.read_notes)
        self.columns = find_columns(df, source, cfg)
        for option, value, found in (("--data.label_column", cfg.label_column, self.columns.label),
                                     ("--data.time_column", cfg.time_column, self.columns.time)):
            if value == "auto":  # each `auto` choice once, at the start (the summary notes name them too)
                print(f"deepapps: auto: {option} {found or 'none'} (found by name or type)", file=sys.stderr)
        self.frames = split_frame(df, self.columns, cfg.split, cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        y_train, positive = targets(self.frames["train"], self.columns.label, source)
        if len(np.unique(y_train)) < 2:
            raise DataError(f"{source}: label column {self.columns.label!r} has only one class in the train split")
        self.spec = FeatureSpec.fit(self.frames["train"], self.columns, positive, cfg.log_columns, cfg.min_category_count)
        self.y = {k: targets(f, self.columns.label, source, positive)[0] for k, f in self.frames.items()}
        self.encoded: dict[str, Encoded] = {k: encode(f, self.spec) for k, f in self.frames.items()}
        for split, enc in self.encoded.items():
            if enc.bad.any():
                first = enc.first_error
                raise DataError(f"{source}: {int(enc.bad.sum())} {split} rows have bad values (first: {first})")
        self.labels, self.multilabel = LABELS, False
        if cfg.gan_oversample < 0 or cfg.gan_steps < 1:
            raise ConfigError("--data.gan_oversample must be >= 0 and --data.gan_steps >= 1")
        # the GAN trains only when fit asks for the training data (not on export/validate/test from a
        # checkpoint); its seed is drawn now, from the run's --seed (fit seeds torch before building data)
        self.n_synthetic = int(round(cfg.gan_oversample * int(self.y["train"].sum())))
        self._gan_seed = int(torch.randint(0, 2**31 - 1, ())) if self.n_synthetic else None
        self._synthetic: Encoded | None = None

    def synthetic(self) -> Encoded:
        """The GAN frauds added to the training split (apps/finance/fraud/gan.py), made once."""
        if self._synthetic is None:
            from deepapps.apps.finance.fraud.gan import oversample

            frauds = np.flatnonzero(self.y["train"] == 1)
            enc = self.encoded["train"]
            real = Encoded(enc.numeric[frauds], enc.categorical[frauds], enc.errors.gather(frauds), {})
            self._synthetic = oversample(real, self.spec, self.n_synthetic, self.cfg.gan_steps, seed=self._gan_seed)
        return self._synthetic

    def _dataset(self, split: str) -> TensorDataset:
        tensors = [*self.inputs(split), torch.from_numpy(self.y[split])]
        if split == "train" and self.n_synthetic:
            synthetic = self.synthetic()
            extra = [torch.from_numpy(synthetic.numeric)]
            extra += [torch.from_numpy(synthetic.categorical)] if self.spec.categorical else []
            extra.append(torch.ones(len(synthetic.numeric), dtype=torch.int64))
            tensors = [torch.cat([a, b]) for a, b in zip(tensors, extra)]
        return TensorDataset(*tensors)

    def inputs(self, split: str, n: int | None = None) -> tuple[torch.Tensor, ...]:
        """Graph inputs of a split: (numeric,) or (numeric, categorical)."""
        enc = self.encoded[split]
        out = [torch.from_numpy(enc.numeric[:n])]
        if self.spec.categorical:
            out.append(torch.from_numpy(enc.categorical[:n]))
        return tuple(out)

    def split_scores(self, scorers: dict, split: str) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """(0/1 targets, {name: scores}) of every row of `split`; `scorers`: {name: Encoded rows -> scores}.

        The streaming DataModule computes them batch by batch, keeping only targets and scores."""
        return self.y[split], {name: np.asarray(score(self.encoded[split])) for name, score in scorers.items()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("train"), self.cfg.batch_size, shuffle=True, drop_last=True,
                          num_workers=self.cfg.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("val"), 4096, num_workers=self.cfg.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self._dataset("test"), 4096, num_workers=self.cfg.num_workers)

    def example_batch(self, n: int = 8) -> tuple[torch.Tensor, ...]:
        """Validation rows, chosen to include missing values when there are any (parity check)."""
        enc = self.encoded["val"]
        rows = np.r_[np.flatnonzero(np.isnan(enc.numeric).any(1))[: n // 2], np.arange(n)][:n]
        out = [torch.from_numpy(enc.numeric[rows])]
        if self.spec.categorical:
            out.append(torch.from_numpy(enc.categorical[rows]))
        return tuple(out)

    def class_weights(self, mode: str | None) -> list[float] | None:
        """None, `balanced` (n / (2 n_class)), `sqrt` (its square root), or `w0,w1`."""
        counts = np.bincount(self.y["train"], minlength=2)
        counts[1] += self.n_synthetic  # weights for the rows the network trains on
        return class_weights(mode, counts)

    def summary(self) -> dict:
        sizes = {k: f.height for k, f in self.frames.items()}
        counts = {k: {LABELS[0]: int((y == 0).sum()), LABELS[1]: int(y.sum())} for k, y in self.y.items()}
        c = self.columns
        notes = [
            f"label `{c.label}` (fraud = {self.spec.positive!r}); time `{c.time}`; ids {c.ids or 'none'}",
            f"numeric ({len(c.numeric)}): {', '.join(c.numeric)}",
            f"categorical ({len(c.categorical)}): {', '.join(c.categorical) or 'none'}",
            f"split: {self.cfg.split if c.time or self.cfg.split == 'random' else 'random (no time column)'}",
            *self.read_notes,
        ]
        if self.n_synthetic:
            notes.append(f"GAN oversampling: {self.n_synthetic} synthetic frauds added to train "
                         f"({self.cfg.gan_oversample:g} x its real frauds, WGAN-GP, {self.cfg.gan_steps} steps)")
        if self.cfg.path == "builtin:transactions":
            notes.append(f"synthetic transactions: {self.cfg.synth_rows} rows, fraud rate {self.cfg.synth_fraud_rate}, "
                         f"seed {self.cfg.synth_seed}")
        return {"source": self.cfg.path, "sizes": sizes, "labels": LABELS, "class_counts": counts, "notes": notes}
