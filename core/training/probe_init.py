"""Start a new classification head at the linear probe: LP-FT (Kumar et al., ICLR 2022).

A randomly initialised head sends large, random gradients into a pretrained backbone during the
first fine-tuning steps and distorts the features the data set is too small to relearn. Fitting
the head first, as a logistic regression on the frozen features (the linear-probe baseline
itself), then fine-tuning from there keeps the pretrained features and starts from the probe's
accuracy. The probe: scikit-learn's LogisticRegression (L2, lbfgs) on standardised pooled features
of the training images under the evaluation transform, C chosen on the validation split by log
loss; the standardisation is folded into the head's weights.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

log = logging.getLogger(__name__)

C_GRID = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0)
MAX_IMAGES = 4096  # per split: the probe is a starting point, a sample of a large set suffices


@torch.no_grad()
def pooled_features(net: nn.Module, loader: DataLoader) -> tuple[np.ndarray, np.ndarray]:
    """(features (N, F), targets (N,)) of `net.features` over `loader`, in eval mode."""
    was_training = net.training
    net.eval()
    features, targets = [], []
    for pixels, target in loader:
        features.append(net.features(pixels).float().numpy())
        targets.append(target.numpy())
    net.train(was_training)
    return np.concatenate(features), np.concatenate(targets)


def probe_head(net: nn.Module, datamodule, seed: int = 0) -> dict:
    """Set `net.head`'s linear layer to the probe fitted on frozen features; returns what was done.

    Args:
        net: an ImageClassifier (`features(pixels)` -> (B, F); `head` ending in nn.Linear).
        datamodule: an ImageDataModule (single-label; its train and val splits are read
            under the evaluation transform).
        seed: picks the sample when a split holds more than MAX_IMAGES images.
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import log_loss
    from sklearn.preprocessing import StandardScaler

    from deepapps.core.training.image_data import ImageDataset

    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    source = datamodule.source
    arrays = {}
    for split in ("train", "val"):
        indices = np.asarray(source.splits[split])
        if len(indices) > MAX_IMAGES:
            indices = np.sort(rng.choice(indices, MAX_IMAGES, replace=False))
        loader = DataLoader(ImageDataset(source, indices, datamodule.eval_transform),
                            batch_size=64, num_workers=datamodule.num_workers)
        arrays[split] = pooled_features(net, loader)
    (x_train, y_train), (x_val, y_val) = arrays["train"], arrays["val"]
    classes = np.arange(len(datamodule.labels))
    scaler = StandardScaler().fit(x_train)
    z_train = scaler.transform(x_train)
    z_check, y_check = (scaler.transform(x_val), y_val) if len(x_val) else (z_train, y_train)
    known = np.isin(y_check, np.unique(y_train))  # a class absent from training cannot be scored
    z_check, y_check = z_check[known], y_check[known]
    best = None
    for c in C_GRID:
        probe = LogisticRegression(C=c, max_iter=2000).fit(z_train, y_train)
        loss = log_loss(y_check, probe.predict_proba(z_check), labels=probe.classes_)
        if best is None or loss < best[0]:
            best = (loss, c, probe)
    loss, c, probe = best
    # logits over the probe's classes; a class absent from training keeps a very low logit
    coef = np.full((len(classes), x_train.shape[1]), 0.0)
    bias = np.full(len(classes), -10.0)
    if len(probe.classes_) == 2:  # sklearn's binary probe: one logit z; softmax([-z/2, z/2]) = sigmoid(z)
        rows = [(-0.5 * probe.coef_[0], -0.5 * probe.intercept_[0]), (0.5 * probe.coef_[0], 0.5 * probe.intercept_[0])]
    else:
        rows = list(zip(probe.coef_, probe.intercept_))
    for k, (w, b) in zip(probe.classes_, rows):
        coef[k], bias[k] = w, b
    scale = np.where(scaler.scale_ > 0, scaler.scale_, 1.0)
    weight = coef / scale  # (K, F): the standardisation folded in
    bias = bias - weight @ scaler.mean_
    linear = net.head[-1]
    linear.weight.data.copy_(torch.as_tensor(weight, dtype=linear.weight.dtype))
    linear.bias.data.copy_(torch.as_tensor(bias, dtype=linear.bias.dtype))
    accuracy = float((probe.predict(z_check) == y_check).mean()) if len(x_val) else None
    info = {"C": c, "val_log_loss": float(loss), "val_accuracy": accuracy, "train_images": int(len(x_train)),
            "val_images": int(len(x_val)), "seconds": round(time.perf_counter() - started, 1)}
    log.info("head starts at the linear probe: C %s, validation accuracy %s, log loss %.4f (%d + %d images, %.1f s)",
             c, "n/a" if accuracy is None else f"{accuracy:.4f}", loss, len(x_train), len(x_val), info["seconds"])
    return info
