"""Test helpers: synthetic images, ../shared lookup, and a real `deepapps serve` subprocess."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("DEEPAPPS_SHARED", REPO.parent / "shared"))
TINY = REPO / "apps" / "vision" / "configs" / "tiny.yaml"


def shared_path(*parts: str) -> Path:
    """A file under ../shared, or skip the test when it is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path


def make_image_folder(root: Path, classes: dict[str, tuple[int, int, int]], per_class: int = 16,
                      size: int = 24, seed: int = 0) -> Path:
    """One folder per class of noisy images whose mean colour is the class colour."""
    rng = np.random.default_rng(seed)
    for name, colour in classes.items():
        folder = root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            noise = rng.integers(-40, 40, (size, size, 3))
            pixels = np.clip(np.asarray(colour) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{name}_{i:02d}.png")
    return root


COLOURS = {"blue": (40, 60, 200), "green": (40, 190, 60), "red": (210, 40, 40)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`deepapps serve` in a subprocess on a free port. The access log is off unless asked for
    (`access_log=True`): nothing drains the stderr pipe during a test, and a full pipe blocks."""

    def __init__(self, model: Path, *options: str, python: str = sys.executable, access_log: bool = False):
        self.port = free_port()
        quiet = [] if access_log else ["--no-access-log"]
        self.process = subprocess.Popen(
            [python, "-m", "deepapps.core.cli", "serve", "--model", str(model), "--port", str(self.port), *quiet,
             *options],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if self.get("/readyz")[0] == 200:
                    return
            except OSError:
                time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"server did not become ready: {self.process.stderr.read()}")

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        conn.request(method, path, body, headers or {})
        response = conn.getresponse()
        data = response.read()
        conn.close()
        return response.status, data

    def get(self, path: str):
        return self.request("GET", path)

    def predict(self, payload: object, raw: bytes | None = None):
        body = raw if raw is not None else json.dumps(payload).encode()
        status, data = self.request("POST", "/v1/predict", body, {"content-type": "application/json"})
        return status, json.loads(data)

    def rss_kib(self) -> int:
        status = Path(f"/proc/{self.process.pid}/status").read_text()
        return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1])

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=30)


def assert_one_line_error(result: subprocess.CompletedProcess, *needles: str) -> None:
    assert result.returncode == 2, result.stderr
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("deepapps: error:")]
    assert len(errors) == 1, result.stderr
    for needle in needles:
        assert needle in errors[0]
