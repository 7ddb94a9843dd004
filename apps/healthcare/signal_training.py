"""ECG / 1-D signal task of the healthcare app (torch side): data module and network.

The core's fit flow trains it with a ClassificationModule; the healthcare post-fit step
(temperature, threshold) and report apply unchanged. The graph takes raw float signals
(batch, length) and does the whole front end inside (see signal_models).
"""

from __future__ import annotations

import csv
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytorch_lightning as L
import torch
from torch.nn import functional as F
from torch.utils.data import DataLoader, Dataset

from deepapps.apps.healthcare.signal_models import (
    SIGNAL_NETS, FCN, DftSpectrogram, ResNet1d, SignalClassifier, SignalFrontEnd, SpectrogramEncoder, fir_kernel,
)
from deepapps.apps.healthcare.signals import SignalSettings, SignalSource, open_signal_source
from deepapps.apps.healthcare.training import EpochWeightedSampler
from deepapps.core.contract import PROBABILITIES, Classification, TensorSpec, problem_type
from deepapps.core.data.class_weights import class_weights
from deepapps.core.data.splits import check_splits
from deepapps.core.errors import ConfigError
from deepapps.core.runtime.io import atomic_write
from deepapps.core.training.interface import Built, Saved

INPUT_NAME = "signal"
FAMILY = "signal_classification"


class SignalDataset(Dataset):
    """(signal (L,) float32, target) of one split; random scale, noise and shift when augmenting."""

    def __init__(self, signals: np.ndarray, targets: np.ndarray, augment: dict | None = None):
        self.signals, self.targets, self.augment = torch.from_numpy(signals), torch.from_numpy(targets), augment

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = self.signals[i]
        if self.augment:
            a = self.augment
            x = x * (1 + a["scale"] * (2 * torch.rand(()) - 1)) + a["noise"] * torch.randn_like(x)
            if a["shift"]:
                s = int(torch.randint(-a["shift"], a["shift"] + 1, ()))
                x = F.pad(x[None, None], (max(s, 0), max(-s, 0)), mode="replicate")[0, 0]
                x = x[max(-s, 0): max(-s, 0) + len(self.signals[i])]
        return x, self.targets[i]


class SignalDataModule(L.LightningDataModule):
    """Reads and splits the whole file once (signal sets fit in memory)."""

    def __init__(self, cfg, imbalance: str = "loss", seed: int = 0):
        super().__init__()
        self.cfg, self.imbalance, self.seed = cfg, imbalance, seed
        data = cfg.data
        self.source: SignalSource = open_signal_source(data.path, SignalSettings.from_dict(asdict(data)))
        check_splits(self.source.splits, data.path)  # fit validates and tests: none may be empty
        if cfg.signal.length is not None and cfg.signal.length != self.source.length:
            raise ConfigError(f"--signal.length {cfg.signal.length}: {data.path} has {self.source.length} samples "
                              "per signal (use --signal.resample_to to change the model's length)")
        self.num_workers = data.num_workers or 0  # in memory: worker processes only add start-up time
        s = cfg.signal
        self.augment = {"scale": s.augment_scale, "noise": s.augment_noise, "shift": s.augment_shift} \
            if data.augment else None

    @property
    def labels(self) -> list[str]:
        return self.source.labels

    @property
    def multilabel(self) -> bool:
        return False

    def summary(self) -> dict:
        return self.source.summary()

    def class_weights(self, mode: str | None) -> list[float] | None:
        """`optim.class_weights` when set; else `balanced` (n / (K * count) on train) for imbalance=loss."""
        mode = mode or ("balanced" if self.imbalance == "loss" else None)
        return class_weights(mode, list(self.source.class_counts("train").values()))

    def dataset(self, split: str) -> SignalDataset:
        idx = self.source.splits[split]
        return SignalDataset(self.source.signals[idx], self.source.targets[idx],
                             self.augment if split == "train" else None)

    def train_dataloader(self) -> DataLoader:
        data, n = self.dataset("train"), len(self.source.splits["train"])
        drop_last = n > self.cfg.data.batch_size
        if self.imbalance == "sampler":
            targets = data.targets.numpy()
            weights = 1.0 / np.bincount(targets, minlength=len(self.labels))[targets]
            sampler = EpochWeightedSampler(torch.as_tensor(weights, dtype=torch.double), n, self.seed)
            return DataLoader(data, self.cfg.data.batch_size, sampler=sampler, drop_last=drop_last,
                              num_workers=self.num_workers)
        return DataLoader(data, self.cfg.data.batch_size, shuffle=True, drop_last=drop_last,
                          num_workers=self.num_workers)

    def val_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("val"), 256, num_workers=self.num_workers)

    def test_dataloader(self) -> DataLoader:
        return DataLoader(self.dataset("test"), 256, num_workers=self.num_workers)

    def example_batch(self, n: int = 8) -> tuple[torch.Tensor, ...]:
        """Validation signals, one of each class first (export parity check)."""
        val = self.source.splits["val"]
        firsts = [val[self.source.targets[val] == k][:1] for k in range(len(self.labels))]
        rows = np.unique(np.concatenate([*firsts, val[:n]]), return_index=True)[1]
        chosen = np.concatenate([*firsts, val[:n]])[np.sort(rows)][:n]
        return (torch.from_numpy(self.source.signals[chosen]),)

    def write_samples(self, folder: Path, n: int = 12) -> int:
        """The first test signals as a CSV (id, label, samples) to try predict on."""
        idx = self.source.splits["test"][:n]
        rows = [[int(i), self.labels[self.source.targets[i]], *(f"{v:.6g}" for v in self.source.signals[i])]
                for i in idx]

        def write(tmp: Path) -> None:
            with open(tmp, "w", newline="") as f:
                csv.writer(f).writerows([["id", "label", *(f"s{j}" for j in range(self.source.length))], *rows])

        atomic_write(folder / "test_signals.csv", write)
        return len(idx)


def build_signal_classifier(cfg, saved: Saved | None = None, with_data: bool = True, imbalance: str = "loss") -> Built:
    """Data (it fixes the length and labels), then the front end, backbone and head."""
    s = cfg.signal
    if cfg.clinical.tta_flip:
        raise ConfigError("--clinical.tta_flip: mirrors images; it has no meaning for signals")
    dm = SignalDataModule(cfg, imbalance, cfg.seed) if with_data else None
    if saved is not None:
        kind, length, label_values = saved.kind, saved.preprocess["length"], saved.preprocess.get("label_values")
    else:
        kind = Classification(dm.labels, problem_type(len(dm.labels), False))
        length, label_values = dm.source.length, dm.source.label_values
    if dm is not None and dm.source.length != length:
        raise ConfigError(f"{cfg.data.path}: {dm.source.length} samples per signal, the checkpoint's model takes {length}")
    try:
        fir = fir_kernel(s.sample_rate, s.highpass_hz, s.lowpass_hz, s.filter_taps) \
            if (s.highpass_hz or s.lowpass_hz) else None
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    front_end = SignalFrontEnd(length, fir, s.resample_to, s.normalize)
    backbone, weights = signal_backbone(cfg, None if saved else cfg.model.pretrained)
    net = SignalClassifier(front_end, backbone, len(kind.labels), cfg.model.drop_rate)
    in_graph = [step for step, on in (
        (f"FIR filter ({s.filter_taps} taps, high-pass {s.highpass_hz} Hz, low-pass {s.lowpass_hz} Hz "
         f"at the nominal {s.sample_rate:g} Hz)", fir is not None),
        (f"torchaudio sinc resampling {length} -> {s.resample_to} samples", bool(s.resample_to)),
        ("z-normalisation per signal", s.normalize),
        (f"power spectrogram (n_fft {s.n_fft}, hop {s.hop_length}, Hann, {s.n_mels or 'linear'} "
         f"{'mel bands' if s.n_mels else 'bins'}) in dB, standardised, resized to {s.image_size}x{s.image_size}",
         cfg.model.backbone not in SIGNAL_NETS),
    ) if on]
    preprocess = {
        "kind": "signal", "length": length, "sample_rate_hz": s.sample_rate,
        "sample_rate_note": "nominal (UCR beats are resampled to a fixed length and have no true rate)",
        "label_column": cfg.data.label_column,
        "label_values": label_values,
        "in_graph": in_graph,
        "outside_graph": "none: predict checks length and NaN/infinite values, then feeds the raw float32 samples",
    }
    return Built(
        net=net, datamodule=dm, kind=kind, inputs=[TensorSpec(INPUT_NAME, "float32", ["batch", length], "NL")],
        outputs=[PROBABILITIES], preprocess=preprocess, weights=saved.weights if saved else weights, family=FAMILY,
        dummy_inputs=lambda n: (torch.randn(n, length),), backbone=cfg.model.backbone,
        write_samples=dm.write_samples if dm is not None else None,
    )


def signal_backbone(cfg, pretrained: str | None) -> tuple[torch.nn.Module, str]:
    """resnet1d / fcn (random init), or a timm image backbone on the log-spectrogram."""
    s, name = cfg.signal, cfg.model.backbone
    if name == "resnet1d":
        return ResNet1d(s.width), f"random init (resnet1d, width {s.width})"
    if name == "fcn":
        return FCN(s.width), f"random init (fcn, width {s.width})"
    from deepapps.core.training.backbones import create_timm_model

    image_backbone, weights = create_timm_model(name, 0, pretrained, cfg.model.drop_rate)
    spectrogram = DftSpectrogram(s.n_fft, s.hop_length, s.sample_rate, s.n_mels)
    return SpectrogramEncoder(spectrogram, image_backbone, s.image_size), f"{weights}; on the log-spectrogram"
