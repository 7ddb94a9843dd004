"""Medical image sources (no torch): MedMNIST .npz with its label names, PNG/JPEG/DICOM folders
and manifests (patient-level splits), the generated default, and predict's input list.

Fit (through the DataModule) and evaluate (serving side) both open data through
`open_medical_source`, with the settings that travel in the model's metadata.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from PIL import Image

from deepapps.apps.healthcare.dicom import DICOM_EXTENSIONS, open_medical_image
from deepapps.apps.healthcare.signals import known_positive_label as known_signal_positive
from deepapps.apps.healthcare.synthetic import ECG_NAME, NAME as SYNTHETIC, synthetic_xray_arrays
from deepapps.core.data.image_sources import SPLITS, ImageSource, SplitSettings, array_source, open_image_source
from deepapps.core.data.tables import table_schema
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.runtime.images import IMAGE_EXTENSIONS

MEDICAL_EXTENSIONS = IMAGE_EXTENSIONS + DICOM_EXTENSIONS

# MedMNIST v2 2D subsets (medmnist/info.py): label names, task, and the class a clinical
# threshold is set for. Files may carry a size suffix: pneumoniamnist_224.npz.
MEDMNIST = {
    "pathmnist": (["adipose", "background", "debris", "lymphocytes", "mucus", "smooth muscle",
                   "normal colon mucosa", "cancer-associated stroma", "colorectal adenocarcinoma epithelium"],
                  "multi-class", None),
    "chestmnist": (["atelectasis", "cardiomegaly", "effusion", "infiltration", "mass", "nodule", "pneumonia",
                    "pneumothorax", "consolidation", "edema", "emphysema", "fibrosis", "pleural", "hernia"],
                   "multi-label, binary-class", None),
    "dermamnist": (["actinic keratoses and intraepithelial carcinoma", "basal cell carcinoma",
                    "benign keratosis-like lesions", "dermatofibroma", "melanoma", "melanocytic nevi",
                    "vascular lesions"], "multi-class", None),
    "octmnist": (["choroidal neovascularization", "diabetic macular edema", "drusen", "normal"], "multi-class", None),
    "pneumoniamnist": (["normal", "pneumonia"], "binary-class", "pneumonia"),
    "retinamnist": (["0", "1", "2", "3", "4"], "ordinal-regression", None),
    "breastmnist": (["malignant", "normal, benign"], "binary-class", "malignant"),
    "bloodmnist": (["basophil", "eosinophil", "erythroblast", "immature granulocytes", "lymphocyte", "monocyte",
                    "neutrophil", "platelet"], "multi-class", None),
    "tissuemnist": (["collecting duct, connecting tubule", "distal convoluted tubule", "glomerular endothelial cells",
                     "interstitial endothelial cells", "leukocytes", "podocytes", "proximal tubule segments",
                     "thick ascending limb"], "multi-class", None),
    **{f"organ{v}mnist": (["bladder", "femur-left", "femur-right", "heart", "kidney-left", "kidney-right", "liver",
                           "lung-left", "lung-right", "pancreas", "spleen"], "multi-class", None) for v in "acs"},
}


@dataclass(frozen=True)
class MedicalDataSettings:
    """What opening the data needs beyond the path; built from the config or the model metadata."""

    split: SplitSettings = SplitSettings()
    path_column: str = "path"
    label_column: str = "label"
    patient_column: str = "patient_id"
    window_center: float | None = None
    window_width: float | None = None

    @classmethod
    def from_dict(cls, d: dict) -> MedicalDataSettings:
        """From a data config as a dict (the `train.data_config` of the model metadata)."""
        return cls(
            SplitSettings(d.get("val_fraction", 0.15), d.get("test_fraction", 0.15), d.get("split_seed", 0)),
            d.get("path_column", "path"), d.get("label_column", "label"), d.get("patient_column", "patient_id"),
            d.get("window_center"), d.get("window_width"),
        )

    def reader(self, channels: int = 3) -> Callable[[str], Image.Image]:
        return partial(open_medical_image, channels=channels, window_center=self.window_center,
                       window_width=self.window_width)


def detect_task(path: str, path_column: str = "path", label_column: str = "label") -> tuple[str, str]:
    """(`image` or `signal`, why) for `task: auto`, from the data at `path`.

    Signals: `builtin:synthetic-ecg`, a UCR .txt, a .tsv whose first line is numbers (UCR), a
    CSV/Parquet without a `path_column` whose columns (but the label and an `id`) are numbers.
    Images: every other builtin, folder, .npz, manifest or image file (their reader says what
    is wrong with one that is not).
    """
    name = Path(path).name
    if path.startswith("builtin:"):
        if path == ECG_NAME:
            return "signal", f"{path} holds signals"
        if path == SYNTHETIC:
            return "image", f"{path} holds images"
        raise DataError(f"{path}: unknown builtin dataset (available: {SYNTHETIC}, {ECG_NAME})")
    p = Path(path)
    suffix = p.suffix.lower()
    if p.is_dir():
        return "image", f"{name} is a folder of images"
    if suffix == ".npz":
        return "image", f"{name} is a .npz of images"
    if suffix == ".txt":
        return "signal", f"{name} is a UCR signal file"
    if suffix == ".tsv" and p.is_file() and _numbers_first_line(p):
        return "signal", f"{name} is a UCR signal file (its first line is numbers)"
    if suffix in (".csv", ".tsv", ".parquet") and p.is_file():
        try:
            schema = table_schema(p)
        except DataError:
            return "image", f"{name} is read as a manifest"
        if path_column in schema.names():
            return "image", f"{name} is a manifest of images (column {path_column!r})"
        samples = [c for c in schema.names() if c not in (label_column, "id")]
        if samples and all(schema[c].is_numeric() for c in samples):
            return "signal", f"{name} holds one signal per row ({len(samples)} numeric sample columns)"
        return "image", f"{name} is read as a manifest (no {path_column!r} column, not all numbers)"
    return "image", f"{name} is read as images"


def _numbers_first_line(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as f:
            tokens = f.readline(1 << 20).replace(",", " ").split()
        return bool(tokens) and all(_is_number(t) for t in tokens)
    except (OSError, UnicodeDecodeError):
        return False


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def open_medical_source(path: str, settings: MedicalDataSettings | None = None, strict: bool = True,
                        attribute_columns: list[str] | None = None) -> ImageSource:
    """Index and split medical images; MedMNIST files get their label names. Raises DataError.

    `strict`, `attribute_columns` (manifest columns of sensitive attributes, for fairness by group;
    not `settings.patient_column`, the split grouping): see `open_image_source` (strict False for
    evaluate: one class and empty splits are fine).
    """
    settings = settings or MedicalDataSettings()
    if attribute_columns and path.startswith("builtin:"):
        raise ConfigError(f"group columns {', '.join(attribute_columns)}: sensitive attributes are read from a "
                          f".csv/.parquet manifest (path,label,...); {path} is not one")
    if path == SYNTHETIC:
        source = array_source(synthetic_xray_arrays(), f"{SYNTHETIC} (generated by apps/healthcare/synthetic.py, "
                              "seed 0: drawings of chest X-rays, not radiographs)", "synthetic-xray", path)
        source.notes.append("generated train/val/test splits (800/200/300), fixed by seed 0")
        return source
    if path.startswith("builtin:"):
        raise DataError(f"{path}: unknown builtin dataset (available: {SYNTHETIC})")
    if Path(path).suffix.lower() == ".txt":
        raise DataError(f"{path}: expected an image folder, a .csv/.parquet manifest or a .npz; a .txt is a UCR "
                        "signal file: use --task signal (or --task auto)")
    source = open_image_source(
        path, settings.split, settings.path_column, settings.label_column, group_column=settings.patient_column,
        reader=settings.reader(), extensions=MEDICAL_EXTENSIONS, strict=strict, attribute_columns=attribute_columns,
    )
    if path.lower().endswith(".npz"):
        _medmnist_labels(source, Path(path))
    return source


def medmnist_flag(path: str | Path) -> str | None:
    """`pneumoniamnist` for .../pneumoniamnist.npz or pneumoniamnist_128.npz; None if not MedMNIST."""
    stem = re.sub(r"_(28|64|128|224)$", "", Path(str(path)).stem.lower())
    return stem if stem in MEDMNIST else None


def known_positive_label(path: str) -> str | None:
    """The disease class of a known binary MedMNIST subset (e.g. `malignant` for BreastMNIST) or
    UCR ECG set (`myocardial_infarction` for ECG200)."""
    flag = medmnist_flag(path)
    return MEDMNIST[flag][2] if flag else known_signal_positive(path)


def _medmnist_labels(source: ImageSource, path: Path) -> None:
    flag = medmnist_flag(path)
    if flag is None or source.labels != [str(i) for i in range(len(source.labels))]:
        return
    names, task, _ = MEDMNIST[flag]
    if len(source.labels) > len(names):
        raise DataError(f"{path}: label {len(source.labels) - 1} is out of range for {flag} ({len(names)} classes)")
    source.labels = list(names[: len(source.labels)])
    source.notes.append(f"MedMNIST {flag} ({task}): official train/val/test splits as given in the file")


# --- predict and explain inputs ----------------------------------------------------------


@dataclass
class InputItem:
    """One thing to predict: a name for the output row and how to load it (or why it cannot be)."""

    name: str
    load: Callable[[], Image.Image] | None = None
    error: str = ""


def list_inputs(inputs: list[str], reader: Callable[[str], Image.Image]) -> list[InputItem]:
    """Files (PNG/JPEG/DICOM/...), folders (searched recursively) and `FILE.npz[:split]` (default test).

    Raises:
        DataError: a path that does not exist, a folder with no images, no inputs at all.
    """
    items: list[InputItem] = []
    for text in inputs:
        npz, _, split = text.partition(".npz:")
        if split or text.lower().endswith(".npz"):
            items += _npz_items(npz + ".npz" if split else text, split or "test")
            continue
        item = Path(text)
        if item.is_dir():
            found = sorted(p for p in item.rglob("*") if p.is_file() and (p.suffix.lower() in MEDICAL_EXTENSIONS))
            if not found:
                exts = ", ".join(e.lstrip(".") for e in MEDICAL_EXTENSIONS)
                raise DataError(f"{item}: folder has no images ({exts})")
            items += [InputItem(str(p), partial(reader, str(p))) for p in found]
        elif item.exists():
            items.append(InputItem(str(item), partial(reader, str(item))))
        else:
            raise DataError(f"{item}: no such file or folder")
    if not items:
        raise DataError("no inputs given")
    return items


def _npz_items(path: str, split: str) -> list[InputItem]:
    """Every image of one split of a MedMNIST-style .npz; a bad file becomes one error item."""
    if not Path(path).is_file():
        raise DataError(f"{path}: no such file or folder")
    if split not in SPLITS:
        return [InputItem(f"{path}:{split}", error=f"{path}:{split}: unknown split; choose one of {', '.join(SPLITS)}")]
    try:
        source = open_image_source(path)
    except DataError as exc:
        return [InputItem(f"{path}:{split}", error=str(exc))]
    return [InputItem(f"{path}:{split}[{int(i) - source.splits[split][0]}]", partial(source.load, int(i)))
            for i in source.splits[split]]

