"""The bad-input matrix: every app x every kind of bad input, table-driven.

Each row prepares a bad input (a file, a model, an option) and says what the user must see: exit
code 2, one `deepapps: error:` line naming the input (or, for an input that is one item of a batch,
an error row and exit 2 when it was the only item), no traceback, and no output written, not even a
temporary file. The CLI runs in this process (`core.cli.main`): an unexpected exception fails the
test instead of printing a traceback.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import onnx
import polars as pl
import pytest

from deepapps.core.cli import main
from deepapps.core.contract import read_metadata, set_metadata

APPS = ("vision", "healthcare", "ecg", "nlp", "fraud", "forecast")
CONFIGS = Path(__file__).resolve().parents[2] / "apps"
TINY = {
    "vision": CONFIGS / "vision/configs/tiny.yaml", "healthcare": CONFIGS / "healthcare/configs/tiny.yaml",
    "ecg": CONFIGS / "healthcare/configs/ecg_tiny.yaml", "nlp": CONFIGS / "nlp/configs/tiny.yaml",
    "fraud": CONFIGS / "finance/fraud/configs/tiny.yaml", "forecast": CONFIGS / "finance/forecast/configs/tiny.yaml",
}


def cli(name: str) -> str:
    return "healthcare" if name == "ecg" else name


def good_input(name: str, folder: Path) -> Path:
    """One valid predict input for the app's tiny model."""
    from PIL import Image

    if name in ("vision", "healthcare"):
        path = folder / "ok.png"
        Image.new("RGB", (32, 32), (90, 120, 200)).save(path)
    elif name == "ecg":
        from deepapps.apps.healthcare.synthetic import synthetic_ecg

        signals, _ = synthetic_ecg(2, 140, seed=1)
        path = folder / "ok.csv"
        path.write_text("\n".join([",".join(f"s{i}" for i in range(140))] + [",".join(map(str, s)) for s in signals]))
    elif name == "nlp":
        path = folder / "ok.txt"
        path.write_text("a great product\n")
    elif name == "fraud":
        from deepapps.apps.finance.fraud.synth import generate

        path = folder / "ok.csv"
        generate(50, 0.1, seed=3).drop("is_fraud").write_csv(path)
    else:
        from deepapps.apps.finance.forecast.series import read_frame

        path = folder / "ok.csv"
        read_frame("builtin:co2").tail(200).write_csv(path)
    return path


def wrong_schema(name: str, folder: Path) -> Path:
    """A readable file of the right type holding the wrong content for the app."""
    if name in ("vision", "healthcare"):
        path = folder / "text.png"
        path.write_text("not an image at all")
    elif name == "ecg":
        path = folder / "words.csv"
        path.write_text("a,b\nx,y\n")
    elif name == "nlp":
        path = folder / "table.csv"
        path.write_text("review,stars\ngood,5\n")  # no `text` column
    else:
        path = folder / "table.csv"
        path.write_text("colour,size\nred,3\n")
    return path


def non_finite(name: str, folder: Path) -> Path | None:
    """An input whose numbers are NaN or infinite (None where the app's inputs have no numbers)."""
    if name == "ecg":
        path = folder / "nan.csv"
        path.write_text(",".join(f"s{i}" for i in range(140)) + "\n" + ",".join(["nan"] * 140) + "\n")
        return path
    if name == "fraud":
        from deepapps.apps.finance.fraud.synth import generate

        frame = generate(5, 0.5, seed=4).drop("is_fraud")
        column = next(c for c, t in frame.schema.items() if t.is_float())
        path = folder / "inf.csv"
        frame.with_columns(pl.lit(float("inf")).alias(column)).write_csv(path)
        return path
    if name == "forecast":
        from deepapps.apps.finance.forecast.series import read_frame

        path = folder / "nan.csv"
        frame = read_frame("builtin:co2").tail(200)
        frame.with_columns(pl.lit(float("nan")).alias("co2")).write_csv(path)
        return path
    return None


def expect_one_line(capsys, code: int, *needles: str) -> str:
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    errors = [line for line in err.splitlines() if line.startswith(("deepapps: error:", "error:"))]
    assert errors, err
    assert any(all(n in line for n in needles) for line in errors), (needles, err)
    return err


def assert_nothing_written(folder: Path, out: Path, error_rows_allowed: bool = False) -> None:
    """No output, and no temporary file; with `error_rows_allowed`, an output whose every row is an
    error row (a batch whose only item was bad) passes too."""
    assert not [p for p in folder.iterdir() if p.name.startswith(f".{out.name}.")], "a temporary file was left"
    if out.exists() and error_rows_allowed:
        rows = pl.read_csv(out, infer_schema_length=0)
        assert rows.height and rows["error"].fill_null("").str.len_chars().min() > 0, rows
        return
    assert not out.exists()


# --- predict -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", APPS)
@pytest.mark.parametrize("row", ["missing", "empty", "corrupt", "wrong schema", "non-finite", "other app",
                                 "corrupt model", "metadata not JSON", "metadata without app",
                                 "out under a file", "out is the input", "batch size 0"])
def test_predict_bad_inputs(app_models, name, row, tmp_path, capsys):
    model, folder = app_models[name], tmp_path
    good = good_input(name, folder)
    out = folder / "predictions.csv"
    args = ["--model", str(model), "--out", str(out)]
    inputs = [str(good)]
    needles: tuple[str, ...]
    if row == "missing":
        inputs, needles = [str(folder / f"nowhere{good.suffix}")], (f"nowhere{good.suffix}", "no such file")
    elif row == "empty":
        empty = folder / f"empty{good.suffix}"
        empty.write_bytes(b"")
        inputs, needles = [str(empty)], (empty.name,)
    elif row == "corrupt":
        corrupt = folder / f"corrupt{good.suffix}"
        corrupt.write_bytes(os.urandom(300))
        inputs, needles = [str(corrupt)], (corrupt.name,)
    elif row == "wrong schema":
        bad = wrong_schema(name, folder)
        inputs, needles = [str(bad)], (bad.name,)
    elif row == "non-finite":
        bad = non_finite(name, folder)
        if bad is None:
            pytest.skip(f"{name} inputs hold no numbers")
        inputs, needles = [str(bad)], ()
    elif row == "other app":
        other = app_models["forecast" if name != "forecast" else "vision"]
        args[1], needles = str(other), ("made by the",)
    elif row == "corrupt model":
        broken = folder / "broken.onnx"
        broken.write_bytes(Path(model).read_bytes()[:4000])
        args[1], needles = str(broken), ("broken.onnx", "not a valid ONNX model")
    elif row in ("metadata not JSON", "metadata without app"):
        proto = onnx.load(str(model))
        meta = read_metadata(model)
        if row == "metadata not JSON":
            entry = next(p for p in proto.metadata_props if p.key == "deepapps")
            entry.value = "{broken"
            needles = ("not valid JSON",)
        else:
            meta.pop("app")
            set_metadata(proto, meta)
            needles = ("'app' is missing",)
        onnx.save(proto, str(folder / "meta.onnx"))
        args[1] = str(folder / "meta.onnx")
        needles = ("meta.onnx", *needles)
    elif row == "out under a file":
        (folder / "afile").write_text("x")
        out = folder / "afile" / "predictions.csv"
        args[3], needles = str(out), ("cannot write there",)
    elif row == "out is the input":
        out = good
        args[3], needles = str(good), ("is one of the inputs",)
        before = good.read_bytes()
    else:
        args += ["--batch-size", "0"]
        needles = ("--batch-size", "must be at least 1")
        if name == "fraud":
            args[-2] = "--chunk-size"
            needles = ("--chunk-size", "must be at least 1")
    code = main([cli(name), "predict", *args, *inputs])
    expect_one_line(capsys, code, *needles)
    if row == "out is the input":
        assert good.read_bytes() == before
    else:
        item_level = row in ("empty", "corrupt", "wrong schema", "non-finite")
        assert_nothing_written(out.parent if out.parent.is_dir() else folder, out, error_rows_allowed=item_level)


@pytest.mark.parametrize("name", APPS)
def test_a_bad_item_among_good_ones_is_an_error_row(app_models, name, tmp_path, capsys):
    """A batch with one bad item: the good ones are predicted, exit 0."""
    if name in ("fraud", "forecast"):
        pytest.skip("one table per call: its bad rows become error rows (tests/apps/test_fraud_e2e.py)")
    good = good_input(name, tmp_path)
    bad = tmp_path / f"corrupt{good.suffix}"
    bad.write_bytes(os.urandom(200) if name != "nlp" else b"\xff\xfe\xfa broken utf-8\n")
    out = tmp_path / "p.csv"
    assert main([cli(name), "predict", "--model", str(app_models[name]), "--out", str(out), str(good), str(bad)]) == 0
    text = out.read_text()
    assert text.count("\n") >= 3 and "corrupt" in text  # header, the good row, the error row


# --- evaluate, fit, export, import --------------------------------------------------------------------


@pytest.mark.parametrize("name", APPS)
def test_evaluate_on_missing_data(app_models, name, tmp_path, capsys):
    out = tmp_path / "eval.json"
    code = main([cli(name), "evaluate", "--model", str(app_models[name]), "--data.path", str(tmp_path / "none.csv"),
                 "--out", str(out)])
    expect_one_line(capsys, code, "none.csv")
    assert_nothing_written(tmp_path, out)


@pytest.mark.parametrize("name", APPS)
@pytest.mark.parametrize("row", ["batch size -1", "learning rate 0", "missing data", "run folder under a file",
                                 "config of random bytes"])
def test_fit_bad_settings_leave_no_run_folder(name, row, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["--config", str(TINY[name]), "--run_dir", str(run_dir)]
    if row == "batch size -1":
        args += ["--data.batch_size", "-1"]
        needles = ("--data.batch_size -1", "at least 1")
    elif row == "learning rate 0":
        args += ["--optim.lr", "0"]
        needles = ("--optim.lr 0", "positive")
    elif row == "missing data":
        args += ["--data.path", str(tmp_path / "nowhere.csv")]
        needles = ("nowhere.csv",)
    elif row == "run folder under a file":
        (tmp_path / "afile").write_text("x")
        run_dir = tmp_path / "afile" / "run"
        args[3], needles = str(run_dir), ("--run_dir", "is a file")
    else:
        junk = tmp_path / "junk.yaml"
        junk.write_bytes(bytes(range(256)) * 4)
        args += ["--config", str(junk)]
        needles = ("--config", "junk.yaml")
    expect_one_line(capsys, main([cli(name), "fit", *args]), *needles)
    assert not run_dir.exists()


@pytest.mark.parametrize("name", APPS)
def test_export_from_a_corrupt_or_foreign_checkpoint(app_models, name, tmp_path, capsys):
    corrupt = tmp_path / "corrupt.ckpt"
    corrupt.write_bytes(os.urandom(2000))
    out = tmp_path / "m.onnx"
    expect_one_line(capsys, main([cli(name), "export", "--ckpt", str(corrupt), "--out", str(out)]),
                    "corrupt.ckpt", "not a readable checkpoint")
    other = "vision" if name not in ("vision",) else "fraud"
    foreign = Path(app_models[other]).parent / "checkpoints" / "best.ckpt"
    code = main([cli(name), "export", "--ckpt", str(foreign), "--out", str(out)])
    if cli(other) == cli(name):
        pytest.skip("healthcare images and ECG are one app")
    expect_one_line(capsys, code, "best.ckpt", f"not a {cli(name)} checkpoint")
    assert not out.exists()


@pytest.mark.parametrize("args, needles", [
    (["--labels", "@{missing}"], ("--labels @", "cannot read")),
    (["--size", "-5"], ("--size", "must be at least 1")),
    (["--size", "0"], ("--size", "must be at least 1")),
    (["--labels", "only"], ("--labels", "two or more")),
    (["--std", "0,1,1"], ("--std", "positive")),
])
def test_import_bad_options(args, needles, tmp_path, capsys):
    from tests.core.test_importer import colour_classifier

    foreign = tmp_path / "foreign.onnx"
    onnx.save(colour_classifier("NCHW"), str(foreign))
    args = [a.replace("{missing}", str(tmp_path / "labels.txt")) for a in args]
    base = {"--labels": "blue,green,red", "--size": "16"}
    for flag, value in zip(args[::2], args[1::2]):
        base[flag] = value
    out = tmp_path / "wrapped.onnx"
    code = main(["import", "--app", "vision", "--onnx", str(foreign), "--out", str(out),
                 *[x for kv in base.items() for x in kv]])
    expect_one_line(capsys, code, *needles)
    assert not out.exists()


def test_a_forecast_series_with_infinite_values_is_filled_and_counted(tmp_path):
    """fit refuses nothing here: infinite values are missing values, filled and counted in the notes."""
    from deepapps.apps.finance.forecast.series import load_table, read_frame

    frame = read_frame("builtin:co2").head(300)
    frame = frame.with_columns(pl.when(pl.int_range(pl.len()) % 50 == 7).then(float("inf")).otherwise(pl.col("co2"))
                               .alias("co2"))
    frame.write_csv(tmp_path / "inf.csv")
    table = load_table(str(tmp_path / "inf.csv"), "date", ["co2"])
    values = table.series[0].values
    assert np.isfinite(values).all()
    assert any("6 infinite values treated as missing" in n for n in table.notes), table.notes
    assert json.dumps(table.notes)


@pytest.mark.parametrize("name", ["vision", "healthcare"])
def test_a_decompression_bomb_in_a_folder_is_one_error_row(app_models, name, tmp_path, capsys):
    from tests.core.test_serving_attacks import claimed_png

    folder = tmp_path / "images"
    folder.mkdir()
    for i in range(2):
        good_input(name, tmp_path).rename(folder / f"good{i}.png")
    (folder / "bomb.png").write_bytes(claimed_png(200_000, 200_000))
    out = tmp_path / "p.csv"
    assert main([cli(name), "predict", "--model", str(app_models[name]), "--out", str(out), str(folder)]) == 0
    rows = pl.read_csv(out)
    assert rows.height == 3 and rows.filter(pl.col("path").str.contains("bomb"))["error"][0].count("over the limit")
    assert "over the limit" in capsys.readouterr().err


def test_an_npz_holding_an_object_array_is_refused_unpickled(tmp_path, capsys):
    path = tmp_path / "objects.npz"
    images = np.empty(4, dtype=object)
    images[:] = [np.zeros((8, 8), np.uint8)] * 4
    np.savez(path, train_images=images, train_labels=np.arange(4) % 2)
    code = main(["vision", "fit", "--config", str(TINY["vision"]), "--data.path", str(path),
                 "--run_dir", str(tmp_path / "run")])
    expect_one_line(capsys, code, "objects.npz")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("change, needle", [(lambda m: m.pop("labels"), "'labels' is missing"),
                                            (lambda m: "{broken", "not valid JSON")])
def test_serve_refuses_a_model_whose_metadata_is_broken(app_models, tmp_path, change, needle):
    import subprocess
    import sys

    proto = onnx.load(str(app_models["vision"]))
    meta = read_metadata(app_models["vision"])
    value = change(meta)
    entry = next(p for p in proto.metadata_props if p.key == "deepapps")
    entry.value = value if isinstance(value, str) else json.dumps(meta)
    onnx.save(proto, str(tmp_path / "m.onnx"))
    result = subprocess.run([sys.executable, "-m", "deepapps.core.cli", "serve", "--model", str(tmp_path / "m.onnx")],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr and needle in result.stderr
