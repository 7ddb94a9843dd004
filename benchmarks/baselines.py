"""Linear probe on frozen pretrained image features: the strong simple baseline for image fits.

    python benchmarks/baselines.py --data.path ../shared/data/hymenoptera [--backbone tf_efficientnet_lite0]
        [--pretrained auto|PATH] [--image-size 224] [--val-fraction 0.15 --test-fraction 0.15 --split-seed 0]

The split is the one `deepapps vision fit` makes with the same split settings (its defaults
here), so the numbers sit beside the fit's test metrics. Features: the backbone's pooled output
(timm, `num_classes=0`) of each image under timm's evaluation transform (resize the shorter side
to size / crop_pct, centre crop, the backbone's mean and std), no augmentation. The probe:
scikit-learn's LogisticRegression (L2, lbfgs) on standardised train features, C chosen on the
validation split by accuracy over 1e-3..1e2, scored on the test split. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import accuracy_score, f1_score, roc_auc_score
from sklearn.preprocessing import StandardScaler

from deepapps.core.data.image_sources import SplitSettings, open_image_source
from deepapps.core.runtime.images import ImageSpec, to_model_input
from deepapps.core.training.backbones import create_timm_model, data_config

C_GRID = (1e-3, 1e-2, 3e-2, 0.1, 0.3, 1.0, 3.0, 10.0, 100.0)


@torch.no_grad()
def features(model: torch.nn.Module, source, indices: np.ndarray, spec: ImageSpec, mean, std,
             batch: int = 32) -> np.ndarray:
    """Pooled backbone features (N, D) of the images `indices` of `source`."""
    mean_t, std_t = torch.tensor(mean).view(1, 3, 1, 1), torch.tensor(std).view(1, 3, 1, 1)
    out = []
    for start in range(0, len(indices), batch):
        pixels = np.stack([to_model_input(source.load(int(i)), spec) for i in indices[start:start + batch]])
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 255
        out.append(model((x - mean_t) / std_t).numpy())
    return np.concatenate(out)


def scores(y: np.ndarray, probs: np.ndarray) -> dict:
    """accuracy, macro-F1 and AUROC (one-vs-rest macro for more than two classes)."""
    pred = probs.argmax(1)
    auroc = roc_auc_score(y, probs[:, 1]) if probs.shape[1] == 2 else roc_auc_score(y, probs, multi_class="ovr")
    return {"accuracy": float(accuracy_score(y, pred)), "macro_f1": float(f1_score(y, pred, average="macro")),
            "auroc": float(auroc), "n": len(y)}


def linear_probe(path: str, backbone: str, pretrained: str, image_size: int | None, split: SplitSettings) -> dict:
    started = time.perf_counter()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model, weights = create_timm_model(backbone, 0, pretrained)
    model.eval()
    timm_cfg = data_config(model)
    spec = ImageSpec(image_size or timm_cfg["input_size"][-1], timm_cfg.get("crop_pct", 0.875),
                     timm_cfg.get("interpolation", "bicubic") or "bicubic")
    source = open_image_source(path, split)
    if source.multilabel:
        raise SystemExit(f"{path}: multi-label data; the probe is for single-label sets")
    feats = {s: features(model, source, source.splits[s], spec, timm_cfg["mean"], timm_cfg["std"])
             for s in ("train", "val", "test")}
    targets = {s: source.targets[source.splits[s]] for s in feats}
    scaler = StandardScaler().fit(feats["train"])
    x = {s: scaler.transform(f) for s, f in feats.items()}
    by_c = {}
    for c in C_GRID:
        probe = LogisticRegression(C=c, max_iter=5000).fit(x["train"], targets["train"])
        by_c[c] = accuracy_score(targets["val"], probe.predict(x["val"]))
    best_c = max(C_GRID, key=lambda c: (by_c[c], -c))  # ties: the stronger regularisation
    probe = LogisticRegression(C=best_c, max_iter=5000).fit(x["train"], targets["train"])
    return {
        "baseline": "linear probe (logistic regression on frozen pooled features)",
        "data": path, "backbone": backbone, "weights": weights, "image_size": spec.size,
        "split": {"val_fraction": split.val_fraction, "test_fraction": split.test_fraction, "seed": split.seed},
        "sizes": {s: len(t) for s, t in targets.items()}, "C": best_c,
        "val_accuracy_by_C": {str(c): round(float(a), 4) for c, a in by_c.items()},
        "val": scores(targets["val"], probe.predict_proba(x["val"])),
        "test": scores(targets["test"], probe.predict_proba(x["test"])),
        "seconds": round(time.perf_counter() - started, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data.path", dest="path", required=True)
    parser.add_argument("--backbone", default="tf_efficientnet_lite0")
    parser.add_argument("--pretrained", default="auto")
    parser.add_argument("--image-size", type=int, default=None, help="default: the backbone's pretrained size")
    parser.add_argument("--val-fraction", type=float, default=0.15)
    parser.add_argument("--test-fraction", type=float, default=0.15)
    parser.add_argument("--split-seed", type=int, default=0)
    args = parser.parse_args()
    split = SplitSettings(args.val_fraction, args.test_fraction, args.split_seed)
    print(json.dumps(linear_probe(args.path, args.backbone, args.pretrained, args.image_size, split), indent=2))


if __name__ == "__main__":
    main()
