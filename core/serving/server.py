"""`deepapps serve`: one HTTP server for every app's ONNX model (FastAPI + uvicorn, no torch).

FastAPI because it gives request validation, OpenAPI and async handlers for free, and uvicorn
because it is the ASGI server FastAPI is built and tested with (graceful shutdown included).

Endpoints: POST /v1/predict (JSON `{"instances": [...]}` or multipart files), GET /v1/metadata,
GET /healthz, GET /readyz, GET /metrics (Prometheus), GET /docs and /openapi.json.

What a production endpoint needs beyond that, and where it is:
- bounded work per request: the body is counted while it streams in (chunked uploads included),
  decoding runs off the event loop with pixel caps (core.runtime.images), the whole request has
  one deadline (`--timeout-s`), and every bad item is a 4xx naming it;
- bounded work in total: at most `--max-concurrency` requests are handled at once and at most
  `--max-queue` items wait for ONNX Runtime; beyond that a request gets 503 with Retry-After;
- a batch worker that survives any failure of one batch, and /healthz and /readyz that fail
  when it cannot serve; SIGTERM lets in-flight requests finish, within `--shutdown-s`;
- optional bearer-token auth, /docs that can be turned off, one access-log line per request
  (request id, method, route, status, latency; never a body).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import os
import socket
import sys
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, fields, is_dataclass
from pathlib import Path

import numpy as np
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from starlette.datastructures import UploadFile  # what request.form() holds

from deepapps.core.errors import ConfigError, DataError
from deepapps.core.registry import get_app
from deepapps.core.runtime.interface import Serving
from deepapps.core.runtime.session import OnnxModel, load_model
from deepapps.core.serving.batcher import BatchFailed, MicroBatcher, Overloaded

TOKEN_ENV = "DEEPAPPS_AUTH_TOKEN"
ROUTES = ("/v1/predict", "/v1/metadata", "/healthz", "/readyz", "/metrics", "/docs", "/openapi.json")
OPEN_ROUTES = ("/healthz", "/readyz", "/metrics")  # probes and scrapers need no token
access_log = logging.getLogger("deepapps.access")


@dataclass
class ServeConfig:
    """Server settings (the `deepapps serve` options)."""

    model: str
    host: str = "127.0.0.1"
    port: int = 8000
    provider: str = "auto"
    max_batch: int = 32
    max_wait_ms: float = 5.0
    max_body_mb: float = 16.0
    max_items: int = 256
    max_decoded_mb: float = 256.0
    timeout_s: float = 30.0
    max_concurrency: int = 64
    max_queue: int = 1024
    decode_threads: int = 2
    shutdown_s: float = 8.0
    auth_token: str | None = None
    docs: bool = True
    access_log: bool = True


class Metrics:
    """Prometheus metrics of one server; labels are route templates, so their number is fixed."""

    def __init__(self):
        self.registry = CollectorRegistry()
        self.requests = Counter("deepapps_requests", "HTTP requests by endpoint and status",
                                ["endpoint", "status"], registry=self.registry)
        self.latency = Histogram("deepapps_request_seconds", "Latency of /v1/predict", registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
        self.batch = Histogram("deepapps_batch_size", "Items per ONNX Runtime call", registry=self.registry,
                               buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256))
        self.item_errors = Counter("deepapps_item_errors", "Request items rejected as bad input",
                                   registry=self.registry)
        self.shed = Counter("deepapps_shed", "Requests refused with 503 because the server was full",
                            registry=self.registry)
        self.in_flight = Gauge("deepapps_in_flight", "Requests being handled", registry=self.registry)


class _TooLarge(Exception):
    """The request body (or what it decodes to) is over a limit: HTTP 413."""


def create_app(cfg: ServeConfig) -> FastAPI:
    """The ASGI app: loads the model once, then serves."""
    model = load_model(cfg.model, cfg.provider)
    runtime = get_app(model.app).load_serving()
    metrics = Metrics()
    batcher = MicroBatcher(lambda items: runtime.run_items(model, items), cfg.max_batch, cfg.max_wait_ms,
                           cfg.max_queue, on_batch=metrics.batch.observe)
    decoder = ThreadPoolExecutor(max(1, cfg.decode_threads), thread_name_prefix="deepapps-decode")
    state = {"ready": False, "in_flight": 0}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        state["ready"] = True
        print(f"deepapps serve: {model.app} model {cfg.model}; {model.provider_note}", file=sys.stderr, flush=True)
        yield
        state["ready"] = False
        await batcher.stop(cfg.shutdown_s / 2)
        decoder.shutdown(wait=False, cancel_futures=True)

    docs = {} if cfg.docs else {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(title=f"deepapps {model.app}", version=model.contract.version or "?", lifespan=lifespan, **docs)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        """Request id, bearer token, per-route metrics and the access log, around every request."""
        request_id = request.headers.get("x-request-id", "")[:64] or uuid.uuid4().hex[:16]
        route = request.url.path if request.url.path in ROUTES else "other"
        start = time.perf_counter()
        if cfg.auth_token and route not in OPEN_ROUTES and not _authorised(request, cfg.auth_token):
            response = _error(401, "missing or wrong bearer token (Authorization: Bearer ...)")
            response.headers["WWW-Authenticate"] = "Bearer"
        else:
            response = await call_next(request)
        response.headers["X-Request-ID"] = request_id
        metrics.requests.labels(route, str(response.status_code)).inc()
        if cfg.access_log:
            access_log.info("%s %s %s %d %.1fms", request_id, request.method, route, response.status_code,
                            1000 * (time.perf_counter() - start))
        return response

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        if state["in_flight"] >= cfg.max_concurrency:
            metrics.shed.inc()
            return _busy(f"{state['in_flight']} requests in flight (limit {cfg.max_concurrency})")
        state["in_flight"] += 1
        metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            return await asyncio.wait_for(_predict(request, model, runtime, batcher, decoder, metrics, cfg),
                                          cfg.timeout_s)
        except TimeoutError:
            return _error(504, f"the request took longer than {cfg.timeout_s:g} s")
        except Overloaded as exc:
            metrics.shed.inc()
            return _busy(str(exc))
        finally:
            state["in_flight"] -= 1
            metrics.in_flight.dec()
            metrics.latency.observe(time.perf_counter() - start)

    @app.get("/v1/metadata")
    async def metadata() -> dict:
        hidden = ("train", "export")  # provenance and export details stay in the file
        return {k: v for k, v in model.meta.items() if k not in hidden} | {"provider": model.provider}

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        alive = batcher.alive or not state["ready"]  # before start-up and after shutdown the worker is not expected
        return JSONResponse({"status": "ok" if alive else "batch worker stopped"}, status_code=200 if alive else 503)

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = state["ready"] and batcher.alive
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _predict(request: Request, model: OnnxModel, runtime: Serving, batcher: MicroBatcher,
                   decoder: ThreadPoolExecutor, metrics: Metrics, cfg: ServeConfig) -> JSONResponse:
    try:
        items = await _items(request, int(cfg.max_body_mb * 2**20), cfg.max_items)
    except _TooLarge as exc:
        return _error(413, str(exc))
    except MalformedRequest as exc:
        return _error(400, str(exc))
    except DataError as exc:
        return _error(422, str(exc))
    if not items:
        return _error(422, "no instances in the request")
    loop = asyncio.get_running_loop()
    decoded, errors = await loop.run_in_executor(
        decoder, _decode_all, runtime, model, items, int(cfg.max_decoded_mb * 2**20))
    metrics.item_errors.inc(len(errors))
    try:
        results = await batcher.submit([x for _, x in decoded]) if decoded else []
    except BatchFailed as exc:
        return _error(500, f"prediction failed ({exc}); the server goes on")
    predictions = [{"error": errors[i]} if i in errors else {} for i in range(len(items))]
    for (i, _), result in zip(decoded, results):
        predictions[i] = result
    if not decoded:
        status = 413 if all(e.endswith(_OVER) for e in errors.values()) else 422
        return JSONResponse({"error": next(iter(errors.values())), "predictions": predictions}, status_code=status)
    return JSONResponse({"predictions": predictions})


class MalformedRequest(DataError):
    """A body that is not JSON at all (HTTP 400; a wrong structure is 422)."""


_OVER = "over the request's decoded-size limit"


def _decode_all(runtime: Serving, model: OnnxModel, items: list, budget: int) -> tuple[list, dict]:
    """(decoded (index, input) pairs, errors by index), in a worker thread. A bad item of any kind
    is an error for that item only; once the decoded items pass `budget` bytes the rest are refused."""
    decoded, errors, used = [], {}, 0
    for i, item in enumerate(items):
        if used > budget:
            errors[i] = f"instance {i}: {_OVER} ({budget / 2**20:g} MiB)"
            continue
        try:
            value = runtime.decode_item(model, item)
        except DataError as exc:
            errors[i] = f"instance {i}: {exc}"
            continue
        except (KeyboardInterrupt, SystemExit):
            raise
        except BaseException as exc:  # noqa: BLE001 - hostile input may break a library anywhere (even a Rust panic)
            errors[i] = f"instance {i}: not a valid input ({type(exc).__name__})"
            continue
        used += _nbytes(value)
        decoded.append((i, value))
    return decoded, errors


def _nbytes(value: object) -> int:
    """About the bytes a decoded item holds: its arrays, and the containers holding them."""
    if isinstance(value, np.ndarray):
        return value.nbytes
    if isinstance(value, (bytes, str)):
        return len(value)
    if isinstance(value, (int, float)):
        return 8
    if isinstance(value, dict):
        return sum(_nbytes(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return sum(_nbytes(v) for v in value)
    if is_dataclass(value):
        return sum(_nbytes(getattr(value, f.name)) for f in fields(value))
    return 0


async def _items(request: Request, limit: int, max_items: int) -> list:
    """JSON `{"instances": [...]}`, or the files of a multipart upload (as bytes), from a body read
    while counting: more than `limit` bytes, declared or streamed (chunked), stops the read."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _TooLarge(f"request body of {int(declared)} bytes is over the {limit / 2**20:g} MiB limit")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _TooLarge(f"request body of more than {limit} bytes is over the {limit / 2**20:g} MiB limit")
        chunks.append(chunk)
    body = b"".join(chunks)
    if request.headers.get("content-type", "").startswith("multipart/form-data"):
        async def replay() -> dict:
            return {"type": "http.request", "body": body, "more_body": False}

        try:
            form = await Request(request.scope, replay).form(max_files=max_items, max_fields=max_items)
        except Exception as exc:  # noqa: BLE001 - Starlette raises several types for broken multipart bodies
            raise MalformedRequest(f"malformed multipart body ({type(exc).__name__})") from None
        items = [await f.read() for _, f in form.multi_items() if isinstance(f, UploadFile)]
    else:
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError):  # not JSON, not UTF-8, or nested beyond the parser's depth
            raise MalformedRequest("malformed JSON body") from None
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
            raise DataError('expected a JSON object {"instances": [...]}')
        items = payload["instances"]
    if len(items) > max_items:
        raise _TooLarge(f"{len(items)} instances is over the limit of {max_items}")
    return items


def _authorised(request: Request, token: str) -> bool:
    scheme, _, given = request.headers.get("authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), token.encode())


def _busy(reason: str) -> JSONResponse:
    response = _error(503, f"server busy: {reason}; retry shortly")
    response.headers["Retry-After"] = "1"
    return response


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _token(path: str | None) -> str | None:
    """The bearer token from --auth-token-file, else from $DEEPAPPS_AUTH_TOKEN, else None (no auth)."""
    if path:
        try:
            token = Path(path).read_text().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--auth-token-file {path}: cannot read ({type(exc).__name__})") from None
        if not token:
            raise ConfigError(f"--auth-token-file {path}: empty")
        return token
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _bind(host: str, port: int) -> socket.socket:
    """The listening socket, so that a taken port is a one-line error (exit 2) before start-up."""
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:
        raise ConfigError(f"--host {host} --port {port}: cannot listen there ({exc.strerror or exc})") from None
    return sock


def main(argv: list[str]) -> int:
    """`deepapps serve --model FILE.onnx [options]`."""
    import uvicorn
    from deepapps.core.cli import OneLineParser

    parser = OneLineParser(prog="deepapps serve", description="serve a deepapps ONNX model over HTTP",
                           allow_abbrev=False)
    parser.add_argument("--model", required=True, help="deepapps .onnx file")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--provider", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--max-batch", "--max_batch", dest="max_batch", type=int, default=32,
                        help="most items per ONNX Runtime call (1 turns micro-batching off)")
    parser.add_argument("--max-wait-ms", "--max_wait_ms", dest="max_wait_ms", type=float, default=5.0,
                        help="longest an item waits for others to share its call")
    parser.add_argument("--max-body-mb", dest="max_body_mb", type=float, default=16.0,
                        help="largest request body, counted as it streams in (413 beyond)")
    parser.add_argument("--max-items", dest="max_items", type=int, default=256, help="most instances per request")
    parser.add_argument("--max-decoded-mb", dest="max_decoded_mb", type=float, default=256.0,
                        help="most memory the decoded instances of one request may take (413 beyond)")
    parser.add_argument("--timeout-s", dest="timeout_s", type=float, default=30.0,
                        help="deadline of a whole request: reading, decoding and predicting (504 beyond)")
    parser.add_argument("--max-concurrency", dest="max_concurrency", type=int, default=64,
                        help="requests handled at once; more get 503 with Retry-After")
    parser.add_argument("--max-queue", dest="max_queue", type=int, default=1024,
                        help="items waiting for ONNX Runtime at once; more get 503 with Retry-After")
    parser.add_argument("--decode-threads", dest="decode_threads", type=int, default=2,
                        help="threads decoding request items (images, DICOM, texts) off the event loop")
    parser.add_argument("--shutdown-s", dest="shutdown_s", type=float, default=8.0,
                        help="on SIGTERM, time given to in-flight requests before the server exits")
    parser.add_argument("--auth-token-file", dest="auth_token_file",
                        help=f"require `Authorization: Bearer <token>` on /v1/*; default: ${TOKEN_ENV} when set")
    parser.add_argument("--no-docs", dest="docs", action="store_false", help="turn off /docs and /openapi.json")
    parser.add_argument("--no-access-log", dest="access_log", action="store_false",
                        help="turn off the access log (one line per request on stderr)")
    args = vars(parser.parse_args(argv))
    for name in ("max_batch", "max_items", "max_concurrency", "max_queue", "decode_threads"):
        if args[name] < 1:
            raise ConfigError(f"--{name.replace('_', '-')} {args[name]}: must be at least 1")
    for name in ("max_wait_ms", "max_body_mb", "max_decoded_mb", "timeout_s", "shutdown_s"):
        if not args[name] > 0 and not (name == "max_wait_ms" and args[name] == 0):
            raise ConfigError(f"--{name.replace('_', '-')} {args[name]}: must be positive")
    token = _token(args.pop("auth_token_file"))
    cfg = ServeConfig(**args, auth_token=token)
    sock = _bind(cfg.host, cfg.port)
    app = create_app(cfg)
    if cfg.access_log:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(asctime)s access %(message)s"))
        access_log.addHandler(handler)
        access_log.setLevel(logging.INFO)
        access_log.propagate = False
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=cfg.shutdown_s))
    server.run(sockets=[sock])
    return 0
