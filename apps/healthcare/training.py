"""Healthcare training (torch side): the core image family with grey input, class-balanced
sampling, flip TTA in the graph, and a post-fit step that calibrates (temperature scaling)
and chooses the operating threshold on the validation split. `task: signal` builds the ECG
network instead (apps/healthcare/signal_training.py); calibration and threshold are shared.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from dataclasses import asdict
from functools import partial

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, WeightedRandomSampler

from deepapps.apps.healthcare.clinical import check_rule, choose_threshold, fit_temperature, nll, operating_point
from deepapps.apps.healthcare.config import HealthcareFitConfig
from deepapps.apps.healthcare.data import MedicalDataSettings, detect_task, known_positive_label, open_medical_source
from deepapps.core.contract import Classification
from deepapps.core.errors import ConfigError
from deepapps.core.metrics import calibration_metrics
from deepapps.core.training.image_data import ImageDataModule
from deepapps.core.training.image_family import IMAGE_INT8, build_image_classifier
from deepapps.core.training.interface import Built, FitRun, PostFit, Saved, Served, Training
from deepapps.core.training.quantize import STATIC, Int8Method

log = logging.getLogger("deepapps.healthcare")

IMBALANCE = ("loss", "sampler", "none")
TASKS = ("image", "signal")
AUTO = "auto"  # the task from the data (apps/healthcare/data.py: detect_task)


class EpochWeightedSampler(WeightedRandomSampler):
    """WeightedRandomSampler whose draws depend on the seed and the epoch alone (Lightning calls
    `set_epoch` before each training epoch), so a resumed fit draws what the uninterrupted one drew."""

    def __init__(self, weights: torch.Tensor, num_samples: int, seed: int = 0):
        super().__init__(weights, num_samples, replacement=True, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        """The epoch whose draws the next iteration gives."""
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()


class MedicalDataModule(ImageDataModule):
    """ImageDataModule over `open_medical_source` (DICOM, patient splits, MedMNIST names),
    with class-weighted loss by default or a class-balanced sampler."""

    def __init__(self, cfg, spec, imbalance: str = "loss", seed: int = 0):
        self.imbalance, self.seed = imbalance, seed
        super().__init__(cfg, spec)

    def open_source(self):
        return open_medical_source(self.cfg.path, MedicalDataSettings.from_dict(asdict(self.cfg)),
                                   attribute_columns=self.cfg.group_columns)

    def class_weights(self, mode: str | None) -> list[float] | None:
        """`optim.class_weights` when set; else `balanced` for imbalance=loss."""
        return super().class_weights(mode or ("balanced" if self.imbalance == "loss" else None))

    def train_dataloader(self) -> DataLoader:
        if self.imbalance != "sampler":
            return super().train_dataloader()
        if self.multilabel:
            raise ConfigError("--clinical.imbalance sampler: needs single-label data; use loss for multi-label")
        targets = self.source.targets[self.source.splits["train"]]
        weights = 1.0 / np.bincount(targets, minlength=len(self.labels))[targets]
        sampler = EpochWeightedSampler(torch.as_tensor(weights, dtype=torch.double), len(targets), self.seed)
        return DataLoader(self.dataset("train"), batch_size=self.cfg.batch_size, sampler=sampler,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0,
                          drop_last=len(targets) > self.cfg.batch_size)


class ClinicalHead(nn.Module):
    """What is exported: logits (averaged with the mirrored image's under TTA) / T -> probabilities."""

    def __init__(self, net: nn.Module, multilabel: bool, temperature: float = 1.0, tta_flip: bool = False):
        super().__init__()
        self.net, self.multilabel, self.temperature, self.tta_flip = net, multilabel, temperature, tta_flip

    def logits(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.net(pixels)  # (B, K)
        if self.tta_flip:
            logits = (logits + self.net(pixels.flip(2))) / 2  # NHWC: axis 2 is the width
        return logits

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        logits = self.logits(pixels) / self.temperature
        return torch.sigmoid(logits) if self.multilabel else torch.softmax(logits, dim=-1)


def positive_index(labels: list[str], wanted: str | None, data_path: str) -> int:
    """Index of the class a binary threshold is set for."""
    name = wanted or known_positive_label(data_path)
    if name is None:
        return len(labels) - 1
    if name not in labels:
        raise ConfigError(f"--clinical.positive_label {name}: not one of the labels {labels}")
    return labels.index(name)


@torch.no_grad()
def validation_logits(head: ClinicalHead, datamodule) -> tuple[np.ndarray, np.ndarray]:
    """Logits (N, K) as the exported graph computes them (TTA included) and targets, on val."""
    head.eval()
    device = next(head.parameters()).device
    logits, targets = [], []
    for pixels, target in datamodule.val_dataloader():
        logits.append(head.logits(pixels.to(device)).float().cpu())
        targets.append(target)
    return torch.cat(logits).numpy().astype(np.float64), torch.cat(targets).numpy()


class HealthcareTraining(Training):
    """Medical images (the core image family) or ECG signals, calibrated and thresholded."""

    def build(self, cfg: HealthcareFitConfig, saved: Saved | None = None, with_data: bool = True) -> Built:
        """The core image family (or the ECG signal network), with the clinical settings applied."""
        clinical = cfg.clinical
        if cfg.task not in (*TASKS, AUTO):
            raise ConfigError(f"--task {cfg.task}: choose {', '.join(TASKS)}, {AUTO}")
        task_note = resolve_task(cfg, saved)
        if clinical.imbalance not in (*IMBALANCE, AUTO):
            raise ConfigError(f"--clinical.imbalance {clinical.imbalance}: choose {', '.join(IMBALANCE)}, {AUTO}")
        if clinical.channels not in (1, 3):
            raise ConfigError(f"--clinical.channels {clinical.channels}: choose 1 (grey) or 3 (RGB)")
        check_rule(clinical.threshold)
        if cfg.task == "signal" and cfg.data.group_columns:
            raise ConfigError("--data.group_columns: fairness by group is offered for image manifests, not for "
                              "task signal")
        if cfg.task == "signal":
            from deepapps.apps.healthcare.signal_training import build_signal_classifier

            choices = resolve_signal_auto(cfg)
            built = build_signal_classifier(cfg, saved, with_data, clinical.imbalance)
            built.auto_choices = [c.to_dict() for c in choices]
        else:
            datamodule = partial(MedicalDataModule, imbalance=clinical.imbalance, seed=cfg.seed)
            built = build_image_classifier(cfg, saved, with_data, clinical.channels, datamodule, medical=True)
            if built.datamodule is not None:  # `auto` resolved from the data while building
                built.datamodule.imbalance = clinical.imbalance
            built.preprocess = built.preprocess | {
                "tta": "mean of the logits of the image and its horizontal mirror (in the graph)"
                if clinical.tta_flip else None,
                "dicom": {"window_center": cfg.data.window_center, "window_width": cfg.data.window_width,
                          "default": "the file's WindowCenter/WindowWidth, else its pixel range; MONOCHROME1 inverted"},
            }
        if built.kind.problem == "binary":
            positive_index(built.labels, clinical.positive_label, cfg.data.path)  # a wrong name fails now, not after training
        if task_note and built.datamodule is not None:
            built.datamodule.source.notes.append(task_note)  # the model card's data notes
        return built

    def post_fit(self, module, built: Built, cfg: HealthcareFitConfig) -> PostFit:
        """Temperature and operating threshold from the validation split.

        The temperature is baked into the exported graph; the threshold is what predict applies
        to the positive class's probability (per label for multi-label).
        """
        return PostFit(calibrate_and_threshold(module.net, built, cfg))

    def served(self, built: Built, state: dict) -> Served:
        """Logits (TTA-averaged) / T -> probabilities; the threshold and its class in the contract."""
        clinical = state.get("clinical", {})
        temperature = float(state.get("temperature", 1.0))
        positive = state.get("positive_index", clinical.get("threshold", {}).get("positive_index", 1))
        kind = Classification(built.labels, built.kind.problem, state.get("threshold"), temperature, int(positive))
        head = ClinicalHead(built.net, built.multilabel, temperature, bool(clinical.get("tta_flip", False)))
        return Served(head, kind, {"clinical": clinical} if clinical else {})

    def int8_method(self, cfg: HealthcareFitConfig) -> Int8Method:
        """Static QDQ for both tasks: conv image backbones and the 1-D conv ECG networks, calibrated
        on validation images or signals."""
        if cfg.task == "signal":
            return Int8Method(STATIC, "1-D conv ECG network: static QDQ int8 calibrated on validation signals",
                              calibration=IMAGE_INT8.calibration)
        return IMAGE_INT8

    def artifacts(self, run: FitRun) -> dict:
        """With data.group_columns (image manifests): fairness by group of the ONNX model on val and
        test, at the calibrated threshold of the positive class."""
        from deepapps.core.fairness import run_fairness

        return run_fairness(run)

    def report(self, run: FitRun) -> None:
        """The healthcare model card and plots (matplotlib is imported only when a run reports)."""
        from deepapps.apps.healthcare.report import write_healthcare_report

        write_healthcare_report(run)


# `task: signal` with fields left at `auto` (default.yaml is the base of every fit): the values the
# default.yaml of deepapps 0.2 gave them, so `fit --data.path ECG.txt` trains as before;
# configs/ecg.yaml holds the recipe made for ECG.
SIGNAL_AUTO = {"data.image_size": None, "data.hflip": 0.0, "data.batch_size": 64, "trainer.max_epochs": 5,
               "model.freeze_epochs": 0, "optim.lr": 0.002, "trainer.monitor": "val/auroc", "clinical.imbalance": "loss"}


def resolve_signal_auto(cfg: HealthcareFitConfig) -> list:
    """Resolve the `auto` fields of a signal fit to SIGNAL_AUTO (printed once; returns the choices)."""
    from deepapps.core.training.auto import Choice, announce, check_resolved, is_auto

    choices = []
    for dotted, value in SIGNAL_AUTO.items():
        section, name = dotted.split(".")
        if is_auto(getattr(getattr(cfg, section), name)):
            setattr(getattr(cfg, section), name, value)
            choices.append(Choice(dotted, value, "signal task: the fixed defaults of deepapps 0.2 "
                                                 "(configs/ecg.yaml holds the ECG recipe)"))
    announce(choices)
    check_resolved(cfg)
    return choices


def resolve_task(cfg: HealthcareFitConfig, saved: Saved | None = None) -> str | None:
    """Set `cfg.task` when it is `auto`: from a checkpoint's model, else from the data
    (`detect_task`); the choice is printed once. Returns it as a note (None: the task was given)."""
    if cfg.task != AUTO:
        return None
    if saved is not None:
        cfg.task = "signal" if saved.preprocess.get("kind") == "signal" else "image"
        return None  # the checkpoint's model decides; the fit that made it printed its choice
    cfg.task, why = detect_task(cfg.data.path, cfg.data.path_column, cfg.data.label_column)
    line = f"--task {cfg.task} ({why})"
    print(f"deepapps: auto: {line}", file=sys.stderr)
    return f"auto: {line}"


def calibrate_and_threshold(net: nn.Module, built: Built, cfg: HealthcareFitConfig) -> dict:
    """The post-fit state: temperature scaling and the operating threshold, on validation."""
    clinical = cfg.clinical
    head = ClinicalHead(net, built.multilabel, 1.0, clinical.tta_flip)
    logits, targets = validation_logits(head, built.datamodule)
    problem = built.kind.problem
    temperature = fit_temperature(logits, targets, built.multilabel) if clinical.calibrate else 1.0

    def probabilities(t: float) -> np.ndarray:
        scaled = torch.from_numpy(logits / t)
        return (torch.sigmoid(scaled) if built.multilabel else torch.softmax(scaled, -1)).numpy()

    before = calibration_metrics(problem, targets, probabilities(1.0))
    after = calibration_metrics(problem, targets, probabilities(temperature))
    calibration = {
        "method": "temperature scaling on the validation split" if clinical.calibrate else "none",
        "temperature": temperature,
        "val_ece_before": before["ece"], "val_ece_after": after["ece"],
        "val_nll_before": nll(logits, targets, built.multilabel),
        "val_nll_after": nll(logits / temperature, targets, built.multilabel),
    }
    probs = probabilities(temperature)
    items = "signals" if cfg.task == "signal" else "images"
    info = {"rule": clinical.threshold, "chosen_on": f"validation split ({len(targets)} {items}), calibrated probabilities"}
    threshold = None
    if problem == "binary":
        k = positive_index(built.labels, clinical.positive_label, cfg.data.path)
        threshold = choose_threshold(targets == k, probs[:, k], clinical.threshold)
        info |= {"positive_label": built.labels[k], "positive_index": k,
                 "val": operating_point(targets == k, probs[:, k], threshold)}
    elif problem == "multilabel":
        threshold = [choose_threshold(targets[:, j] == 1, probs[:, j], clinical.threshold) for j in range(len(built.labels))]
    else:
        info = {"rule": "argmax (multi-class: no threshold)"}
    log.info("calibration: T=%.3f, val ECE %.4f -> %.4f; threshold %s (%s)", temperature, before["ece"] or 0,
             after["ece"] or 0, threshold, info["rule"])
    return {"temperature": temperature, "threshold": threshold, "positive_index": info.get("positive_index", 1),
            "clinical": {"calibration": calibration, "threshold": info, "imbalance": clinical.imbalance,
                         "tta_flip": clinical.tta_flip}}
