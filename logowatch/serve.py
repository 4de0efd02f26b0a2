"""``logowatch serve``: the detector as an authenticated HTTP batch API (Starlette + uvicorn).

``POST /v1/classify`` takes up to ``--max-images`` images (URLs, fetched only through the
SSRF-safe fetcher, or base64 bytes) and answers per image and brand. Every request's images go
into one ``logowatch.scoring.Scorer``, so concurrent requests share the model's micro-batches.
``GET /v1/models`` describes the bundle; ``/healthz``, ``/readyz`` and ``/metrics`` are for
the operator. Every refusal is a JSON error (docs/api.md). SIGTERM stops accepting
connections, finishes the requests in flight, then exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import json
import logging
import signal
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logowatch import keys
from logowatch.commands import _port, _positive, add_scoring_flags, start_scorer
from workers import config
from workers.errors import WorkerError

log = logging.getLogger(__name__)
DEFAULT_PORT = 8751


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("serve", help="serve the model over an authenticated HTTP batch API",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_scoring_flags(p, max_wait_ms=50, fetch_workers=8)
    p.add_argument("--host", default=config.env("LOGOWATCH_SERVE_HOST", "127.0.0.1"),
                   help="address to bind (env LOGOWATCH_SERVE_HOST; default 127.0.0.1)")
    p.add_argument("--port", type=_port,
                   default=config.env("LOGOWATCH_SERVE_PORT", str(DEFAULT_PORT)),
                   help=f"port (env LOGOWATCH_SERVE_PORT; default {DEFAULT_PORT})")
    p.add_argument("--keys-file", type=Path, default=keys.default_file(),
                   help="API keys (`logowatch keys add NAME`); env LOGOWATCH_KEYS_FILE. Keys "
                   "in env LOGOWATCH_API_KEYS (comma-separated) are accepted too")
    p.add_argument("--max-images", type=_positive, default=32,
                   help="images per request (default 32)")
    p.add_argument("--max-body-bytes", type=_positive, default=32 * 1024 * 1024,
                   help="request body size (default 32 MiB)")
    p.add_argument("--rate-limit", type=_per_minute, default=600.0,
                   help="images per minute per key, with a burst of as many (default 600)")
    p.add_argument("--max-queue", type=_positive, default=256,
                   help="images admitted and not yet scored, all clients together; beyond "
                   "it requests get 503 (default 256)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish the requests in flight on SIGTERM (default 30)")
    p.set_defaults(func=run_serve)


def _per_minute(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be above 0")
    return value


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.headers = status, code, headers or {}


@dataclass
class Limits:
    max_images: int = 32
    max_body_bytes: int = 32 * 1024 * 1024
    max_image_bytes: int = 20 * 1024 * 1024
    rate_per_minute: float = 600.0


@dataclass
class RateLimiter:
    """A token bucket of images per key: ``rate_per_minute``, burst as large (at least one
    full request)."""

    rate_per_minute: float
    burst: float
    _buckets: dict[str, tuple[float, float]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: str, n: int) -> float:
        """0 when ``n`` images may go now (and takes them), else seconds until they may."""
        rate = self.rate_per_minute / 60.0
        now = time.monotonic()
        with self._lock:
            tokens, then = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - then) * rate)
            if tokens >= n:
                self._buckets[key] = (tokens - n, now)
                return 0.0
            self._buckets[key] = (tokens, now)
            return (n - tokens) / rate if rate > 0 else 3600.0


class ServeMetrics:
    def __init__(self) -> None:
        from prometheus_client import Counter, Gauge, Histogram

        from workers.metrics import LATENCY_BUCKETS, StageMetrics

        self.stages = StageMetrics(prefix="logowatch_serve")
        r = self.stages.registry
        self.requests = Counter("logowatch_serve_requests_total",
                                "Classify requests by HTTP status", ["code"], registry=r)
        self.request_seconds = Histogram("logowatch_serve_request_seconds",
                                         "Seconds per classify request that was answered 200",
                                         buckets=LATENCY_BUCKETS, registry=r)
        self.queued = Gauge("logowatch_serve_queued_images",
                            "Images admitted and not yet scored", registry=r)
        self.model_info = Gauge("logowatch_serve_model_info", "The loaded model (value 1)",
                                ["model_version", "backbone"], registry=r)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"code": code, "message": message}}, status_code=status,
                        headers=headers)


async def _body(request: Any, limit: int) -> bytes:
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "body_too_large", f"the body is {declared} bytes, over {limit}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ApiError(413, "body_too_large", f"the body is over {limit} bytes")
    return bytes(body)


def _images(body: bytes, limits: Limits) -> list[tuple[str, Any]]:
    """(id, Work) per image of a classify body, or the ``ApiError`` that refuses it."""
    from workers.config import ImageStatus
    from workers.stages import Work

    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
    if not isinstance(doc, dict) or set(doc) - {"images"} or not isinstance(
            doc.get("images"), list):
        raise ApiError(400, "invalid_request", 'the body must be {"images": [...]}')
    items = doc["images"]
    if not items:
        raise ApiError(400, "invalid_request", "images is empty")
    if len(items) > limits.max_images:
        raise ApiError(413, "too_many_images",
                       f"{len(items)} images, at most {limits.max_images} per request")
    out = []
    for i, item in enumerate(items):
        where = f"images[{i}]"
        if not isinstance(item, dict) or set(item) - {"id", "url", "content"}:
            raise ApiError(400, "invalid_request",
                           f"{where} must be an object with id and one of url, content")
        image_id = item.get("id", str(i))
        if not isinstance(image_id, str) or not 0 < len(image_id) <= 200:
            raise ApiError(400, "invalid_request", f"{where}.id must be a string of 1-200")
        url, content = item.get("url"), item.get("content")
        if (url is None) == (content is None):
            raise ApiError(400, "invalid_request", f"{where} needs exactly one of url, content")
        if url is not None:
            if not isinstance(url, str) or not 0 < len(url) <= 4096:
                raise ApiError(400, "invalid_request", f"{where}.url must be a string URL")
            out.append((image_id, Work(None, url=url)))
            continue
        try:
            data = base64.b64decode(content, validate=True)
        except (binascii.Error, TypeError, ValueError):
            raise ApiError(400, "invalid_base64", f"{where}.content is not base64") from None
        if len(data) > limits.max_image_bytes:
            out.append((image_id, Work(None, status=ImageStatus.TOO_LARGE, error=(
                f"{len(data)} bytes is over {limits.max_image_bytes}"))))
        else:
            out.append((image_id, Work(None, data=data)))
    if len({i for i, _ in out}) != len(out):
        raise ApiError(400, "invalid_request", "image ids must be unique within a request")
    return out


def build_app(scorer: Any, key_store: keys.KeyStore, limits: Limits,
              metrics: ServeMetrics) -> Any:
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    from starlette.applications import Starlette
    from starlette.exceptions import HTTPException
    from starlette.responses import JSONResponse, PlainTextResponse, Response
    from starlette.routing import Route

    from logowatch.scoring import Busy

    bundle = scorer.bundle
    rate = RateLimiter(limits.rate_per_minute,
                       max(limits.rate_per_minute, float(limits.max_images)))
    metrics.model_info.labels(model_version=bundle.version, backbone=bundle.backbone_id).set(1)
    metrics.queued.set_function(lambda: scorer.waiting)

    def owner(request: Any) -> str:
        scheme, _, key = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not key.strip():
            raise ApiError(401, "unauthorized", "send an API key: Authorization: Bearer KEY",
                           {"WWW-Authenticate": "Bearer"})
        name = key_store.owner(key.strip())
        if name is None:
            raise ApiError(401, "unauthorized", "unknown or revoked API key",
                           {"WWW-Authenticate": "Bearer"})
        return name

    async def classify(request: Any) -> Response:
        started = time.perf_counter()
        try:
            name = owner(request)
            body = await _body(request, limits.max_body_bytes)
            # JSON and base64 of up to --max-body-bytes: off the event loop
            images = await asyncio.to_thread(_images, body, limits)
            wait = rate.take(name, len(images))
            if wait > 0:
                raise ApiError(429, "rate_limited",
                               f"over {limits.rate_per_minute:g} images a minute for this key",
                               {"Retry-After": str(max(1, round(wait)))})
            try:
                futures = scorer.submit(work for _, work in images)
            except Busy as exc:
                raise ApiError(503, "busy", f"cannot take more images now: {exc}",
                               {"Retry-After": "1"}) from None
            try:
                results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
            except Busy as exc:  # shut down before these were scored
                raise ApiError(503, "busy", str(exc), {"Retry-After": "1"}) from None
            except Exception as exc:  # the scorer itself failed; its log has the traceback
                raise ApiError(500, "internal_error",
                               f"scoring failed: {type(exc).__name__}") from None
        except ApiError as exc:
            metrics.requests.labels(code=str(exc.status)).inc()
            return _error(exc.status, exc.code, str(exc), exc.headers)
        metrics.requests.labels(code="200").inc()
        metrics.request_seconds.observe(time.perf_counter() - started)
        return JSONResponse({"model_version": bundle.version, "images": [
            {"id": image_id, "status": r.status, "error": r.error,
             "batch": {"id": r.batch_id, "size": r.batch_size} if r.batch_id else None,
             "brands": r.detections}
            for (image_id, _), r in zip(images, results, strict=True)]})

    async def models(request: Any) -> Response:
        try:
            owner(request)
        except ApiError as exc:
            return _error(exc.status, exc.code, str(exc), exc.headers)
        meta = bundle.metadata
        bb = meta["backbone"]
        return JSONResponse({"models": [{
            "version": bundle.version, "backbone_id": bundle.backbone_id,
            "brands": bundle.brands, "thresholds": bundle.thresholds,
            "tiles": scorer.tiles is not None, "input_size": bundle.input_size,
            "created_at": meta.get("created_at"),
            "weights": {"source": bb.get("weights_source"), "provenance": bb.get("weights"),
                        "digest": bb.get("weights_digest"),
                        "random": bool(bb.get("random_weights"))},
            "limits": {"max_images": limits.max_images,
                       "max_body_bytes": limits.max_body_bytes,
                       "max_image_bytes": limits.max_image_bytes,
                       "rate_per_minute": limits.rate_per_minute}}]})

    async def healthz(request: Any) -> Response:
        ok = scorer.alive()
        return PlainTextResponse("ok\n" if ok else "scorer stopped\n",
                                 status_code=200 if ok else 503)

    async def readyz(request: Any) -> Response:
        why = None if scorer.alive() else "scorer stopped"
        if why is None and scorer.waiting >= scorer.capacity:
            why = "queue full"
        return PlainTextResponse(f"{why or 'ok'}\n", status_code=503 if why else 200)

    async def prometheus(request: Any) -> Response:
        return Response(generate_latest(metrics.stages.registry),
                        media_type=CONTENT_TYPE_LATEST)

    async def http_error(request: Any, exc: Exception) -> Response:
        status = getattr(exc, "status_code", 500)
        return _error(status, {404: "not_found", 405: "method_not_allowed"}.get(
            status, "error"), str(getattr(exc, "detail", "")) or "error")

    app = Starlette(routes=[
        Route("/v1/classify", classify, methods=["POST"]),
        Route("/v1/models", models, methods=["GET"]),
        Route("/healthz", healthz), Route("/readyz", readyz),
        Route("/metrics", prometheus),
    ], exception_handlers={HTTPException: http_error})
    return app


def bind(host: str, port: int) -> socket.socket:
    """The server's socket, bound first so an address in use is one line, not a traceback."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except (OSError, OverflowError) as exc:
        sock.close()
        raise WorkerError(f"cannot serve on {host}:{port}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None
    return sock  # uvicorn listens once the model is loaded: connecting is refused till then


def server(app: Any, drain_timeout: float) -> Any:
    import uvicorn

    return uvicorn.Server(uvicorn.Config(
        app, log_level="warning", access_log=False, lifespan="off",
        timeout_graceful_shutdown=int(max(1, drain_timeout))))


def run_serve(args: argparse.Namespace) -> int:
    """Exit codes: 0 stopped by SIGTERM/SIGINT after draining; 1 one-line error (no API keys,
    address in use, bad bundle); 2 bad flag."""
    key_store = keys.KeyStore(args.keys_file, config.env("LOGOWATCH_API_KEYS"))
    if not len(key_store):
        raise WorkerError(f"no API keys in {args.keys_file} or LOGOWATCH_API_KEYS: add one with "
                          "`logowatch keys add NAME` (scoring is never anonymous)")
    sock = bind(args.host, args.port)
    metrics = ServeMetrics()
    scorer = start_scorer(args, metrics.stages, max_queue=args.max_queue)
    limits = Limits(args.max_images, args.max_body_bytes, args.max_image_bytes, args.rate_limit)
    app = build_app(scorer, key_store, limits, metrics)
    bundle = scorer.bundle
    print(f"serve: model {bundle.version} ({len(bundle.brands)} brands), "
          f"http://{args.host}:{args.port}/v1/classify, {len(key_store)} API key(s)",
          flush=True)
    srv = server(app, args.drain_timeout)
    # uvicorn drains on SIGTERM/SIGINT, then raises the signal again for the handler it
    # found: let that be one that returns, so the scorer is closed and the exit is 0.
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    try:
        srv.run(sockets=[sock])  # returns once the requests in flight are answered
    finally:
        scorer.close(timeout=args.drain_timeout)
    return 0
