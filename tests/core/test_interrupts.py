"""Ctrl-C and SIGTERM during a long write: nothing half-written is left, not even a hidden
temporary file, and the exit is one line (130 for SIGINT, 143 for SIGTERM)."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest


@pytest.fixture(scope="module")
def transactions(tmp_path_factory) -> Path:
    from deepapps.apps.finance.fraud.synth import generate

    path = tmp_path_factory.mktemp("tx") / "tx.parquet"
    generate(400_000, 0.01, seed=5).drop("is_fraud").write_parquet(path)
    return path


@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_a_signal_during_streaming_predict_leaves_no_file(app_models, transactions, tmp_path, sig, code, suffix):
    out = tmp_path / f"scored{suffix}"
    process = subprocess.Popen(
        [sys.executable, "-m", "deepapps.apps.finance.fraud", "predict", "--model", str(app_models["fraud"]),
         "--out", str(out), "--chunk-size", "2000", str(transactions)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not list(tmp_path.glob(f".{out.name}.*")):
        time.sleep(0.02)  # until the output's temporary file exists: the write is under way
    assert list(tmp_path.glob(f".{out.name}.*")), "the write never started"
    time.sleep(0.3)
    process.send_signal(sig)
    _, err = process.communicate(timeout=60)
    assert process.returncode == code, err
    assert "Traceback" not in err and err.strip().splitlines()[-1] in ("deepapps: interrupted", "deepapps: terminated")
    assert list(tmp_path.iterdir()) == []
