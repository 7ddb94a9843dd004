"""Series DataModule: stride-1 windows over z-scored series (train statistics), per split."""

from __future__ import annotations

import numpy as np
import pytorch_lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from deepapps.apps.finance.forecast.auto import check_geometry, resolve_geometry
from deepapps.apps.finance.forecast.config import SeriesDataConfig
from deepapps.apps.finance.forecast.series import (
    SeriesTable, calendar_features, load_table, season_length, split_ranges, training_statistics, window_starts,
)
from deepapps.core.errors import DataError


class WindowDataset(Dataset):
    """(history (L, C) [, calendar (L+H, K)] [, covariates (L, P)], future (H, C)) windows from
    several series; values and covariates z-scored, calendar features as generated."""

    def __init__(self, values: list[torch.Tensor], index: np.ndarray, look_back: int, horizon: int,
                 calendar: list[torch.Tensor] | None = None, covariates: list[torch.Tensor] | None = None):
        self.values, self.index, self.look_back, self.horizon = values, index, look_back, horizon
        self.calendar, self.covariates = calendar, covariates

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, ...]:
        series, start = self.index[i]
        end = start + self.look_back + self.horizon
        window = self.values[series][start:end]  # (L+H, C)
        extra = []
        if self.calendar is not None:
            extra.append(self.calendar[series][start:end])  # (L+H, K)
        if self.covariates is not None:
            extra.append(self.covariates[series][start : start + self.look_back])  # (L, P)
        return window[: self.look_back], *extra, window[self.look_back :]


class SeriesDataModule(L.LightningDataModule):
    """Reads the table once; z-score statistics come from the training part of every series.

    An `auto` look_back or horizon is resolved from the frequency (forecast.auto) into `cfg`;
    the choices are in `auto_choices`.
    """

    def __init__(self, cfg: SeriesDataConfig):
        super().__init__()
        self.cfg = cfg
        self.table: SeriesTable = load_table(cfg.path, cfg.timestamp, cfg.target, cfg.id_column, cfg.freq, cfg.fill,
                                             cfg.covariates)
        self.ranges = [
            split_ranges(len(s.values), cfg.split, self.table.freq, cfg.val_fraction, cfg.test_fraction)
            for s in self.table.series
        ]
        self.auto_choices = resolve_geometry(cfg.look_back, cfg.horizon, self.table.freq,
                                             min(r["train"][1] - r["train"][0] for r in self.ranges))
        for choice in self.auto_choices:
            setattr(cfg, choice.field.split(".")[1], choice.value)
        check_geometry(cfg.look_back, cfg.horizon)
        _, self.mean, self.std = training_statistics([s.values for s in self.table.series], self.ranges)  # (C,)
        self.normalized = [torch.from_numpy(((s.values - self.mean) / self.std).astype(np.float32)) for s in self.table.series]
        self.calendar = ([torch.from_numpy(calendar_features(s.timestamps, cfg.calendar, cfg.holidays)) for s in self.table.series]
                         if cfg.calendar else None)
        self.covariate_mean = self.covariate_std = self.covariates = None
        if cfg.covariates:
            _, self.covariate_mean, self.covariate_std = training_statistics(
                [s.covariates for s in self.table.series], self.ranges)  # (P,)
            self.covariates = [torch.from_numpy(((s.covariates - self.covariate_mean) / self.covariate_std).astype(np.float32))
                               for s in self.table.series]
        self.index = {split: self._index(split) for split in ("train", "val", "test")}
        if len(self.index["train"]) == 0:
            shortest = min(self.table.series, key=lambda s: len(s.values))
            need = cfg.look_back + cfg.horizon
            raise DataError(
                f"{cfg.path}: no training window: series {shortest.id or '(single)'} has {len(shortest.values)} "
                f"steps, its training part needs at least {need} (look_back + horizon)"
            )

    def _index(self, split: str) -> np.ndarray:
        """(series, start) pairs of every window of `split`, (N, 2)."""
        parts = [
            np.stack([np.full(len(st), k), st], axis=1)
            for k, r in enumerate(self.ranges)
            if len(st := window_starts(r[split], self.cfg.look_back, self.cfg.horizon))
        ]
        return np.concatenate(parts) if parts else np.zeros((0, 2), dtype=np.int64)

    @property
    def targets(self) -> list[str]:
        return self.table.targets

    @property
    def season(self) -> int:
        return self.cfg.season_length or season_length(self.table.freq)

    def summary(self) -> dict:
        """Source, frequency, split sizes (windows), notes (model card, metadata)."""
        notes = list(self.table.notes) + [
            f"{len(self.table.series)} series, {len(self.targets)} target columns, frequency {self.table.freq}; "
            f"z-score with training statistics; windows of {self.cfg.look_back} -> {self.cfg.horizon} steps, stride 1"
        ]
        if self.cfg.covariates:
            notes.append(f"past-observed covariates: {', '.join(self.cfg.covariates)}")
        if self.cfg.calendar:
            notes.append(f"known-future calendar features: {', '.join(self.cfg.calendar)}")
        return {
            "source": self.cfg.path,
            "targets": self.targets,
            "freq": self.table.freq,
            "sizes": {split: int(len(idx)) for split, idx in self.index.items()},
            "notes": notes,
        }

    def dataset(self, split: str) -> WindowDataset:
        return WindowDataset(self.normalized, self.index[split], self.cfg.look_back, self.cfg.horizon,
                             self.calendar, self.covariates)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.dataset(split), batch_size=self.cfg.batch_size, shuffle=shuffle,
                          num_workers=self.cfg.num_workers, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)

    def example_batch(self, n: int = 8) -> tuple[torch.Tensor, ...]:
        """n raw (not z-scored) validation windows as the exported graph takes them: histories
        (n, L, C) [, calendar (n, L+H, K)] [, raw covariates (n, L, P)]."""
        split = "val" if len(self.index["val"]) else "train"
        picks = self.index[split][np.linspace(0, len(self.index[split]) - 1, n).astype(int)]
        L, H = self.cfg.look_back, self.cfg.horizon
        series = self.table.series
        out = [np.stack([series[k].values[s : s + L] for k, s in picks])]
        if self.calendar is not None:
            out.append(np.stack([self.calendar[k][s : s + L + H].numpy() for k, s in picks]))
        if self.covariates is not None:
            out.append(np.stack([series[k].covariates[s : s + L] for k, s in picks]))
        return tuple(torch.from_numpy(a.astype(np.float32)) for a in out)
