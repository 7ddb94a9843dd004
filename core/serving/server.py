"""`deepapps serve`: one HTTP server for every app's ONNX model (FastAPI + uvicorn, no torch).

FastAPI because it gives request validation, OpenAPI and async handlers for free, and uvicorn
because it is the ASGI server FastAPI is built and tested with (graceful shutdown included).

Endpoints: POST /v1/predict (JSON `{"instances": [...]}` or multipart files), GET /v1/metadata,
GET /healthz, GET /readyz, GET /metrics (Prometheus), GET /docs and /openapi.json.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import dataclass

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import UploadFile  # what request.form() holds
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from deepapps.core.errors import DataError
from deepapps.core.registry import get_app
from deepapps.core.runtime.session import OnnxModel, load_model
from deepapps.core.serving.batcher import MicroBatcher


class MalformedRequest(DataError):
    """A body that is not JSON at all (HTTP 400; a wrong structure is 422)."""


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
    timeout_s: float = 30.0


class Metrics:
    """Prometheus metrics of one server."""

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


def create_app(cfg: ServeConfig) -> FastAPI:
    """The ASGI app: loads the model once, warms it up, then serves."""
    model = load_model(cfg.model, cfg.provider)
    runtime = get_app(model.app).load_serving()
    metrics = Metrics()
    batcher = MicroBatcher(lambda items: runtime.run_items(model, items), cfg.max_batch, cfg.max_wait_ms,
                           on_batch=metrics.batch.observe)
    state = {"ready": False}

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        await batcher.start()
        state["ready"] = True
        print(f"deepapps serve: {model.app} model {cfg.model}; {model.provider_note}", file=sys.stderr, flush=True)
        yield
        state["ready"] = False
        await batcher.stop()

    app = FastAPI(title=f"deepapps {model.app}", version=model.contract.version or "?", lifespan=lifespan)

    @app.middleware("http")
    async def body_limit(request: Request, call_next):
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > cfg.max_body_mb * 2**20:
            metrics.requests.labels(request.url.path, "413").inc()
            return _error(413, f"request body of {int(length)} bytes is over the {cfg.max_body_mb:g} MiB limit")
        return await call_next(request)

    @app.post("/v1/predict")
    async def predict(request: Request) -> JSONResponse:
        start = time.perf_counter()
        response = await _predict(request, model, runtime, batcher, metrics, cfg)
        metrics.latency.observe(time.perf_counter() - start)
        metrics.requests.labels("/v1/predict", str(response.status_code)).inc()
        return response

    @app.get("/v1/metadata")
    async def metadata() -> dict:
        hidden = ("train", "export")  # provenance and export details stay in the file
        return {k: v for k, v in model.meta.items() if k not in hidden} | {"provider": model.provider}

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        ready = state["ready"]
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return app


async def _predict(request: Request, model: OnnxModel, runtime, batcher: MicroBatcher, metrics: Metrics,
                   cfg: ServeConfig) -> JSONResponse:
    body = await request.body()
    if len(body) > cfg.max_body_mb * 2**20:
        return _error(413, f"request body of {len(body)} bytes is over the {cfg.max_body_mb:g} MiB limit")
    try:
        items = await _items(request, body)
    except MalformedRequest as exc:
        return _error(400, str(exc))
    except DataError as exc:
        return _error(422, str(exc))
    if not items:
        return _error(422, "no instances in the request")
    if len(items) > cfg.max_items:
        return _error(413, f"{len(items)} instances is over the limit of {cfg.max_items}")
    decoded, errors = [], {}
    for i, item in enumerate(items):
        try:
            decoded.append((i, runtime.decode_item(model, item)))
        except DataError as exc:
            errors[i] = f"instance {i}: {exc}"
    metrics.item_errors.inc(len(errors))
    try:
        results = await asyncio.wait_for(batcher.submit([x for _, x in decoded]), cfg.timeout_s)
    except TimeoutError:
        return _error(504, f"prediction took longer than {cfg.timeout_s:g} s")
    predictions = [{"error": errors[i]} if i in errors else {} for i in range(len(items))]
    for (i, _), result in zip(decoded, results):
        predictions[i] = result
    if not decoded:
        return JSONResponse({"error": next(iter(errors.values())), "predictions": predictions}, status_code=422)
    return JSONResponse({"predictions": predictions})


async def _items(request: Request, body: bytes) -> list:
    """JSON `{"instances": [...]}`, or the files of a multipart upload (as bytes)."""
    content_type = request.headers.get("content-type", "")
    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        return [await f.read() for _, f in form.multi_items() if isinstance(f, UploadFile)]
    try:
        payload = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise MalformedRequest("malformed JSON body") from None
    if not isinstance(payload, dict) or not isinstance(payload.get("instances"), list):
        raise DataError('expected a JSON object {"instances": [...]}')
    return payload["instances"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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
    parser.add_argument("--max-body-mb", dest="max_body_mb", type=float, default=16.0)
    parser.add_argument("--max-items", dest="max_items", type=int, default=256, help="most instances per request")
    parser.add_argument("--timeout-s", dest="timeout_s", type=float, default=30.0)
    cfg = ServeConfig(**vars(parser.parse_args(argv)))
    app = create_app(cfg)
    uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning", timeout_graceful_shutdown=30)
    return 0
