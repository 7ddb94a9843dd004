"""The real server on loopback, in a subprocess, over HTTP."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from deepapps.core.serving.loadgen import run_load
from tests.helpers import Server


@pytest.fixture(scope="module")
def server(tiny_run):
    s = Server(tiny_run / "model.onnx", "--max-batch", "16", "--max-wait-ms", "10", "--max-body-mb", "1")
    yield s
    s.stop()


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="module")
def red_png(image_folder) -> Path:
    return sorted((image_folder / "red").glob("*.png"))[0]


def test_metadata_health_and_openapi(server):
    status, data = server.get("/v1/metadata")
    meta = json.loads(data)
    assert status == 200 and meta["app"] == "vision" and meta["labels"] == ["blue", "green", "red"]
    assert meta["inputs"][0]["name"] == "pixels" and meta["provider"] == "CPUExecutionProvider"
    assert server.get("/healthz")[0] == 200 and server.get("/readyz")[0] == 200
    status, data = server.get("/openapi.json")
    assert status == 200 and "/v1/predict" in json.loads(data)["paths"]
    assert "torch" not in Path(f"/proc/{server.process.pid}/maps").read_text()  # no libtorch loaded


def test_predict_json_matches_the_cli_model(server, tiny_run, red_png):
    from deepapps.core.runtime.image_classification import decode_item, run_items
    from deepapps.core.runtime.session import load_model

    status, body = server.predict({"instances": [{"image": b64(red_png)}, {"image": b64(red_png)}]})
    assert status == 200 and len(body["predictions"]) == 2
    model = load_model(tiny_run / "model.onnx", "cpu")
    expected = run_items(model, [decode_item(model, red_png.read_bytes())])[0]
    got = body["predictions"][0]
    assert got["label"] == expected["label"] == "red"
    assert got["probabilities"] == pytest.approx(expected["probabilities"], abs=1e-5)


def test_predict_multipart_upload(server, red_png):
    boundary = "deepappsboundary"
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x.png\"\r\n"
            f"Content-Type: image/png\r\n\r\n").encode() + red_png.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    status, data = server.request("POST", "/v1/predict", body,
                                  {"content-type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and json.loads(data)["predictions"][0]["label"] == "red"


@pytest.mark.parametrize("payload, raw, status, message", [
    (None, b"{not json", 400, "malformed JSON"),
    ({"rows": []}, None, 422, "instances"),
    ({"instances": []}, None, 422, "no instances"),
    ({"instances": [{"img": "x"}]}, None, 422, "expected {\"image\""),
    ({"instances": [{"image": "!!!"}]}, None, 422, "not valid base64"),
    ({"instances": [{"image": base64.b64encode(b"\x89PNG\r\n\x1a\n broken").decode()}]}, None, 422, "image"),
    (None, b"x" * (2 * 2**20), 413, "over the 1 MiB limit"),
])
def test_bad_requests_get_4xx_and_the_server_keeps_serving(server, red_png, payload, raw, status, message):
    got, body = server.predict(payload, raw)
    assert got == status and message in body["error"]
    assert server.predict({"instances": [{"image": b64(red_png)}]})[0] == 200


def test_one_bad_item_does_not_spoil_the_batch(server, red_png):
    status, body = server.predict({"instances": [{"image": b64(red_png)}, {"image": "@@"}]})
    assert status == 200
    assert body["predictions"][0]["label"] == "red" and "instance 1" in body["predictions"][1]["error"]


def test_concurrent_load_is_micro_batched_without_errors(server, red_png):
    body = json.dumps({"instances": [{"image": b64(red_png)}]}).encode()
    run_load(f"http://127.0.0.1:{server.port}/v1/predict", body, clients=4, seconds=1.0)  # warm up
    rss_before = server.rss_kib()
    result = run_load(f"http://127.0.0.1:{server.port}/v1/predict", body, clients=16, seconds=4.0)
    print(result)
    assert result.errors == 0 and result.requests > 50
    assert server.rss_kib() - rss_before < 50_000  # flat memory: under 50 MiB growth
    metrics = server.get("/metrics")[1].decode()
    count = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("deepapps_batch_size_count")))
    total = float(next(l.split()[-1] for l in metrics.splitlines() if l.startswith("deepapps_batch_size_sum")))
    assert total / count > 1.5  # concurrent requests shared ONNX Runtime calls
    assert 'deepapps_requests_total{endpoint="/v1/predict",status="200"}' in metrics


def test_sigterm_finishes_in_flight_requests(tiny_run, red_png):
    server = Server(tiny_run / "model.onnx", "--max-wait-ms", "300")  # requests wait 300 ms for company
    import threading

    results = []
    thread = threading.Thread(target=lambda: results.append(server.predict({"instances": [{"image": b64(red_png)}]})))
    thread.start()
    time.sleep(0.1)  # the request is in flight, waiting in the batcher
    server.process.send_signal(signal.SIGTERM)
    thread.join(timeout=30)
    # uvicorn shuts down gracefully, then re-raises the signal: exit status -SIGTERM
    assert server.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Traceback" not in server.process.stderr.read()
    assert results and results[0][0] == 200 and results[0][1]["predictions"][0]["label"] == "red"


def test_serve_refuses_a_bad_model_with_one_line(tmp_path):
    bad = tmp_path / "m.onnx"
    bad.write_bytes(b"nonsense")
    result = subprocess.run([sys.executable, "-m", "deepapps.core.cli", "serve", "--model", str(bad)],
                            capture_output=True, text=True, env=os.environ | {"PYTHONWARNINGS": "ignore"})
    assert result.returncode == 2 and "not a valid ONNX model" in result.stderr and "Traceback" not in result.stderr
