"""Lightning DataModule for image classification on top of `image_sources`."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytorch_lightning as L
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision.transforms import v2

from deepapps.core.config import ImageDataConfig
from deepapps.core.data.class_weights import class_weights
from deepapps.core.data.image_sources import ImageSource, SplitSettings, open_image_source
from deepapps.core.runtime.images import ImageSpec, to_model_input

_INTERPOLATION = {
    "bicubic": v2.InterpolationMode.BICUBIC,
    "bilinear": v2.InterpolationMode.BILINEAR,
    "nearest": v2.InterpolationMode.NEAREST,
}


class ImageDataset(Dataset):
    """Items of one split as (uint8 (H, W, C) pixels, target)."""

    def __init__(self, source: ImageSource, indices: np.ndarray, transform):
        self.source, self.indices, self.transform = source, indices, transform

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        index = int(self.indices[i])
        pixels = self.transform(self.source.load(index))
        return torch.from_numpy(pixels), torch.as_tensor(self.source.targets[index])


class ImageDataModule(L.LightningDataModule):
    """Indexes and splits the data once at construction, so labels are known up front."""

    def __init__(self, cfg: ImageDataConfig, spec: ImageSpec):
        super().__init__()
        self.cfg, self.spec = cfg, spec
        self.split = SplitSettings(cfg.val_fraction, cfg.test_fraction, cfg.split_seed)
        self.source = self.open_source()
        if cfg.group_columns:  # fairness by group: binary decisions only (core.fairness), checked before the run folder
            from deepapps.core.fairness import check_binary

            check_binary(self.source.labels, self.source.multilabel)
        cpus = os.cpu_count() or 1
        self.num_workers = cfg.num_workers if cfg.num_workers is not None else min(8, max(cpus - 1, 0))

    def open_source(self) -> ImageSource:
        """Index and split the data (an app's subclass may read other formats), with the sensitive
        attributes of `cfg.group_columns`."""
        return open_image_source(self.cfg.path, self.split, self.cfg.path_column, self.cfg.label_column,
                                 attribute_columns=self.cfg.group_columns)

    @property
    def labels(self) -> list[str]:
        return self.source.labels

    @property
    def multilabel(self) -> bool:
        return self.source.multilabel

    def summary(self) -> dict:
        """Source, labels, split sizes, class balance and notes (model card, metadata)."""
        return self.source.summary()

    def write_samples(self, folder: Path, n: int = 12) -> int:
        """A few test images as PNG, when the data lives in arrays (builtin, .npz), to try predict on."""
        source = self.source
        if Path(source.refs[0]).is_file():
            return 0
        folder.mkdir(parents=True, exist_ok=True)
        indices = source.splits["test"][:n]
        for i in indices:
            label = "multi" if source.multilabel else source.labels[source.targets[i]]
            source.load(int(i)).save(folder / f"{int(i):05d}_label-{label}.png")
        return len(indices)

    def eval_transform(self, img: Image.Image) -> np.ndarray:
        return to_model_input(img, self.spec)

    def train_transform(self, img: Image.Image) -> np.ndarray:
        if not self.cfg.augment:
            return self.eval_transform(img)
        steps = [
            v2.RandomResizedCrop(
                self.spec.size, scale=(self.cfg.scale_min, 1.0),
                interpolation=_INTERPOLATION[self.spec.interpolation], antialias=True,
            ),
            v2.RandomHorizontalFlip(self.cfg.hflip),
        ]
        if self.cfg.rotation:
            steps.append(v2.RandomRotation(self.cfg.rotation))
        if self.cfg.color_jitter:
            j = self.cfg.color_jitter
            steps.append(v2.ColorJitter(brightness=j, contrast=j, saturation=j))
        img = v2.Compose(steps)(img.convert("L" if self.spec.channels == 1 else "RGB"))
        array = np.array(img, dtype=np.uint8)
        return array[..., None] if array.ndim == 2 else array

    def class_weights(self, mode: str | None) -> list[float] | None:
        """None, `balanced`, `sqrt` or explicit comma-separated weights (core.data.class_weights)."""
        return class_weights(mode, list(self.source.class_counts("train").values()))

    def dataset(self, split: str) -> ImageDataset:
        transform = self.train_transform if split == "train" else self.eval_transform
        return ImageDataset(self.source, self.source.splits[split], transform)

    def _loader(self, split: str) -> DataLoader:
        return DataLoader(
            self.dataset(split), batch_size=self.cfg.batch_size, shuffle=split == "train",
            num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
            drop_last=split == "train" and len(self.source.splits["train"]) > self.cfg.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")

    def test_dataloader(self) -> DataLoader:
        return self._loader("test")

    def example_batch(self, n: int = 8) -> tuple[torch.Tensor, ...]:
        """Real validation images (no augmentation) for the export parity check."""
        data = self.dataset("val")
        items = [data[i] for i in range(min(n, len(data)))]
        return (torch.stack([x for x, _ in items]),)
