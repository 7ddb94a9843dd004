"""Hostile requests against real servers on loopback: each is answered 4xx/413/503 within a bound,
memory stays bounded, the server keeps serving good requests, and SIGTERM under load ends it promptly.

Bounds stated here: a hostile request is answered within 5 s (the servers run with --timeout-s 10);
server RSS stays under 1 GiB whatever is sent; SIGTERM under load exits within 10 s.
"""

from __future__ import annotations

import asyncio
import base64
import http.client
import io
import json
import signal
import subprocess
import sys
import threading
import time

import pytest
from PIL import Image

from deepapps.core.serving.batcher import BatchFailed, MicroBatcher, Overloaded
from tests.helpers import Server, free_port

RSS_BOUND_KIB = 1024 * 1024
ANSWER_S = 5.0


def png(width: int, height: int, colour=(200, 40, 40)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def claimed_png(width: int, height: int) -> bytes:
    """A small PNG whose header claims width x height pixels (its data is a few rows): what a
    decompression-bomb upload looks like to a server that reads the header first."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    rows = zlib.compress(b"\x00" * (1 + 3 * width) * 4)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", rows) + chunk(b"IEND", b""))


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def timed(server: Server, payload=None, raw: bytes | None = None) -> tuple[int, dict, float]:
    start = time.perf_counter()
    status, body = server.predict(payload, raw)
    return status, body, time.perf_counter() - start


@pytest.fixture(scope="module")
def vision(app_models):
    server = Server(app_models["vision"], "--max-body-mb", "1", "--timeout-s", "10", "--max-concurrency", "8")
    yield server
    server.stop()


GOOD = {"instances": [{"image": b64(png(24, 24))}]}


def still_serving(server: Server) -> None:
    status, body = server.predict(GOOD)
    assert status == 200 and "label" in body["predictions"][0]
    assert server.get("/readyz")[0] == 200 and server.get("/healthz")[0] == 200
    assert server.rss_kib() < RSS_BOUND_KIB


@pytest.mark.parametrize("name, payload, raw, status, needle", [
    ("JSON nested 5000 deep", None, b'{"instances": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "malformed JSON"),
    ("a string where an item goes", {"instances": ["abc"]}, None, 422, "expected the bytes of an image"),
    ("a number where an item goes", {"instances": [7]}, None, 422, "instance 0"),
    ("four 1 x 200000 strips", {"instances": [{"image": b64(png(1, 200_000))}] * 4}, None, 422, "too elongated"),
    ("a 13000 x 13000 image", {"instances": [{"image": b64(claimed_png(13_000, 13_000))}]}, None, 422,
     "over the limit"),
    ("too many instances", {"instances": [{"image": "x"}] * 300}, None, 413, "over the limit of 256"),
])
def test_hostile_requests_get_4xx_quickly_and_the_server_goes_on(vision, name, payload, raw, status, needle):
    got, body, seconds = timed(vision, payload, raw)
    assert got == status and needle in body["error"], (name, got, body)
    assert seconds < ANSWER_S, name
    still_serving(vision)


def test_decoding_runs_off_the_event_loop(vision):
    """While a request of slow items decodes, the health probe answers at once."""
    heavy = {"instances": [{"image": b64(png(4_000, 4_000))}] * 3}  # 16 MP each: under the cap, slow to decode
    thread = threading.Thread(target=lambda: vision.predict(heavy))
    thread.start()
    time.sleep(0.3)
    start = time.perf_counter()
    assert vision.get("/healthz")[0] == 200
    assert time.perf_counter() - start < 0.5
    thread.join(timeout=60)
    still_serving(vision)


def test_a_chunked_body_is_counted_while_it_streams(vision):
    """A 64 MiB chunked upload to a 1 MiB limit: 413 after about 1 MiB, memory flat."""
    rss_before = vision.rss_kib()
    conn = http.client.HTTPConnection("127.0.0.1", vision.port, timeout=30)

    def chunks():
        for _ in range(1024):
            yield b"x" * 65536

    status = None
    try:
        conn.request("POST", "/v1/predict", body=chunks(), headers={"content-type": "application/json"},
                     encode_chunked=True)
        response = conn.getresponse()
        status = response.status
        assert "over the 1 MiB limit" in json.loads(response.read())["error"]
    except (BrokenPipeError, ConnectionResetError):
        status = 413  # the server answered and closed while the client was still sending
    finally:
        conn.close()
    assert status == 413
    assert vision.rss_kib() - rss_before < 100 * 1024
    still_serving(vision)


def test_route_labels_stay_few_whatever_paths_are_asked(vision):
    for i in range(300):
        assert vision.get(f"/probe/{i}")[0] == 404
    metrics = vision.get("/metrics")[1].decode()
    series = [line for line in metrics.splitlines() if line.startswith("deepapps_requests_total")]
    assert len(series) < 20 and 'endpoint="other",status="404"' in metrics


def test_an_out_of_range_timestamp_is_a_422_and_the_forecaster_keeps_serving(app_models):
    server = Server(app_models["forecast"], "--timeout-s", "10")
    try:
        meta = json.loads(server.get("/v1/metadata")[1])
        look_back = meta["preprocess"]["look_back"]
        history = [[350.0]] * look_back
        status, body, seconds = timed(server, {"instances": [{"history": history, "last_timestamp": "-290000-01-01"}]})
        assert status == 422 and "outside the years" in body["error"] and seconds < ANSWER_S
        good = {"instances": [{"history": history, "last_timestamp": "2001-06-01T00:00:00"}]}
        status, body = server.predict(good)
        assert status == 200 and len(body["predictions"][0]["timestamps"]) == meta["preprocess"]["horizon"]
        assert server.get("/readyz")[0] == 200
    finally:
        server.stop()


@pytest.mark.parametrize("app, item, needle", [
    ("fraud", None, "expected a number, a text or null, got list"),
    ("nlp", {"text": "\ud800 broken"}, "not valid Unicode"),
    ("healthcare", {"image": 42}, "expected"),
])
def test_malformed_items_of_each_app_are_4xx_naming_the_item(app_models, app, item, needle):
    server = Server(app_models[app])
    try:
        if app == "fraud":  # a real row, with a list where a category goes
            meta = json.loads(server.get("/v1/metadata")[1])
            row = {c: 1.0 for c in meta["preprocess"]["numeric"]} | {c: "x" for c in meta["preprocess"]["categorical"]}
            good, item = row, row | {meta["preprocess"]["categorical"][0]: ["a", "b"]}
        else:
            good = {"text": "a great product"} if app == "nlp" else {"image": b64(png(32, 32, (90, 90, 90)))}
        status, body = server.predict({"instances": [good, item]})
        assert status == 200, body
        assert "error" not in body["predictions"][0] and needle in body["predictions"][1]["error"]
        assert "instance 1" in body["predictions"][1]["error"]
        status, body = server.predict({"instances": [item]})
        assert status == 422 and needle in body["error"]
    finally:
        server.stop()


def test_overload_is_shed_with_503_and_retry_after(app_models):
    server = Server(app_models["vision"], "--max-concurrency", "1", "--max-wait-ms", "400")
    try:
        results = []
        threads = [threading.Thread(target=lambda: results.append(server.request(
            "POST", "/v1/predict", json.dumps(GOOD).encode(), {"content-type": "application/json"})))
            for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        statuses = sorted(status for status, _ in results)
        assert 200 in statuses and 503 in statuses, statuses
        assert all(s in (200, 503) for s in statuses)
        rejected = next(json.loads(body) for status, body in results if status == 503)
        assert "server busy" in rejected["error"]
    finally:
        server.stop()


def test_bearer_token_and_no_docs(app_models, tmp_path):
    token = tmp_path / "token"
    token.write_text("s3cret\n")
    server = Server(app_models["vision"], "--auth-token-file", str(token), "--no-docs", access_log=True)
    try:
        body = json.dumps(GOOD).encode()
        assert server.request("POST", "/v1/predict", body, {"content-type": "application/json"})[0] == 401
        wrong = {"content-type": "application/json", "authorization": "Bearer nope"}
        assert server.request("POST", "/v1/predict", body, wrong)[0] == 401
        right = {"content-type": "application/json", "authorization": "Bearer s3cret"}
        assert server.request("POST", "/v1/predict", body, right)[0] == 200
        assert server.get("/healthz")[0] == 200 and server.get("/readyz")[0] == 200  # probes stay open
        authorised = {"authorization": "Bearer s3cret"}
        assert server.request("GET", "/docs", None, authorised)[0] == 404
        assert server.request("GET", "/openapi.json", None, authorised)[0] == 404
    finally:
        server.stop()
    log = server.process.stderr.read()
    assert "POST /v1/predict 401" in log and "POST /v1/predict 200" in log and "s3cret" not in log


def test_a_taken_port_is_one_line_and_exit_2(app_models):
    port = free_port()
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        result = subprocess.run([sys.executable, "-m", "deepapps.core.cli", "serve", "--model",
                                 str(app_models["vision"]), "--port", str(port)], capture_output=True, text=True,
                                timeout=60)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert f"--port {port}: cannot listen there" in result.stderr


def test_sigterm_under_load_exits_within_10_s_answering_in_flight_requests(app_models):
    server = Server(app_models["vision"], "--max-wait-ms", "50")
    statuses, stop = [], threading.Event()

    def client():
        while not stop.is_set():
            try:
                statuses.append(server.predict(GOOD)[0])
            except OSError:
                return  # the server has closed its socket

    threads = [threading.Thread(target=client) for _ in range(8)]
    for t in threads:
        t.start()
    time.sleep(1.5)
    start = time.perf_counter()
    server.process.send_signal(signal.SIGTERM)
    code = server.process.wait(timeout=10)
    elapsed = time.perf_counter() - start
    stop.set()
    for t in threads:
        t.join(timeout=10)
    assert code in (0, -signal.SIGTERM) and elapsed < 10
    assert statuses and set(statuses) <= {200, 503}, set(statuses)  # answered, or refused while stopping
    assert "Traceback" not in server.process.stderr.read()


# --- the batch worker itself -----------------------------------------------------------------


class RustPanic(BaseException):
    """What polars raises on a panic: not an Exception."""


def test_the_worker_survives_a_batch_that_raises_anything():
    calls = []

    def run(items):
        calls.append(list(items))
        if "boom" in items:
            raise RustPanic("overflow")
        return [x.upper() for x in items]

    async def scenario():
        batcher = MicroBatcher(run, max_batch=4, max_wait_ms=1)
        await batcher.start()
        with pytest.raises(BatchFailed, match="RustPanic: overflow"):
            await batcher.submit(["boom"])
        assert batcher.alive
        assert await batcher.submit(["a", "b"]) == ["A", "B"]
        await batcher.stop(1.0)
        assert not batcher.alive
        with pytest.raises(Overloaded):
            await batcher.submit(["c"])

    asyncio.run(scenario())


def test_a_full_queue_refuses_and_stop_is_bounded():
    release = threading.Event()

    def slow(items):
        release.wait(5)
        return items

    async def scenario():
        batcher = MicroBatcher(slow, max_batch=1, max_wait_ms=0, max_queue=2)
        await batcher.start()
        first = asyncio.ensure_future(batcher.submit([1]))
        await asyncio.sleep(0.05)  # the worker holds item 1
        queued = asyncio.ensure_future(batcher.submit([2, 3]))
        await asyncio.sleep(0.05)
        with pytest.raises(Overloaded, match="limit 2"):
            await batcher.submit([4])
        start = time.perf_counter()
        await batcher.stop(0.5)
        assert time.perf_counter() - start < 2.0
        release.set()
        for future in (first, queued):
            with pytest.raises((Overloaded, asyncio.CancelledError)):
                await future

    asyncio.run(scenario())
