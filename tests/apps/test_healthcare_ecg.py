"""ECG task of the healthcare app on generated heartbeats: UCR/CSV/Parquet parsing, the front end
against torchaudio, fit -> ONNX (front end in the graph) -> evaluate -> torch-free predict, bad
inputs as one-line errors and error rows; slow tests on the shared UCR files."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest

from deepapps.apps.healthcare.signals import SignalSettings, open_signal_source, read_signal_rows
from deepapps.apps.healthcare.synthetic import ECG_LABELS, synthetic_ecg
from deepapps.core.cli import main
from deepapps.core.errors import DataError
from deepapps.core.contract import read_metadata
from tests.apps.healthcare_helpers import run_cli
from tests.helpers import assert_one_line_error, shared_path

CONFIGS = Path(__file__).resolve().parents[2] / "apps" / "healthcare" / "configs"
LENGTH = 96


def write_ucr(path: Path, n: int = 360, length: int = LENGTH, seed: int = 3) -> Path:
    """A UCR-format text file: float label (1.0, 2.0, 3.0) first, then the samples."""
    signals, targets = synthetic_ecg(n, length, seed)
    lines = [" ".join([f"{t + 1:.7e}", *(f"{v:.7e}" for v in s)]) for s, t in zip(signals, targets)]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def ucr(tmp_path_factory) -> Path:
    return write_ucr(tmp_path_factory.mktemp("ecg") / "beats_TRAIN.txt")


@pytest.fixture(scope="module")
def run(tmp_path_factory, ucr) -> Path:
    run_dir = tmp_path_factory.mktemp("ecg_run") / "run"
    code = main(["healthcare", "fit", "--config", str(CONFIGS / "ecg_tiny.yaml"), "--data.path", str(ucr),
                 "--run_dir", str(run_dir), "--trainer.max_epochs", "5", "--trainer.patience", "5"])
    assert code == 0
    return run_dir


# --- data ---------------------------------------------------------------------------------------


def test_ucr_labels_are_named_and_split_stratified_and_reproducibly(ucr, tmp_path):
    source = open_signal_source(str(ucr), SignalSettings())
    assert source.labels == ["1", "2", "3"] and source.signals.shape == (360, LENGTH)
    assert source.signals.dtype == np.float32
    again = open_signal_source(str(ucr), SignalSettings())
    for split in ("train", "val", "test"):
        assert np.array_equal(source.splits[split], again.splits[split])
    every = np.concatenate(list(source.splits.values()))
    assert len(every) == 360 and len(np.unique(every)) == 360  # a partition
    for name in source.labels:  # each class ~15% in val and test
        counts = {s: source.class_counts(s)[name] for s in source.splits}
        assert abs(counts["test"] / sum(counts.values()) - 0.15) < 0.05
    # a known UCR set gets the archive's class names (floats like 1.0000000e+00 read as "1")
    named = write_ucr(tmp_path / "ECG5000_TRAIN.txt", n=60)
    assert open_signal_source(str(named)).labels == ["normal", "r_on_t_pvc", "pvc"]


def test_csv_and_parquet_rows_read_like_the_ucr_file(ucr, tmp_path):
    signals, targets = synthetic_ecg(40, 16, seed=1)
    frame = pl.DataFrame({"id": [f"b{i}" for i in range(40)], "diagnosis": [ECG_LABELS[t] for t in targets]}
                         | {f"s{j}": signals[:, j] for j in range(16)})
    frame.write_csv(tmp_path / "beats.csv")
    frame.write_parquet(tmp_path / "beats.parquet")
    settings = SignalSettings(label_column="diagnosis")
    for name in ("beats.csv", "beats.parquet"):
        source = open_signal_source(str(tmp_path / name), settings)
        assert sorted(source.labels) == sorted(set(ECG_LABELS) & {ECG_LABELS[t] for t in targets})
        assert np.allclose(source.signals, signals, atol=1e-6)  # the `id` column is not a sample
    with pytest.raises(DataError, match="no label column 'label'"):
        open_signal_source(str(tmp_path / "beats.csv"))


def test_bad_rows_are_named_and_fail_training_data_in_one_line(tmp_path):
    path = tmp_path / "bad.txt"
    path.write_text("1 0.1 0.2 0.3 0.4\n2 0.1 NaN 0.3 0.4\n1 0.5 0.6\n2 0.1 x 0.3 0.4\n\n1 1 2 3 4\n")
    rows = read_signal_rows(str(path), length=4)
    assert [r.error for r in rows] == [
        "", "row 1: NaN at sample 1 (1 missing or non-finite samples)",
        "row 2: 3 values, expected 4 samples (or a label and 4 samples)", "row 3: 'x' is not a number", "",
    ]
    assert rows[0].raw_label == "1" and rows[4].raw_label == "1"  # 5 values = label + 4 samples
    with pytest.raises(DataError, match=r"bad.txt: row 1: NaN at sample 1"):
        open_signal_source(str(path))
    with pytest.raises(DataError, match="no such file"):
        read_signal_rows(str(tmp_path / "missing.txt"))


# --- front end against torchaudio, and its export ------------------------------------------------


def test_front_end_matches_torchaudio():
    import torch
    import torchaudio

    from deepapps.apps.healthcare.signal_models import DftSpectrogram, SignalFrontEnd, fir_kernel

    x = torch.randn(4, 140, generator=torch.Generator().manual_seed(0))
    ours = DftSpectrogram(32, 2, 250.0).power(x)
    theirs = torchaudio.transforms.Spectrogram(n_fft=32, hop_length=2, power=2.0)(x)
    assert ours.shape == theirs.shape == (4, 17, 71)
    assert torch.allclose(ours, theirs, rtol=1e-4, atol=1e-3)
    mel = torchaudio.transforms.MelSpectrogram(sample_rate=250, n_fft=32, hop_length=2, n_mels=12, power=2.0)(x)
    assert torch.allclose(DftSpectrogram(32, 2, 250.0, n_mels=12).power(x), mel, rtol=1e-4, atol=1e-3)
    kernel = fir_kernel(250.0, 5.0, 40.0, 31)
    filtered = SignalFrontEnd(140, kernel, normalize=False)(x)
    expected = torchaudio.functional.convolve(x, torch.tensor(kernel, dtype=torch.float32).expand(4, -1), mode="same")
    assert torch.allclose(filtered, expected, atol=1e-5)
    resampled = SignalFrontEnd(140, resample_to=128, normalize=False)(x)
    assert torch.allclose(resampled, torchaudio.functional.resample(x, 140, 128))
    # the band-pass kernel removes DC and passes the middle of the band
    response = np.abs(np.fft.rfft(kernel, 1000))
    freqs = np.fft.rfftfreq(1000, 1 / 250.0)
    assert response[0] < 1e-3 and response[np.argmin(np.abs(freqs - 20))] > 0.9


@pytest.mark.parametrize("backbone", ["fcn", "test_resnet"])
def test_every_network_exports_with_its_front_end_at_parity(backbone, tmp_path):
    from deepapps.apps.healthcare.config import HealthcareFitConfig
    from deepapps.apps.healthcare.training import HealthcareTraining
    from deepapps.core.contract import Classification
    from deepapps.core.training.export import export_onnx
    from deepapps.core.training.interface import Saved

    cfg = HealthcareFitConfig(task="signal")
    cfg.model.backbone, cfg.signal.length, cfg.signal.width, cfg.signal.image_size = backbone, 140, 8, 32
    cfg.signal.highpass_hz, cfg.signal.resample_to, cfg.signal.n_mels = 1.0, 128, (8 if backbone != "fcn" else None)
    training = HealthcareTraining()
    saved = Saved({}, Classification(["a", "b", "c"], "multiclass"), {"length": 140, "label_values": None})
    built = training.build(cfg, saved, with_data=False)
    meta = {"app": "healthcare", "task": "multiclass", "labels": built.labels,
            "inputs": [i.to_json() for i in built.inputs], "preprocess": built.preprocess}
    served = training.served(built, {"temperature": 1.5})
    out = export_onnx(served.module, built.dummy_inputs(4), tmp_path / "m.onnx", ["signal"], meta)
    assert out["export"]["parity_max_abs_diff"] <= 1e-4
    assert len(built.preprocess["in_graph"]) == (4 if backbone != "fcn" else 3)


# --- fit -> ONNX -> evaluate -> predict ---------------------------------------------------------


def test_fit_ships_a_signal_model_with_metrics_and_a_clinical_card(run):
    for name in ("model.onnx", "model_card.md", "metrics.json", "plots/confusion_matrix.png", "plots/roc.png",
                 "plots/reliability.png", "samples/test_signals.csv"):
        assert (run / name).is_file(), name
    meta = read_metadata(run / "model.onnx")
    assert meta["family"] == "signal_classification" and meta["labels"] == ["1", "2", "3"]
    assert meta["inputs"] == [{"name": "signal", "dtype": "float32", "shape": ["batch", LENGTH], "layout": "NL"}]
    assert meta["preprocess"]["kind"] == "signal" and meta["preprocess"]["label_values"] == {"1": "1", "2": "2", "3": "3"}
    assert meta["export"]["parity_max_abs_diff"] <= 1e-4 and meta["temperature"] > 0
    test = json.loads((run / "metrics.json").read_text())["test"]
    assert {"accuracy", "macro_f1", "balanced_accuracy", "auroc", "confusion_matrix", "ece"} <= set(test)
    assert test["n"] == 72 and test["accuracy"] >= 0.8 and test["macro_f1"] >= 0.6  # majority class: 0.67 / 0.27
    assert set(test["per_class"]["3"]) >= {"recall", "precision", "f1", "specificity", "support"}
    card = (run / "model_card.md").read_text()
    for needle in ("Research use only", "not a medical device", "## Per-class metrics", "balanced accuracy",
                   "stratified 60%/20%/20%", "z-normalisation per signal", "nominal 250 Hz"):
        assert needle in card, needle


def test_evaluate_rescores_exactly_the_held_out_rows(run, ucr, tmp_path):
    out = tmp_path / "eval.json"
    assert main(["healthcare", "evaluate", "--model", str(run / "model.onnx"), "--out", str(out)]) == 0
    evaluated, saved = json.loads(out.read_text()), json.loads((run / "metrics.json").read_text())["test"]
    for key in ("n", "accuracy", "macro_f1", "balanced_accuracy", "auroc"):
        assert evaluated[key] == pytest.approx(saved[key]), key
    assert evaluated["confusion_matrix"] == saved["confusion_matrix"]
    assert main(["healthcare", "evaluate", "--model", str(run / "model.onnx"), "--split", "val"]) == 0


def test_evaluate_scores_a_ucr_test_file_whole_and_every_split(run, ucr, tmp_path, capsys):
    model = str(run / "model.onnx")

    def evaluate(*args: str) -> dict:
        capsys.readouterr()
        assert main(["healthcare", "evaluate", "--model", model, *args]) == 0
        return json.loads(capsys.readouterr().out)

    test_file = write_ucr(tmp_path / "beats_TEST.txt", n=90, seed=8)
    printed = evaluate("--data.path", str(test_file))  # another file: every signal of it
    assert list(printed)[:5] == ["split", "split_chosen", "n", "data", "fingerprint"]
    assert printed["split"] == "all" and printed["n"] == 90 and sum(printed["confusion_matrix"][0]) > 0
    assert printed["fingerprint"]["size"] == test_file.stat().st_size and "balanced_accuracy" in printed
    sizes = {split: evaluate("--split", split)["n"] for split in ("all", "train", "val", "test")}
    assert sizes == {"all": 360, "train": 216, "val": 72, "test": 72}
    one_class = tmp_path / "normal_only.txt"
    normal = [line for line in ucr.read_text().splitlines() if line.startswith("1.")]
    one_class.write_text("\n".join(normal) + "\n")
    printed = evaluate("--data.path", str(one_class))  # a file of one class is still scored
    assert printed["split"] == "all" and printed["per_class"]["1"]["support"] == printed["n"] == len(normal)


def test_task_auto_reads_a_ucr_file_as_signals(ucr, tmp_path, capsys):
    from deepapps.apps.healthcare.config import HealthcareFitConfig, MedicalDataConfig, SignalConfig
    from deepapps.apps.healthcare.data import detect_task
    from deepapps.apps.healthcare.training import HealthcareTraining

    assert detect_task(str(ucr)) == ("signal", "beats_TRAIN.txt is a UCR signal file")
    frame = pl.DataFrame({"id": ["a", "b"], "label": ["N", "V"]} | {f"s{j}": [0.1, 0.2] for j in range(8)})
    frame.write_csv(tmp_path / "rows.csv")
    frame.write_parquet(tmp_path / "rows.parquet")
    ucr_tsv = tmp_path / "beats.tsv"
    ucr_tsv.write_text(ucr.read_text().replace(" ", "\t"))
    manifest = tmp_path / "manifest.tsv"
    manifest.write_text("path\tlabel\na.png\tcat\n")
    (tmp_path / "folder").mkdir()
    expected = {"rows.csv": "signal", "rows.parquet": "signal", "beats.tsv": "signal", "manifest.tsv": "image",
                "folder": "image", "x.npz": "image", "scan.dcm": "image"}
    assert {name: detect_task(str(tmp_path / name))[0] for name in expected} == expected
    assert detect_task("builtin:synthetic-ecg")[0] == "signal" and detect_task("builtin:synthetic-xray")[0] == "image"
    cfg = HealthcareFitConfig(data=MedicalDataConfig(path=str(ucr), val_fraction=0.2, test_fraction=0.2),
                              signal=SignalConfig(width=8))
    cfg.model.backbone, cfg.model.pretrained = "resnet1d", None
    assert cfg.task == "auto"
    capsys.readouterr()
    built = HealthcareTraining().build(cfg)
    assert cfg.task == "signal" and built.family == "signal_classification" and built.labels == ["1", "2", "3"]
    line = "auto: --task signal (beats_TRAIN.txt is a UCR signal file)"
    assert capsys.readouterr().err.count(f"deepapps: {line}") == 1
    assert line in built.datamodule.summary()["notes"]


def test_task_image_on_a_ucr_file_suggests_task_signal(ucr, tmp_path, capsys):
    argv = ["healthcare", "fit", "--config", str(CONFIGS / "tiny.yaml"), "--task", "image", "--data.path", str(ucr),
            "--run_dir", str(tmp_path / "run")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "beats_TRAIN.txt: expected an image folder" in err and "use --task signal" in err
    assert not (tmp_path / "run").exists()


def test_predict_writes_probabilities_labels_and_error_rows(run, ucr, tmp_path, capsys):
    lines = ucr.read_text().splitlines()[:5]
    lines[1] = " ".join(lines[1].split()[:50])  # too short
    tokens = lines[3].split()
    lines[3] = " ".join([*tokens[:7], "nan", *tokens[8:]])
    unlabelled = " ".join(lines[4].split()[1:])  # samples only: no label column
    bad = tmp_path / "mixed.txt"
    bad.write_text("\n".join([*lines, unlabelled]) + "\n")
    out = tmp_path / "pred.csv"
    assert main(["healthcare", "predict", "--model", str(run / "model.onnx"), "--out", str(out), str(bad)]) == 0
    table = pl.read_csv(out)
    assert table.columns == ["path", "row", "id", "label", "p_1", "p_2", "p_3", "error"]
    assert table["row"].to_list() == [0, 1, 2, 3, 4, 5]
    errors = table["error"].to_list()
    assert "row 1: 50 values, expected 96 samples" in errors[1] and "row 3: NaN at sample 6" in errors[3]
    good = table.filter(pl.col("error").fill_null("") == "")
    assert len(good) == 4 and good["label"].null_count() == 0
    assert np.allclose(good.select("p_1", "p_2", "p_3").to_numpy().sum(1), 1, atol=1e-5)
    assert good["p_1"][-1] == pytest.approx(good["p_1"][-2])  # the same beat with and without its label
    assert "2 of 6 inputs failed" in capsys.readouterr().err
    # CSV with an id column, Parquet output
    frame = pl.DataFrame({"id": ["a", "b"]} | {f"s{j}": np.zeros(2) + j / LENGTH for j in range(LENGTH)})
    frame.write_csv(tmp_path / "two.csv")
    parquet = tmp_path / "pred.parquet"
    assert main(["healthcare", "predict", "--model", str(run / "model.onnx"), "--out", str(parquet),
                 str(tmp_path / "two.csv")]) == 0
    assert pl.read_parquet(parquet)["id"].to_list() == ["a", "b"]


def test_predict_never_imports_torch(run, ucr):
    code = (
        "import sys\nfrom deepapps.core.cli import main\n"
        f"rc = main(['healthcare', 'predict', '--model', {str(run / 'model.onnx')!r}, {str(ucr)!r}])\n"
        "heavy = sorted(m for m in ('torch', 'torchaudio', 'pytorch_lightning', 'timm', 'sklearn') if m in sys.modules)\n"
        "print('HEAVY', heavy, rc, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY [] 0" in result.stderr and result.stdout.count("\n") == 361


def test_unusable_inputs_are_one_line_errors(run, tmp_path):
    model = str(run / "model.onnx")
    assert_one_line_error(run_cli("predict", "--model", model, str(tmp_path / "missing.txt")), "missing.txt: no such file")
    short = tmp_path / "short.txt"
    short.write_text("1 0.1 0.2 0.3\n2 0.4 0.5 0.6\n")
    assert_one_line_error(run_cli("predict", "--model", model, str(short)), "no usable signal in 2 rows",
                          "4 values, expected 96 samples")
    nan = tmp_path / "nan.csv"
    pl.DataFrame({f"s{j}": [float("nan")] for j in range(LENGTH)}).write_csv(nan)
    assert_one_line_error(run_cli("predict", "--model", model, str(nan)), "NaN at sample 0")
    other = tmp_path / "beats.wav"
    other.write_bytes(b"RIFF")
    assert_one_line_error(run_cli("predict", "--model", model, str(other)), "unsupported signal file '.wav'")
    assert_one_line_error(run_cli("evaluate", "--model", model, "--data.path", str(short)),
                          "short.txt: 3 samples per signal, the model takes 96")


def test_signal_config_errors_are_one_line(ucr, tmp_path, capsys):
    def fails(*args: str, needles: tuple[str, ...]) -> None:  # in process: no torch start-up per case
        argv = ["healthcare", "fit", "--config", str(CONFIGS / "ecg_tiny.yaml"), "--data.path", str(ucr),
                "--run_dir", str(tmp_path / f"run{len(list(tmp_path.iterdir()))}"), *args]
        assert main(argv) == 2
        err = capsys.readouterr().err
        lines = [line for line in err.splitlines() if line.startswith("deepapps: error:")]
        assert len(lines) == 1 and "Traceback" not in err, err
        assert all(n in lines[0] for n in needles), lines[0]

    fails("--task", "audio", needles=("--task audio: choose image, signal",))
    fails("--clinical.tta_flip", "true", needles=("tta_flip",))
    fails("--signal.lowpass_hz", "500", needles=("--signal.lowpass_hz 500", "Nyquist"))
    fails("--signal.length", "140", needles=("--signal.length 140", "96 samples"))
    fails("--model.backbone", "resnet_1d", needles=("--model.backbone resnet_1d",))


def test_explain_shades_signals_with_integrated_gradients(run, ucr, tmp_path, capsys):
    out = tmp_path / "why"
    assert main(["healthcare", "explain", "--model", str(run / "model.onnx"), str(ucr), "--out", str(out),
                 "--rows", "3"]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["method"] == "integrated_gradients" and manifest["baseline"].startswith("all-zero signal")
    assert manifest["explained"] == 3 and manifest["all_agree_with_onnx"] is True
    assert manifest["max_abs_delta"] < 0.05
    first = manifest["inputs"][0]["files"]
    table = pl.read_csv(out / first[1])
    assert first[0].endswith(".png") and (out / first[0]).is_file() and table.columns == ["sample", "value", "attribution"]
    capsys.readouterr()
    assert main(["healthcare", "explain", "--ckpt", str(run / "checkpoints" / "best.ckpt"), str(ucr), "--out", str(out),
                 "--method", "gradcam"]) == 2
    assert "--method gradcam: unknown for this model; choose one of integrated_gradients" in capsys.readouterr().err


def test_http_adapter_checks_and_scores_signals(run):
    from deepapps.apps.healthcare.runtime import HealthcareServing
    from deepapps.core.runtime.session import load_model

    runtime = HealthcareServing()
    model = load_model(run / "model.onnx", "cpu", app="healthcare")
    signals, _ = synthetic_ecg(3, LENGTH, seed=9)
    items = [runtime.decode_item(model, {"signal": s.tolist()}) for s in signals]
    results = runtime.run_items(model, items)
    assert [set(r) for r in results] == [{"label", "threshold", "probabilities"}] * 3
    assert sum(results[0]["probabilities"].values()) == pytest.approx(1, abs=1e-4)
    for bad, needle in (({"signal": [1.0, 2.0]}, "2 samples, expected 96"), ({"signal": [None] * LENGTH}, "NaN"),
                        ({"image": "x"}, "expected {\"signal\""), ({"signal": ["a"] * LENGTH}, "must be a number")):
        with pytest.raises(DataError, match=needle.replace("{", r"\{").replace("(", r"\(")):
            runtime.decode_item(model, bad)


# --- the shared UCR files -------------------------------------------------------------------------


@pytest.mark.shared
def test_shared_ucr_files_parse_with_their_documented_classes():
    ecg5000 = open_signal_source(str(shared_path("data", "ecg", "ECG5000_TRAIN.txt")), SignalSettings())
    assert ecg5000.signals.shape == (500, 140)
    assert ecg5000.labels == ["normal", "r_on_t_pvc", "pvc", "sp_or_eb", "unclassified"]
    assert np.bincount(ecg5000.targets).tolist() == [292, 177, 10, 19, 2]
    ecg200 = open_signal_source(str(shared_path("data", "ecg", "ECG200_TRAIN.txt")), SignalSettings())
    assert ecg200.signals.shape == (100, 96) and ecg200.labels == ["myocardial_infarction", "normal"]
    assert np.bincount(ecg200.targets).tolist() == [31, 69]


@pytest.mark.slow
@pytest.mark.shared
def test_ecg5000_resnet1d_reaches_a_sensible_accuracy(tmp_path):
    data = shared_path("data", "ecg", "ECG5000_TRAIN.txt")
    run_dir = tmp_path / "ecg5000"
    assert main(["healthcare", "fit", "--config", str(CONFIGS / "ecg.yaml"), "--data.path", str(data),
                 "--run_dir", str(run_dir), "--trainer.max_epochs", "30", "--signal.width", "32"]) == 0
    test = json.loads((run_dir / "metrics.json").read_text())["test"]
    assert test["n"] == 99 and test["accuracy"] >= 0.88 and test["macro_f1"] >= 0.5
