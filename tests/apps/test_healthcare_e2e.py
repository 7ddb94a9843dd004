"""Healthcare app end to end through the CLI on generated data: fit -> calibrated, thresholded
ONNX -> evaluate / predict (PNG, DICOM, folders, .npz) / explain / export, and its bad inputs."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from PIL import Image

from deepapps.core.cli import main
from deepapps.core.contract import read_metadata
from tests.apps.healthcare_helpers import run_cli, write_dicom, write_npz
from tests.helpers import assert_one_line_error

TINY = Path(__file__).resolve().parents[2] / "apps" / "healthcare" / "configs" / "tiny.yaml"


@pytest.fixture(scope="module")
def npz(tmp_path_factory) -> Path:
    return write_npz(tmp_path_factory.mktemp("medmnist") / "pneumoniamnist.npz")


@pytest.fixture(scope="module")
def run(tmp_path_factory, npz) -> Path:
    """One tiny fit with flip TTA and a sensitivity-floor threshold, shared by the tests below."""
    run_dir = tmp_path_factory.mktemp("hc") / "run"
    code = main(["healthcare", "fit", "--config", str(TINY), "--data.path", str(npz), "--run_dir", str(run_dir),
                 "--trainer.max_epochs", "3", "--trainer.patience", "3", "--clinical.tta_flip",
                 "--clinical.threshold", "sensitivity>=0.9"])
    assert code == 0
    return run_dir


def test_fit_writes_a_calibrated_thresholded_model_and_a_clinical_card(run):
    for name in ("model.onnx", "model_card.md", "metrics.json", "plots/roc.png", "plots/confusion_matrix.png",
                 "plots/reliability.png", "plots/confusion_matrix_at_threshold.png", "checkpoints/best.ckpt"):
        assert (run / name).is_file(), name
    meta = read_metadata(run / "model.onnx")
    assert meta["app"] == "healthcare" and meta["labels"] == ["normal", "pneumonia"]
    assert meta["inputs"][0]["shape"] == ["batch", 32, 32, 1]  # grey in: channels repeated inside the graph
    assert 0 < meta["temperature"] and 0 < meta["threshold"] < 1
    clinical = meta["clinical"]
    assert clinical["threshold"]["rule"] == "sensitivity>=0.9" and clinical["threshold"]["positive_label"] == "pneumonia"
    assert clinical["threshold"]["val"]["sensitivity"] >= 0.9 and clinical["tta_flip"]
    assert clinical["calibration"]["val_nll_after"] <= clinical["calibration"]["val_nll_before"] + 1e-9
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert {"accuracy", "auroc", "sensitivity", "specificity", "ece", "brier", "at_threshold"} <= set(test)
    assert set(test["per_class"]["normal"]) >= {"auroc", "recall", "specificity"}
    card = (run / "model_card.md").read_text()
    for needle in ("Research use only", "not a medical device", "## Operating threshold", "## Calibration",
                   "## Per-class metrics", "sensitivity>=0.9", "MedMNIST pneumoniamnist", "## Data"):
        assert needle in card, needle


def test_temperature_and_tta_are_inside_the_graph(run, npz):
    import torch

    from deepapps.core.registry import get_app
    from deepapps.core.runtime.session import load_model
    from deepapps.core.training.checkpoints import app_config, load_checkpoint, read_checkpoint

    app = get_app("healthcare")
    ckpt = run / "checkpoints" / "best.ckpt"
    task, _ = load_checkpoint(app, ckpt, app_config(app, read_checkpoint(ckpt)), with_data=False)
    model = load_model(run / "model.onnx", "cpu", app="healthcare")
    pixels = np.load(npz)["test_images"][:6, 2:30, 2:30]  # any grey images: resize is not the point here
    pixels = np.stack([np.asarray(Image.fromarray(p).resize((32, 32))) for p in pixels])[..., None]
    with torch.no_grad():
        x = torch.from_numpy(pixels)
        logits = (task(x) + task(x.flip(2))) / 2
        expected = torch.softmax(logits / model.meta["temperature"], -1).numpy()
    assert np.abs(model.run({"pixels": pixels}) - expected).max() < 1e-4


def test_evaluate_matches_fit_and_reports_the_operating_point(run, npz, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["healthcare", "evaluate", "--model", str(run / "model.onnx"), "--data.path", str(npz),
                 "--out", str(out)]) == 0
    evaluated = json.loads(out.read_text())
    saved = json.loads((run / "metrics.json").read_text())["test"]
    for key in ("accuracy", "auroc", "sensitivity", "specificity", "ece"):
        assert evaluated[key] == pytest.approx(saved[key]), key
    assert evaluated["n"] == 48


def test_predict_png_dicom_folders_and_npz_at_the_stored_threshold(run, npz, tmp_path, capsys):
    folder = tmp_path / "inputs"
    (folder / "nested").mkdir(parents=True)
    images = np.load(npz)["test_images"]
    Image.fromarray(images[0]).save(folder / "small.png")
    Image.fromarray(images[1]).resize((64, 50)).convert("RGB").save(folder / "nested" / "big.jpg")  # other size
    write_dicom(folder / "scan.dcm", images[2].astype(np.uint16) * 16, bits=16, center=2040, width=4080)
    write_dicom(folder / "empty.dcm", images[2], with_pixels=False)
    (folder / "broken.png").write_bytes(b"\x89PNG not really")
    out = tmp_path / "pred.csv"
    assert main(["healthcare", "predict", "--model", str(run / "model.onnx"), "--out", str(out),
                 str(folder), f"{npz}:test"]) == 0
    table = pl.read_csv(out)
    assert table.columns == ["path", "label", "p_normal", "p_pneumonia", "error"]
    assert len(table) == 5 + 48
    rows = {Path(r["path"]).name: r for r in table.to_dicts()}
    assert "no pixel data" in rows["empty.dcm"]["error"] and "not an image" in rows["broken.png"]["error"]
    threshold = read_metadata(run / "model.onnx")["threshold"]
    for row in table.filter(pl.col("error").is_null()).to_dicts():
        assert row["p_normal"] + row["p_pneumonia"] == pytest.approx(1, abs=1e-5)
        assert row["label"] == ("pneumonia" if row["p_pneumonia"] >= threshold else "normal")
    assert f"{npz}:test[47]" in table["path"].to_list()
    assert "2 of 53 inputs failed" in capsys.readouterr().err
    # --threshold overrides the stored one
    assert main(["healthcare", "predict", "--model", str(run / "model.onnx"), "--threshold", "0", str(folder / "small.png")]) == 0
    assert ",pneumonia," in capsys.readouterr().out


def test_predict_never_imports_torch(run, npz):
    code = (
        "import sys\nfrom deepapps.core.cli import main\n"
        f"rc = main(['healthcare', 'predict', '--model', {str(run / 'model.onnx')!r}, {str(npz) + ':val'!r}])\n"
        "heavy = sorted(m for m in ('torch', 'pytorch_lightning', 'timm', 'sklearn') if m in sys.modules)\n"
        "print('HEAVY', heavy, rc, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY [] 0" in result.stderr and result.stdout.count("\n") == 49


def test_explain_writes_grad_cam_overlays(run, npz, tmp_path):
    png = tmp_path / "x.png"
    Image.fromarray(np.load(npz)["test_images"][3]).save(png)
    bad = tmp_path / "bad.png"
    bad.write_text("nope")
    out = tmp_path / "cams"
    result = run_cli("explain", "--model", str(run / "model.onnx"), "--out", str(out),
                     "--layer", "layer3", str(png), str(bad), f"{npz}:val")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "input,predicted,target,delta,agrees_with_onnx,files,error" and len(lines) == 1 + 2 + 48
    pngs = sorted(out.glob("*.png"))
    assert len(pngs) == 49 and pngs[0].name == "0000_x_gradcam.png"
    assert Image.open(pngs[0]).size == (256, 256) and np.load(out / "0000_x_gradcam.npy").shape == (32, 32)
    assert "not an image" in lines[2]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "gradcam" and "layer3" in manifest["baseline"]
    assert manifest["explained"] == 49 and manifest["failed"] == 1
    # the checkpoint and the ONNX file take the same decision, but for ties: the Youden threshold is
    # one of the validation probabilities, so a float32 rounding can put that image on either side
    done = [r for r in manifest["inputs"] if r["error"] is None]
    assert all(r["agrees_with_onnx"] or r["onnx_max_abs_diff"] < 1e-5 for r in done)
    assert sum(r["agrees_with_onnx"] for r in done) >= len(done) - 1
    assert_one_line_error(run_cli("explain", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "--target", "flu",
                                  "--out", str(out), str(png)), "--target flu")
    assert_one_line_error(run_cli("explain", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "--layer", "nope",
                                  "--out", str(out), str(png)), "--layer nope", "layer4")
    assert run_cli("explain", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "--out", str(out), str(bad)).returncode == 2


def test_export_from_the_checkpoint_keeps_calibration_and_threshold(run, tmp_path):
    out = tmp_path / "again.onnx"
    assert main(["healthcare", "export", "--ckpt", str(run / "checkpoints" / "best.ckpt"), "--out", str(out)]) == 0
    meta, original = read_metadata(out), read_metadata(run / "model.onnx")
    for key in ("temperature", "threshold", "clinical"):
        assert meta[key] == original[key], key


def test_fit_on_a_dicom_manifest_with_patients_and_a_balanced_sampler(tmp_path):
    rng = np.random.default_rng(0)
    rows = []
    for i in range(48):
        sick = i % 4 == 0  # imbalanced: 25% sick
        pixels = rng.normal(120 + 60 * sick, 20, (30, 30)).clip(0, 255)
        path = tmp_path / f"img{i:02d}.dcm"
        write_dicom(path, pixels, bits=8, patient=f"p{i // 2}")
        rows.append({"path": path.name, "label": "sick" if sick else "well", "patient_id": f"p{i // 2}"})
    pl.DataFrame(rows).write_csv(tmp_path / "m.csv")
    run_dir = tmp_path / "run"
    assert main(["healthcare", "fit", "--config", str(TINY), "--data.path", str(tmp_path / "m.csv"),
                 "--run_dir", str(run_dir), "--trainer.max_epochs", "1", "--clinical.imbalance", "sampler",
                 "--clinical.positive_label", "sick", "--data.batch_size", "8"]) == 0
    card = (run_dir / "model_card.md").read_text()
    assert "split by patient" in card and "`sick` when its calibrated probability" in card


def test_balanced_sampler_draws_classes_evenly(npz):
    from deepapps.apps.healthcare.config import HealthcareFitConfig
    from deepapps.apps.healthcare.training import MedicalDataModule
    from deepapps.core.runtime.images import ImageSpec

    cfg = HealthcareFitConfig()
    cfg.data.path, cfg.data.num_workers, cfg.data.batch_size, cfg.data.augment = str(npz), 0, 160, False
    dm = MedicalDataModule(cfg.data, ImageSpec(28, 1.0, channels=1), imbalance="sampler")
    drawn = np.concatenate([t.numpy() for _, t in dm.train_dataloader()])
    train = dm.source.targets[dm.source.splits["train"]]
    assert abs(train.mean() - 0.5) > 0.15 and abs(drawn.mean() - 0.5) < 0.12
    assert dm.class_weights(None) is None  # no loss weights on top of the sampler
    assert MedicalDataModule(cfg.data, ImageSpec(28, 1.0, channels=1)).class_weights(None)[0] > 1


@pytest.mark.parametrize("args, needles", [
    (["--clinical.imbalance", "oversample"], ["--clinical.imbalance oversample"]),
    (["--clinical.threshold", "best"], ["--clinical.threshold best"]),
    (["--clinical.channels", "2"], ["--clinical.channels 2"]),
    (["--clinical.positive_label", "flu"], ["--clinical.positive_label flu"]),
])
def test_bad_clinical_settings(args, needles, npz, tmp_path):
    assert_one_line_error(run_cli("fit", "--config", str(TINY), "--data.path", str(npz), "--run_dir",
                                  str(tmp_path / "r"), *args), *needles)
    assert not (tmp_path / "r" / "checkpoints").exists()  # refused before any training


@pytest.mark.parametrize("change, needle", [
    (dict(drop=("val_images",)), "has val_labels but no val_images"),
    (dict(test_labels=np.zeros((3, 1), np.uint8)), "test_images has 48 items but test_labels has 3"),
    (dict(val_images=np.zeros((48, 20, 20), np.uint8)), "images of different sizes"),
    (dict(train_labels=(np.arange(160) % 3).reshape(160, 1).astype(np.uint8)), "out of range for pneumoniamnist"),
])
def test_bad_npz_fails_fit_with_one_line(change, needle, tmp_path):
    path = write_npz(tmp_path / "pneumoniamnist.npz", **change)
    assert_one_line_error(run_cli("fit", "--config", str(TINY), "--data.path", str(path), "--run_dir", str(tmp_path / "r")),
                          str(path), needle)


def test_predict_bad_inputs(run, tmp_path):
    model = str(run / "model.onnx")
    empty = tmp_path / "empty"
    empty.mkdir()
    assert_one_line_error(run_cli("predict", "--model", model, str(empty)), "folder has no images")
    assert_one_line_error(run_cli("predict", "--model", model, str(tmp_path / "none.dcm")), "no such file")
    nopix = write_dicom(tmp_path / "nopix.dcm", np.zeros((4, 4)), with_pixels=False)
    result = run_cli("predict", "--model", model, str(nopix))
    assert result.returncode == 2 and "no pixel data" in result.stdout  # the error row is still written
    broken = write_npz(tmp_path / "broken.npz", drop=("train_labels",))
    result = run_cli("predict", "--model", model, str(broken))
    assert result.returncode == 2 and "needs train_images and train_labels" in result.stdout
    vision = subprocess.run([sys.executable, "-m", "deepapps.apps.vision", "predict", "--model", model, str(nopix)],
                            capture_output=True, text=True)
    assert_one_line_error(vision, "made by the healthcare app")


@pytest.mark.parametrize("kind", ["multiclass", "multilabel"])
def test_multiclass_and_multilabel_medmnist_tasks(kind, tmp_path, capsys):
    sizes = {"train": 160, "val": 48, "test": 48}
    rng = np.random.default_rng(0)
    if kind == "multiclass":  # e.g. RetinaMNIST / OrganAMNIST: argmax, no threshold
        labels = {f"{s}_labels": (np.arange(n) % 3).reshape(n, 1).astype(np.uint8) for s, n in sizes.items()}
    else:  # e.g. ChestMNIST: (N, L) multi-hot, one threshold per label
        labels = {f"{s}_labels": (rng.random((n, 3)) < 0.4).astype(np.uint8) for s, n in sizes.items()}
    data = write_npz(tmp_path / "d.npz", **labels)
    run_dir = tmp_path / "run"
    assert main(["healthcare", "fit", "--config", str(TINY), "--data.path", str(data), "--run_dir", str(run_dir),
                 "--trainer.max_epochs", "1"]) == 0
    meta = read_metadata(run_dir / "model.onnx")
    assert meta["task"] == kind and meta["labels"] == ["0", "1", "2"]
    assert (meta["threshold"] is None) == (kind == "multiclass")
    if kind == "multilabel":
        assert len(meta["threshold"]) == 3
    capsys.readouterr()
    assert main(["healthcare", "predict", "--model", str(run_dir / "model.onnx"), f"{data}:test"]) == 0
    table = pl.read_csv(io.StringIO(capsys.readouterr().out))
    assert table.columns == ["path", "label", "p_0", "p_1", "p_2", "error"] and len(table) == 48
    if kind == "multiclass":
        probs = table.select(["p_0", "p_1", "p_2"]).to_numpy()
        assert table["label"].cast(pl.Int64).to_list() == probs.argmax(1).tolist()


def test_http_adapter_takes_png_and_dicom_uploads(run, npz, tmp_path):
    import base64

    from deepapps.apps.healthcare.runtime import HealthcareServing
    from deepapps.core.errors import DataError
    from deepapps.core.runtime.session import load_model

    runtime = HealthcareServing()
    model = load_model(run / "model.onnx", "cpu", app="healthcare")
    image = np.load(npz)["test_images"][0]
    dicom = write_dicom(tmp_path / "u.dcm", image.astype(np.uint16) * 256).read_bytes()
    Image.fromarray(image).save(tmp_path / "u.png")
    items = [runtime.decode_item(model, dicom), runtime.decode_item(model, {"image": base64.b64encode(dicom).decode()}),
             runtime.decode_item(model, (tmp_path / "u.png").read_bytes())]
    out = runtime.run_items(model, items)
    assert out[0] == out[1] and set(out[2]["probabilities"]) == {"normal", "pneumonia"}
    assert out[2]["threshold"] == read_metadata(run / "model.onnx")["threshold"]
    empty = write_dicom(tmp_path / "e.dcm", image, with_pixels=False).read_bytes()
    with pytest.raises(DataError, match="no pixel data"):
        runtime.decode_item(model, empty)
