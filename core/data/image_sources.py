"""Index an image dataset and split it reproducibly, without torch.

Fit (through the DataModule) and `evaluate` (serving side) both call `open_image_source`
with the same split settings, so `evaluate --split test` scores exactly the test set
that fit held out.

Supported layouts:
    folder/<class>/*.jpg                 one folder per class, split by fractions
    folder/{train,val,test}/<class>/...  given splits (a missing one is carved from train)
    manifest.csv|.parquet                columns path,label[,split][,group][,attributes...]; `a|b` =
                                         multi-label; with a group column (e.g. patient_id) splits
                                         are by group; sensitive-attribute columns (e.g. sex; fit's
                                         `data.group_columns`) are read for fairness by group only
    file.npz                             MedMNIST style: {train,val,test}_{images,labels}
    builtin:digits                       scikit-learn's 1,797 8x8 handwritten digits
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import polars as pl
from PIL import Image

from deepapps.core.data.splits import carve, check_splits, stratified_split
from deepapps.core.data.tables import read_table
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.runtime.images import IMAGE_EXTENSIONS, open_image

SPLITS = ("train", "val", "test")
MANIFEST_SUFFIXES = (".csv", ".tsv", ".parquet")
_SPLIT_ALIASES = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass(frozen=True)
class SplitSettings:
    """How a dataset without given splits is split; stored in the model's metadata."""

    val_fraction: float = 0.15
    test_fraction: float = 0.15
    seed: int = 0


@dataclass
class ImageSource:
    """An indexed image dataset: references, targets, label names and split indices."""

    description: str
    labels: list[str]
    refs: list[str]
    targets: np.ndarray  # (N,) class ids, or (N, L) multi-hot for multi-label
    splits: dict[str, np.ndarray]
    load: Callable[[int], Image.Image]
    notes: list[str] = field(default_factory=list)
    groups: np.ndarray | None = None  # (N,) group ids (e.g. patients): no group in two splits
    #: sensitive attribute -> (N,) values (manifest columns, e.g. `sex`): fairness by group only, never
    #: a model input, unrelated to `groups` (the split grouping)
    attributes: dict[str, list] = field(default_factory=dict)

    @property
    def multilabel(self) -> bool:
        return self.targets.ndim == 2

    def class_counts(self, split: str) -> dict[str, int]:
        t = self.targets[self.splits[split]]
        counts = t.sum(0) if self.multilabel else np.bincount(t, minlength=len(self.labels))
        return {name: int(c) for name, c in zip(self.labels, counts)}

    def summary(self) -> dict:
        return {
            "source": self.description,
            "labels": self.labels,
            "sizes": {s: int(len(i)) for s, i in self.splits.items()},
            "class_counts": {s: self.class_counts(s) for s in self.splits},
            "notes": self.notes,
        }


def open_image_source(
    path: str, split: SplitSettings | None = None, path_column: str = "path",
    label_column: str = "label", group_column: str | None = None,
    reader: Callable[[str], Image.Image] | None = None, extensions: tuple[str, ...] = IMAGE_EXTENSIONS,
    strict: bool = True, attribute_columns: list[str] | None = None,
) -> ImageSource:
    """Index the dataset at `path` and split it. Raises DataError for unusable data.

    Args:
        path: folder, manifest, .npz or `builtin:<name>`.
        split: how data without given splits is split.
        path_column, label_column: manifest columns.
        group_column: manifest column of group ids (e.g. `patient_id`); when present, splits
            are made by group and given splits are checked to share no group.
        reader: file -> PIL image for folders and manifests (default: `open_image`); lets
            an app read other formats, e.g. DICOM.
        extensions: file suffixes a folder is searched for.
        strict: fit's checks: two classes or more, and no empty train, val or test split.
            False (evaluate): labelled data of one class, or too small to carve every split,
            can still be scored (`evaluate --split all`).
        attribute_columns: manifest columns of sensitive attributes (e.g. `sex`) read into
            `ImageSource.attributes` for fairness by group (not the split `group_column`).

    Raises:
        ConfigError: attribute columns asked of data that is not a manifest.
    """
    split = split or SplitSettings()
    p = Path(path)
    if attribute_columns and (path.startswith("builtin:") or p.suffix.lower() not in MANIFEST_SUFFIXES or p.is_dir()):
        raise ConfigError(f"group columns {', '.join(attribute_columns)}: sensitive attributes are read from a "
                          f".csv/.parquet manifest (path,label,...); {path} is not one")
    reader = reader or open_image
    if path.startswith("builtin:"):
        source = _builtin(path)
    else:
        p = Path(path)
        if not p.exists():
            raise DataError(f"{path}: no such file or folder")
        if p.is_dir():
            source = _folder(p, reader, extensions)
        elif p.suffix.lower() == ".npz":
            source = _npz(p)
        elif p.suffix.lower() in MANIFEST_SUFFIXES:
            source = _manifest(p, path_column, label_column, group_column, reader, attribute_columns or [])
        else:
            raise DataError(f"{path}: expected an image folder, a .csv/.parquet manifest or a .npz")
    _check_labels(source, path, strict)
    _complete_splits(source, split)
    if source.groups is not None:
        _check_groups(source, path)
    if strict:
        check_splits(source.splits, path)
    return source


def _check_labels(source: ImageSource, path: str, strict: bool = True) -> None:
    if len(source.refs) == 0:
        raise DataError(f"{path}: no images found")
    if not strict:
        return
    present = source.targets.any(0).sum() if source.multilabel else len(np.unique(source.targets))
    if present < 2:
        only = source.labels[0] if source.labels else "?"
        raise DataError(f"{path}: only one class ({only!r}); a classifier needs at least two")


def _folder(root: Path, reader: Callable[[str], Image.Image] = open_image,
            extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> ImageSource:
    subdirs = sorted(d for d in root.iterdir() if d.is_dir())
    split_dirs = {_SPLIT_ALIASES[d.name.lower()]: d for d in subdirs if d.name.lower() in _SPLIT_ALIASES}
    if split_dirs and "train" not in split_dirs:
        raise DataError(f"{root}: has {sorted(split_dirs)} folders but no train folder")
    layout = split_dirs or {"all": root}
    per_split = {name: _class_files(d, extensions) for name, d in layout.items()}
    labels = sorted({c for files in per_split.values() for c in files})
    if not labels:
        raise DataError(f"{root}: no class subfolders with images")
    refs, targets, splits = [], [], {}
    for name, files in per_split.items():
        start = len(refs)
        for label, paths in files.items():
            refs += [str(p) for p in paths]
            targets += [labels.index(label)] * len(paths)
        splits[name] = np.arange(start, len(refs))
    if "all" in splits:
        splits = {}
    return ImageSource(
        description=f"image folder {root}", labels=labels, refs=refs,
        targets=np.asarray(targets, dtype=np.int64), splits=splits,
        load=lambda i: reader(refs[i]),
    )


def _class_files(folder: Path, extensions: tuple[str, ...] = IMAGE_EXTENSIONS) -> dict[str, list[Path]]:
    files = {}
    for class_dir in sorted(d for d in folder.iterdir() if d.is_dir()):
        images = sorted(p for p in class_dir.rglob("*") if p.suffix.lower() in extensions)
        if images:
            files[class_dir.name] = images
    return files


def _manifest(path: Path, path_column: str, label_column: str, group_column: str | None = None,
              reader: Callable[[str], Image.Image] = open_image, attribute_columns: list[str] = ()) -> ImageSource:
    notes: list[str] = []
    table = read_table(path, all_strings=True, notes=notes)
    for column in (path_column, label_column):
        if column not in table.columns:
            raise DataError(f"{path}: manifest has no {column!r} column (has {table.columns})")
    missing = [c for c in attribute_columns if c not in table.columns]
    if missing:
        raise DataError(f"{path}: group column(s) not found: {', '.join(missing)} (columns: {', '.join(table.columns)})")
    table = table.filter(pl.col(path_column).is_not_null() & pl.col(label_column).is_not_null())
    raw_labels = [str(v) for v in table[label_column].to_list()]
    refs = [str((path.parent / p).resolve()) for p in table[path_column].cast(pl.String).to_list()]
    if any("|" in v for v in raw_labels):
        per_row = [[s.strip() for s in v.split("|") if s.strip()] for v in raw_labels]
        labels = sorted({s for row in per_row for s in row})
        targets = np.zeros((len(refs), len(labels)), dtype=np.int64)
        for i, row in enumerate(per_row):
            targets[i, [labels.index(s) for s in row]] = 1
    else:
        labels = sorted(set(raw_labels), key=_natural)
        targets = np.asarray([labels.index(v) for v in raw_labels], dtype=np.int64)
    splits = {}
    if "split" in table.columns:
        column = [_SPLIT_ALIASES.get(str(s).lower(), str(s)) for s in table["split"].to_list()]
        splits = {name: np.flatnonzero(np.asarray(column) == name) for name in SPLITS}
        splits = {k: v for k, v in splits.items() if len(v)}
    groups = None
    if group_column and group_column in table.columns:
        column = table[group_column].cast(pl.String)
        if column.null_count():
            raise DataError(f"{path}: {column.null_count()} rows have no {group_column!r}")
        groups = np.asarray(column.to_list(), dtype=object)
    return ImageSource(
        description=f"manifest {path}", labels=labels, refs=refs, targets=targets,
        splits=splits, load=lambda i: reader(refs[i]), groups=groups, notes=notes,
        attributes={c: table[c].to_list() for c in attribute_columns},
    )


def _npz(path: Path) -> ImageSource:
    try:
        arrays = np.load(path)  # allow_pickle=False: an object array is refused, never unpickled
    except Exception as exc:  # noqa: BLE001 - numpy raises several types for files it cannot read
        raise DataError(f"{path}: cannot read .npz ({type(exc).__name__}: {str(exc)[:120]})") from None
    if not isinstance(arrays, np.lib.npyio.NpzFile):
        raise DataError(f"{path}: not a .npz archive of named arrays")
    try:
        return array_source(arrays, f"npz {path}", path.name, str(path))
    except ValueError as exc:  # e.g. "Object arrays cannot be loaded when allow_pickle=False"
        raise DataError(f"{path}: unusable array in the .npz ({str(exc).splitlines()[0][:120]})") from None


def array_source(arrays, description: str, ref_name: str, path: str) -> ImageSource:
    """An ImageSource over MedMNIST-style arrays: {train,val,test}_{images,labels}[, label_names].

    Args:
        arrays: a mapping of array name -> array (an open .npz, or a dict).
        description: the source line of the model card and metadata.
        ref_name: items are named `ref_name[i]`.
        path: names the data in error messages.
    """
    keys = set(arrays.keys())
    present = [s for s in SPLITS if f"{s}_images" in keys and f"{s}_labels" in keys]
    if "train" not in present:
        raise DataError(f"{path}: .npz needs train_images and train_labels arrays (has {sorted(keys)})")
    for images_key, labels_key in ((f"{s}_images", f"{s}_labels") for s in SPLITS):
        if (images_key in keys) != (labels_key in keys):
            have, lack = (images_key, labels_key) if images_key in keys else (labels_key, images_key)
            raise DataError(f"{path}: has {have} but no {lack}")
    parts = {s: (arrays[f"{s}_images"], arrays[f"{s}_labels"]) for s in present}
    for s, (imgs, lbls) in parts.items():
        if len(imgs) != len(lbls):
            raise DataError(f"{path}: {s}_images has {len(imgs)} items but {s}_labels has {len(lbls)}")
        if imgs.ndim not in (3, 4) or (imgs.ndim == 4 and imgs.shape[-1] not in (1, 3)):
            raise DataError(f"{path}: {s}_images has shape {imgs.shape}; expected (N, H, W) or (N, H, W, 1|3)")
        if not np.issubdtype(lbls.dtype, np.integer) or (lbls.size and lbls.min() < 0):
            raise DataError(f"{path}: {s}_labels must be non-negative integers")
    shapes = {s: imgs.shape[1:] for s, (imgs, _) in parts.items()}
    if len(set(shapes.values())) > 1:
        raise DataError(f"{path}: images of different sizes across splits ({shapes})")
    images = np.concatenate([imgs for imgs, _ in parts.values()])
    raw = np.concatenate([lbls.reshape(len(lbls), -1) for _, lbls in parts.values()])
    sizes = np.cumsum([0] + [len(imgs) for imgs, _ in parts.values()])
    splits = {s: np.arange(sizes[i], sizes[i + 1]) for i, s in enumerate(present)}
    if raw.shape[1] > 1:  # multi-label (e.g. ChestMNIST)
        labels = [str(i) for i in range(raw.shape[1])]
        targets = raw.astype(np.int64)
    else:
        labels = [str(i) for i in range(int(raw.max()) + 1)]
        targets = raw[:, 0].astype(np.int64)
    if "label_names" in keys:
        names = [str(s) for s in arrays["label_names"]]
        if len(names) < len(labels):
            raise DataError(f"{path}: label {len(labels) - 1} is out of range for {len(names)} label_names")
        labels = names
    return ImageSource(
        description=description, labels=labels, refs=[f"{ref_name}[{i}]" for i in range(len(images))],
        targets=targets, splits=splits, load=lambda i: _array_image(images[i]),
    )


def _builtin(name: str) -> ImageSource:
    if name != "builtin:digits":
        raise DataError(f"{name}: unknown builtin dataset (available: builtin:digits)")
    from sklearn.datasets import load_digits

    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)  # (1797, 8, 8)
    return ImageSource(
        description="builtin:digits (scikit-learn's bundled UCI handwritten digits, 8x8 grey)",
        labels=[str(i) for i in range(10)], refs=[f"digits[{i}]" for i in range(len(images))],
        targets=digits.target.astype(np.int64), splits={}, load=lambda i: _array_image(images[i]),
    )


def _array_image(array: np.ndarray) -> Image.Image:
    if array.ndim == 3 and array.shape[-1] == 1:
        array = array[..., 0]
    return Image.fromarray(array).convert("RGB")


def _complete_splits(source: ImageSource, settings: SplitSettings) -> None:
    """Fill in missing splits by a stratified, seeded split of the training data."""
    s = source.splits
    rng = np.random.default_rng(settings.seed)
    if source.groups is not None:
        _complete_group_splits(source, settings, rng)
        return
    if not s:
        s.update(stratified_split(source.targets, settings.val_fraction, settings.test_fraction, settings.seed))
        source.notes.append(
            f"no given splits: stratified {1 - settings.val_fraction - settings.test_fraction:.0%}"
            f"/{settings.val_fraction:.0%}/{settings.test_fraction:.0%} train/val/test, seed {settings.seed}"
        )
    elif "val" not in s or "test" not in s:
        if "test" not in s:
            s["test"] = s.pop("val")
            source.notes.append("the given val split is used as the untouched test split")
        s["train"], s["val"] = carve(s["train"], source.targets, settings.val_fraction, rng)
        source.notes.append(
            f"validation: stratified {settings.val_fraction:.0%} of train, seed {settings.seed}"
        )


def _complete_group_splits(source: ImageSource, settings: SplitSettings, rng: np.random.Generator) -> None:
    """Like _complete_splits, but by group: each patient's images all go to one split."""
    s, groups = source.splits, source.groups
    if not s:
        s["train"] = np.arange(len(source.refs))
        held_out = [("test", settings.test_fraction), ("val", settings.val_fraction)]
    elif "val" not in s or "test" not in s:
        if "test" not in s:
            s["test"] = s.pop("val")
            source.notes.append("the given val split is used as the untouched test split")
        held_out = [("val", settings.val_fraction)]
    else:
        return
    total = len(s["train"])
    for name, fraction in held_out:
        pool = s["train"]
        ids, counts = np.unique(groups[pool], return_counts=True)
        order = rng.permutation(len(ids))[:-1]  # at least one patient stays in train
        taken = order[: int(np.searchsorted(np.cumsum(counts[order]), round(fraction * total))) + 1]
        held = np.isin(groups[pool], ids[taken])
        s[name], s["train"] = pool[held], pool[~held]
    n_groups = {k: len(np.unique(groups[v])) for k, v in s.items()}
    source.notes.append(
        f"split by patient (no patient in two splits), seed {settings.seed}: "
        + ", ".join(f"{k} {n_groups[k]} patients / {len(s[k])} images" for k in SPLITS if k in s)
    )


def _check_groups(source: ImageSource, path: str) -> None:
    """No group (patient) may be in two splits."""
    seen: dict[str, str] = {}
    for name in SPLITS:
        for g in np.unique(source.groups[source.splits[name]]):
            if g in seen and seen[g] != name:
                raise DataError(f"{path}: patient {g!r} is in both the {seen[g]} and {name} splits")
            seen[g] = name


def _natural(value: str) -> tuple:
    return (0, int(value), "") if value.lstrip("-").isdigit() else (1, 0, value)
