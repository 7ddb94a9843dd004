"""Healthcare app, torch-free parts: DICOM decoding, MedMNIST sources, patient splits,
thresholds, calibration, the synthetic default."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from PIL import Image

from deepapps.apps.healthcare.clinical import check_rule, choose_threshold, fit_temperature, operating_point
from deepapps.apps.healthcare.data import MedicalDataSettings, known_positive_label, list_inputs, open_medical_source
from deepapps.apps.healthcare.dicom import is_dicom, open_medical_image, read_dicom
from deepapps.apps.healthcare.synthetic import NAME, synthetic_xray_arrays
from deepapps.core.errors import ConfigError, DataError
from deepapps.core.metrics import calibration_metrics
from tests.apps.healthcare_helpers import write_dicom, write_npz

# --- DICOM -------------------------------------------------------------------------------


def test_dicom_rescale_and_window_from_the_file(tmp_path):
    stored = np.array([[0, 1000], [2000, 4000]])
    # modality value = 2 * stored - 1000: -1000, 1000, 3000, 7000; the file's window 0..2000
    path = write_dicom(tmp_path / "a.dcm", stored, slope=2, intercept=-1000, center=1000, width=2000)
    assert read_dicom(path).tolist() == [[0, 128], [255, 255]]
    # a window from the config wins over the file's: -1000..7000 -> 0, 64, 128, 255
    assert read_dicom(path, window_center=3000, window_width=8000).tolist() == [[0, 64], [128, 255]]


def test_dicom_without_window_uses_the_full_16_bit_range(tmp_path):
    stored = np.array([[0, 16384], [49152, 65535]])
    grey = read_dicom(write_dicom(tmp_path / "b.dcm", stored))
    assert grey.dtype == np.uint8 and grey.tolist() == [[0, 64], [191, 255]]


def test_monochrome1_is_inverted(tmp_path):
    stored = np.array([[0, 100], [200, 300]])
    normal = read_dicom(write_dicom(tmp_path / "m2.dcm", stored))
    inverted = read_dicom(write_dicom(tmp_path / "m1.dcm", stored, photometric="MONOCHROME1"))
    assert (inverted == 255 - normal).all() and inverted[0, 0] == 255


def test_dicom_is_found_by_its_marker_and_opened_as_grey(tmp_path):
    path = write_dicom(tmp_path / "no_suffix", np.arange(64).reshape(8, 8) * 100)
    assert is_dicom(path)
    image = open_medical_image(path, channels=1)
    assert image.mode == "L" and image.size == (8, 8)
    assert open_medical_image(path, channels=3).mode == "RGB"


@pytest.mark.parametrize("kind, message", [
    ("no_pixels", "DICOM file has no pixel data"), ("not_dicom", "not a DICOM file"), ("missing", "no such file"),
])
def test_bad_dicom_is_one_clear_error(tmp_path, kind, message):
    path = tmp_path / "bad.dcm"
    if kind == "no_pixels":
        write_dicom(path, np.zeros((4, 4)), with_pixels=False)
    elif kind == "not_dicom":
        path.write_bytes(b"hello, not a dicom file at all" * 10)
    with pytest.raises(DataError, match=f"{path}: {message}"):
        read_dicom(path)


# --- data sources --------------------------------------------------------------------------


def test_synthetic_default_is_medmnist_shaped_and_fixed():
    a, b = synthetic_xray_arrays(), synthetic_xray_arrays()
    assert a["train_images"].shape == (800, 28, 28) and a["train_images"].dtype == np.uint8
    assert a["test_labels"].shape == (300, 1) and np.array_equal(a["test_images"], b["test_images"])
    source = open_medical_source(NAME)
    assert source.labels == ["normal", "pneumonia"]
    assert {s: len(i) for s, i in source.splits.items()} == {"train": 800, "val": 200, "test": 300}
    assert 0.6 < source.targets[source.splits["train"]].mean() < 0.85  # imbalanced like PneumoniaMNIST


def test_medmnist_files_get_their_label_names_and_disease_class(tmp_path):
    source = open_medical_source(str(write_npz(tmp_path / "breastmnist_64.npz")))
    assert source.labels == ["malignant", "normal, benign"]
    assert [len(source.splits[s]) for s in ("train", "val", "test")] == [160, 48, 48]
    assert known_positive_label("x/breastmnist.npz") == "malignant"
    assert known_positive_label("pneumoniamnist.npz") == "pneumonia" and known_positive_label("mine.npz") is None
    assert open_medical_source(str(write_npz(tmp_path / "mine.npz"))).labels == ["0", "1"]


@pytest.mark.parametrize("change, message", [
    (dict(drop=("train_labels",)), "needs train_images and train_labels"),
    (dict(drop=("test_labels",)), "has test_images but no test_labels"),
    (dict(val_labels=np.zeros((5, 1), np.uint8)), "val_images has 48 items but val_labels has 5"),
    (dict(test_images=np.zeros((48, 32, 32), np.uint8)), "images of different sizes"),
    (dict(train_labels=np.full((160, 1), -1)), "non-negative integers"),
    (dict(train_images=np.zeros((160, 28), np.uint8)), "expected (N, H, W)"),
])
def test_bad_npz_is_one_clear_error(tmp_path, change, message):
    path = write_npz(tmp_path / "d.npz", **change)
    with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")):
        open_medical_source(str(path))


def test_label_out_of_range(tmp_path):
    labels = (np.arange(160) % 3).reshape(160, 1).astype(np.uint8)  # BreastMNIST has 2 classes
    with pytest.raises(DataError, match="label 2 is out of range for breastmnist"):
        open_medical_source(str(write_npz(tmp_path / "breastmnist.npz", train_labels=labels)))
    names = np.asarray(["a", "b"])
    with pytest.raises(DataError, match="out of range for 2 label_names"):
        open_medical_source(str(write_npz(tmp_path / "d.npz", train_labels=labels, label_names=names)))


def _manifest(tmp_path, patients: list[str], split: list[str] | None = None):
    rng = np.random.default_rng(0)
    rows = []
    for i, patient in enumerate(patients):
        label = "sick" if i % 2 else "well"
        name = f"img{i:03d}.png" if i % 3 else f"img{i:03d}.dcm"
        pixels = rng.integers(0, 255, (20 + i % 5, 24))
        if name.endswith(".dcm"):
            write_dicom(tmp_path / name, pixels, bits=8, patient=patient)
        else:
            Image.fromarray(pixels.astype(np.uint8)).save(tmp_path / name)
        rows.append({"path": name, "label": label, "patient_id": patient})
    table = pl.DataFrame(rows)
    if split:
        table = table.with_columns(pl.Series("split", split))
    table.write_csv(tmp_path / "manifest.csv")
    return tmp_path / "manifest.csv"


def test_manifest_with_patient_ids_is_split_by_patient(tmp_path):
    patients = [f"p{i // 3}" for i in range(60)]  # 20 patients, 3 images each, PNG and DICOM
    source = open_medical_source(str(_manifest(tmp_path, patients)))
    owners = {s: set(source.groups[i]) for s, i in source.splits.items()}
    assert not owners["train"] & owners["val"] and not owners["train"] & owners["test"] and not owners["val"] & owners["test"]
    assert sum(len(i) for i in source.splits.values()) == 60 and all(len(i) for i in source.splits.values())
    assert any("split by patient" in note for note in source.notes)
    assert source.load(0).size == (24, 20)  # a DICOM row decodes like the PNGs


def test_given_splits_sharing_a_patient_are_refused(tmp_path):
    patients = [f"p{i // 2}" for i in range(12)]
    split = ["train"] * 7 + ["val"] * 2 + ["test"] * 3  # p3 has rows 6 (train) and 7 (val)
    with pytest.raises(DataError, match="patient 'p3' is in both the train and val splits"):
        open_medical_source(str(_manifest(tmp_path, patients, split)))


def test_predict_inputs_files_folders_and_npz_splits(tmp_path):
    write_npz(tmp_path / "d.npz")
    write_dicom(tmp_path / "x.dcm", np.zeros((8, 8)))
    (tmp_path / "folder").mkdir()
    Image.new("L", (30, 20)).save(tmp_path / "folder" / "a.png")
    items = list_inputs([str(tmp_path / "x.dcm"), str(tmp_path / "folder"), str(tmp_path / "d.npz:val"),
                         str(tmp_path / "d.npz:nope")], MedicalDataSettings().reader(1))
    names = [i.name for i in items]
    assert names[:3] == [str(tmp_path / "x.dcm"), str(tmp_path / "folder" / "a.png"), f"{tmp_path / 'd.npz'}:val[0]"]
    assert len(names) == 2 + 48 + 1 and "unknown split" in items[-1].error
    assert items[2].load().size == (28, 28)
    with pytest.raises(DataError, match="no such file or folder"):
        list_inputs([str(tmp_path / "missing.png")], MedicalDataSettings().reader(1))


# --- thresholds and calibration -----------------------------------------------------------------


def test_threshold_rules():
    positive = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1], bool)
    scores = np.array([0.1, 0.2, 0.3, 0.7, 0.4, 0.6, 0.8, 0.85, 0.9, 0.95])
    youden = choose_threshold(positive, scores, "youden")
    assert youden == 0.4  # sensitivity 1, specificity 3/4: the best J
    high = choose_threshold(positive, scores, "sensitivity>=0.8")
    assert operating_point(positive, scores, high)["sensitivity"] == pytest.approx(5 / 6) and high == 0.6
    strict = choose_threshold(positive, scores, "specificity>=1.0")
    assert operating_point(positive, scores, strict)["specificity"] == 1.0 and strict == 0.8
    assert choose_threshold(positive, scores, "0.5") == 0.5
    point = operating_point(positive, scores, 0.6)
    assert (point["tp"], point["fn"], point["tn"], point["fp"]) == (5, 1, 3, 1)
    assert point["ppv"] == pytest.approx(5 / 6) and point["npv"] == pytest.approx(3 / 4)
    for bad in ("best", "sensitivity>=2", "1.5", "sensitivity>0.9"):
        with pytest.raises(ConfigError, match="clinical.threshold"):
            check_rule(bad)


def test_temperature_scaling_recovers_the_true_temperature():
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 3))
    probs = np.exp(true_logits) / np.exp(true_logits).sum(1, keepdims=True)
    targets = np.array([rng.choice(3, p=p) for p in probs])
    overconfident = true_logits * 2.5  # a model whose logits are 2.5x too large
    assert fit_temperature(overconfident, targets) == pytest.approx(2.5, rel=0.1)


def test_expected_calibration_error(tmp_path):
    probs = np.array([[0.9, 0.1]] * 10 + [[0.3, 0.7]] * 10)
    targets = np.array([0] * 9 + [1] + [1] * 5 + [0] * 5)  # 90% right at 0.9, 50% right at 0.7
    out = calibration_metrics("binary", targets, probs, bins=10)
    assert out["ece"] == pytest.approx(0.5 * 0.0 + 0.5 * 0.2)
    assert sum(b["count"] for b in out["bins"]) == 20 and len(out["bins"]) == 10
    from deepapps.core.report.plots import reliability_plot

    png = reliability_plot(out["bins"], out["ece"], tmp_path / "r.png")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_config_and_help_import_no_torch():
    code = ("import sys\nfrom deepapps.core.cli import main\nmain(['healthcare', '--help'])\n"
            "import deepapps.apps.healthcare.config, deepapps.apps.healthcare.runtime, deepapps.apps.healthcare.dicom\n"
            "print('TORCH', 'torch' in sys.modules)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "explain" in result.stdout and "TORCH False" in result.stdout
