"""End to end through the CLI: fit -> ONNX -> evaluate / predict / test / export / resume."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import onnx
import polars as pl
import pytest
from PIL import Image

from deepapps.core.cli import main
from deepapps.core.contract import read_metadata
from deepapps.core.data.fingerprint import fingerprint
from tests.helpers import COLOURS, TINY, make_image_folder


def test_fit_writes_a_complete_run(tiny_run):
    for name in ("config.yaml", "metrics.json", "model.onnx", "model_card.md",
                 "checkpoints/best.ckpt", "checkpoints/last.ckpt", "plots/training_curves.png",
                 "plots/confusion_matrix.png", "plots/roc.png"):
        assert (tiny_run / name).is_file(), name
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert set(metrics["test"]) >= {"accuracy", "macro_f1", "auroc", "per_class", "confusion_matrix"}
    assert metrics["export"]["parity_max_abs_diff"] <= 1e-4
    # the ONNX file and the torch checkpoint agree on the test split
    assert metrics["test"]["accuracy"] == pytest.approx(metrics["test_torch"]["accuracy"], abs=1e-6)
    # colours are easy: even a tiny random-init net must beat chance (1/3) clearly
    assert metrics["test"]["accuracy"] >= 0.6
    card = (tiny_run / "model_card.md").read_text()
    assert "test_resnet" in card and f"{metrics['test']['accuracy']:.4f}" in card


def test_onnx_carries_the_contract(tiny_run):
    proto = onnx.load(str(tiny_run / "model.onnx"))
    onnx.checker.check_model(proto)
    assert proto.opset_import[0].version >= 17
    meta = read_metadata(tiny_run / "model.onnx")
    assert meta["app"] == "vision" and meta["task"] == "multiclass"
    assert meta["labels"] == ["blue", "green", "red"]
    assert meta["inputs"][0] | {} == {"name": "pixels", "dtype": "uint8", "shape": ["batch", 32, 32, 3], "layout": "NHWC"}
    assert meta["preprocess"]["size"] == 32 and "mean" in meta["preprocess"]
    assert set(meta["metrics"]) == {"val", "test"} and meta["version"] and meta["created"]
    graph_input = proto.graph.input[0].type.tensor_type
    assert graph_input.elem_type == onnx.TensorProto.UINT8
    assert graph_input.shape.dim[0].dim_param == "batch"


def test_evaluate_measures_the_shipped_file(tiny_run, image_folder, capsys, tmp_path):
    out = tmp_path / "eval.json"
    code = main(["vision", "evaluate", "--model", str(tiny_run / "model.onnx"),
                 "--data.path", str(image_folder), "--split", "test", "--out", str(out)])
    assert code == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads((tiny_run / "metrics.json").read_text())["test"]
    assert printed["accuracy"] == pytest.approx(saved["accuracy"])
    assert printed["n"] == saved["n"] == 6  # 15% of 16 per class, stratified
    assert json.loads(out.read_text())["macro_f1"] == pytest.approx(printed["macro_f1"])


def _evaluate(capsys, *args: str) -> tuple[dict, str]:
    """(printed metrics, stderr) of `deepapps vision evaluate ARGS`."""
    capsys.readouterr()
    assert main(["vision", "evaluate", *args]) == 0
    captured = capsys.readouterr()
    return json.loads(captured.out), captured.err


def test_evaluate_on_another_labelled_folder_scores_all_of_it(tiny_run, image_folder, tmp_path, capsys):
    model = str(tiny_run / "model.onnx")
    stored = read_metadata(tiny_run / "model.onnx")["train"]["data"]["fingerprint"]
    assert stored == fingerprint(image_folder) and stored["files"] == 48
    other = make_image_folder(tmp_path / "other", COLOURS, per_class=5, seed=9)
    printed, err = _evaluate(capsys, "--model", model, "--data.path", str(other))
    assert list(printed)[:5] == ["split", "split_chosen", "n", "data", "fingerprint"]
    assert printed["split"] == "all" and printed["n"] == 15 and printed["data"] == str(other)
    assert printed["split_chosen"] == "auto: not the model's training data (other fingerprint): every item"
    assert printed["fingerprint"] == fingerprint(other) and printed["fingerprint"]["files"] == 15
    assert sum(c["support"] for c in printed["per_class"].values()) == 15
    assert err.count("deepapps: auto: --split all") == 1
    # the training data (by default, or given) is scored on the test split fit held out
    for args in ([], ["--data.path", str(image_folder)]):
        printed, err = _evaluate(capsys, "--model", model, *args)
        assert printed["split"] == "test" and printed["n"] == 6 and "(same fingerprint)" in printed["split_chosen"]
    # every split by name; all = train + val + test
    sizes = {split: _evaluate(capsys, "--model", model, "--split", split)[0]["n"] for split in ("train", "val", "test", "all")}
    assert sizes == {"train": 36, "val": 6, "test": 6, "all": 48}
    printed, _ = _evaluate(capsys, "--model", model, "--data.path", str(other), "--split", "test")
    assert printed["split"] == "test" and printed["split_chosen"] == "given" and printed["n"] == 3


def test_evaluate_all_on_every_image_layout(tiny_run, image_folder, tmp_path, capsys):
    model = str(tiny_run / "model.onnx")
    # a folder with given splits: all = every split folder
    for split, count in (("train", 4), ("val", 2), ("test", 2)):
        make_image_folder(tmp_path / "given" / split, COLOURS, per_class=count, seed=len(split))
    printed, _ = _evaluate(capsys, "--model", model, "--data.path", str(tmp_path / "given"))
    assert printed["split"] == "all" and printed["n"] == 24 and printed["fingerprint"]["files"] == 24
    assert _evaluate(capsys, "--model", model, "--data.path", str(tmp_path / "given"), "--split", "val")[0]["n"] == 6
    # a manifest
    paths = sorted(image_folder.rglob("*.png"))[::4]
    manifest = tmp_path / "manifest.csv"
    pl.DataFrame({"path": [str(p) for p in paths], "label": [p.parent.name for p in paths]}).write_csv(manifest)
    printed, _ = _evaluate(capsys, "--model", model, "--data.path", str(manifest))
    assert printed["split"] == "all" and printed["n"] == len(paths) == 12 and printed["fingerprint"]["kind"] == "file"
    # an .npz with label names, its given splits and all of them
    pixels = {name: np.stack([np.array(Image.open(p)) for p in sorted((image_folder / name).glob("*.png"))])
              for name in COLOURS}
    arrays = {"label_names": np.array(list(COLOURS))}
    for split, rows in (("train", slice(0, 10)), ("val", slice(10, 13)), ("test", slice(13, 16))):
        arrays[f"{split}_images"] = np.concatenate([pixels[name][rows] for name in COLOURS])
        arrays[f"{split}_labels"] = np.repeat(np.arange(3), len(range(16)[rows]))[:, None]
    npz = tmp_path / "colours.npz"
    np.savez(npz, **arrays)
    sizes = {split: _evaluate(capsys, "--model", model, "--data.path", str(npz), "--split", split)[0]["n"]
             for split in ("all", "train", "val", "test")}
    assert sizes == {"all": 48, "train": 30, "val": 9, "test": 9}
    assert _evaluate(capsys, "--model", model, "--data.path", str(npz))[0]["split"] == "all"
    # labelled data of fewer classes than the model's, too small for fit's splits
    two = make_image_folder(tmp_path / "two", {k: COLOURS[k] for k in ("blue", "red")}, per_class=2, seed=4)
    printed, _ = _evaluate(capsys, "--model", model, "--data.path", str(two))
    assert printed["n"] == 4 and printed["per_class"]["green"]["support"] == 0
    assert printed["per_class"]["red"]["support"] == 2


def test_predict_writes_csv_with_error_rows(tiny_run, image_folder, tmp_path, capsys):
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    red = Image.open(next((image_folder / "red").glob("*.png")))
    red.convert("L").save(inputs / "grey.bmp")
    red.convert("RGBA").save(inputs / "rgba.png")
    red.save(inputs / "photo.tiff")
    red.convert("RGB").save(inputs / "photo.jpg")
    (inputs / "broken.jpg").write_bytes((inputs / "photo.jpg").read_bytes()[:100])
    (inputs / "notes.png").write_text("not an image")
    out = tmp_path / "pred.csv"
    code = main(["vision", "predict", "--model", str(tiny_run / "model.onnx"), "--out", str(out),
                 "--top-k", "2", str(inputs)])
    assert code == 0
    table = pl.read_csv(out)
    assert table.columns == ["path", "label", "probability", "top_labels", "top_probabilities", "error"]
    rows = {r["path"].rsplit("/", 1)[1]: r for r in table.to_dicts()}
    assert set(rows) == {"grey.bmp", "rgba.png", "photo.tiff", "photo.jpg", "broken.jpg", "notes.png"}
    assert "corrupt or truncated" in rows["broken.jpg"]["error"]
    assert "not an image" in rows["notes.png"]["error"]
    for name in ("rgba.png", "photo.tiff", "photo.jpg"):
        assert not rows[name]["error"] and rows[name]["label"] == "red"
        probs = [float(p) for p in rows[name]["top_probabilities"].split(";")]
        assert len(probs) == 2 and probs[0] >= probs[1]
    assert "2 of 6 inputs failed" in capsys.readouterr().err


def test_predict_matches_torch_on_the_same_pixels(tiny_run, image_folder):
    import torch

    from deepapps.core.runtime.images import ImageSpec, open_image, to_model_input
    from deepapps.core.runtime.session import load_model
    from deepapps.core.training.checkpoints import load_checkpoint
    from deepapps.core.config import ImageFitConfig, from_dict
    from deepapps.core.registry import get_app

    model = load_model(tiny_run / "model.onnx", "cpu", app="vision")
    spec = ImageSpec.from_meta(model.meta["preprocess"])
    pixels = np.stack([to_model_input(open_image(p), spec) for p in sorted(image_folder.rglob("*.png"))[:6]])
    cfg = from_dict(ImageFitConfig, model.meta["train"] | {"data": model.meta["train"]["data_config"],
                                                          "model": {"backbone": "test_resnet", "drop_rate": 0.0}})
    task, _ = load_checkpoint(get_app("vision"), tiny_run / "checkpoints" / "best.ckpt", cfg, with_data=False)
    with torch.no_grad():
        expected = torch.softmax(task(torch.from_numpy(pixels)), -1).numpy()
    assert np.abs(model.run({"pixels": pixels}) - expected).max() < 1e-4


def test_checkpoint_commands(tiny_run, image_folder, tmp_path, capsys):
    ckpt = str(tiny_run / "checkpoints" / "best.ckpt")
    assert main(["vision", "test", "--ckpt", ckpt]) == 0
    tested = json.loads(capsys.readouterr().out)
    saved = json.loads((tiny_run / "metrics.json").read_text())
    assert tested["accuracy"] == pytest.approx(saved["test_torch"]["accuracy"])
    assert main(["vision", "validate", "--ckpt", ckpt]) == 0
    assert json.loads(capsys.readouterr().out)["accuracy"] == pytest.approx(saved["val"]["accuracy"])
    out = tmp_path / "exported.onnx"
    assert main(["vision", "export", "--ckpt", ckpt, "--out", str(out), "--fp16"]) == 0
    meta = read_metadata(out)
    assert meta["labels"] == ["blue", "green", "red"] and meta["export"]["parity_max_abs_diff"] <= 1e-4
    assert out.with_suffix(".fp16.onnx").is_file()
    # --int8: tests/core/test_quantize.py


def test_resume_after_a_killed_fit(tmp_path, image_folder):
    import signal
    import time

    import torch

    run_dir = tmp_path / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    args = ["fit", "--config", str(TINY), "--data.path", str(image_folder), "--run_dir", str(run_dir),
            "--data.batch_size", "8", "--trainer.limit_train_batches", "3", "--trainer.patience", "100"]
    victim = subprocess.Popen([sys.executable, "-m", "deepapps.apps.vision", *args, "--trainer.max_epochs", "500"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 120
    while not last.is_file() and time.monotonic() < deadline and victim.poll() is None:
        time.sleep(0.1)
    victim.send_signal(signal.SIGKILL)  # no clean shutdown at all
    victim.wait()
    assert last.is_file() and not (run_dir / "model.onnx").exists()
    killed = torch.load(last, weights_only=False)
    logged = run_dir / "csv" / "metrics.csv"
    epochs_before = set(pl.read_csv(logged)["epoch"].drop_nulls().to_list()) if logged.is_file() else set()
    # the same folder without --resume is refused, with one line
    assert main(["vision", *args, "--trainer.max_epochs", "2"]) == 2
    target = killed["epoch"] + 2
    assert main(["vision", *args, "--trainer.max_epochs", str(target), "--resume"]) == 0
    resumed = torch.load(last, weights_only=False)
    assert resumed["global_step"] == target * 3  # continued from the killed run's step, 3 per epoch
    assert resumed["global_step"] > killed["global_step"]
    epochs = pl.read_csv(run_dir / "csv" / "metrics.csv")["epoch"].drop_nulls().unique().sort().to_list()
    assert set(range(killed["epoch"] + 1, target)) <= set(epochs) and epochs[-1] == target - 1
    assert epochs_before <= set(epochs)  # what the killed run had logged is kept
    assert (run_dir / "model.onnx").is_file()


def test_predict_path_never_imports_torch(tiny_run, image_folder):
    code = (
        "import sys\n"
        "from deepapps.core.cli import main\n"
        f"rc = main(['vision', 'predict', '--model', {str(tiny_run / 'model.onnx')!r}, {str(image_folder)!r}])\n"
        "heavy = sorted(m for m in ('torch', 'pytorch_lightning', 'timm', 'transformers', 'sklearn') if m in sys.modules)\n"
        "print('HEAVY', heavy, rc, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY [] 0" in result.stderr
    assert result.stdout.count("\n") == 49  # header + 48 images


def test_freeze_then_unfreeze_trains_only_the_head_first(tmp_path, image_folder):
    import torch

    from deepapps.core.training.backbones import create_timm_model

    args = ["vision", "fit", "--config", str(TINY), "--data.path", str(image_folder), "--data.batch_size", "8",
            "--model.freeze_epochs", "1", "--optim.schedule", "constant"]
    assert main(args + ["--run_dir", str(tmp_path / "frozen"), "--trainer.max_epochs", "1"]) == 0
    torch.manual_seed(42)  # fit seeds 42 before building: the same initial backbone
    initial, _ = create_timm_model("test_resnet", 0, None)
    trained = torch.load(tmp_path / "frozen" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    for name, value in initial.state_dict().items():
        if "running" not in name and "num_batches" not in name:  # BN statistics still adapt
            assert torch.equal(trained[f"net.backbone.{name}"], value), name
    assert main(args + ["--run_dir", str(tmp_path / "unfrozen"), "--trainer.max_epochs", "2"]) == 0
    later = torch.load(tmp_path / "unfrozen" / "checkpoints" / "last.ckpt", weights_only=False)["state_dict"]
    assert not torch.equal(later["net.backbone.conv1.0.weight"], initial.state_dict()["conv1.0.weight"])


def test_ddp_on_two_cpu_processes_needs_no_code_change(tmp_path):
    run_dir = tmp_path / "ddp"
    result = subprocess.run(
        [sys.executable, "-m", "deepapps.apps.vision", "fit", "--config", str(TINY), "--run_dir", str(run_dir),
         "--trainer.accelerator", "cpu", "--trainer.devices", "2", "--trainer.strategy", "ddp",
         "--trainer.max_epochs", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["test"]["n"] == 269 and (run_dir / "model.onnx").is_file()
