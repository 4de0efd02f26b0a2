"""Prometheus metrics of the detector worker, and its /metrics, /healthz and /readyz server."""

from __future__ import annotations

import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

# The worker's own default port: 9100 is node_exporter's, and a worker must not take it.
DEFAULT_PORT = 9751
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


class StageMetrics:
    """What the fetch, decode and infer steps record. The worker and ``logowatch serve`` run
    the same steps, each under its own name prefix."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 prefix: str = "logowatch_worker") -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.images = Counter(f"{prefix}_images_total",
                              "Images by final image status", ["status"], registry=r)
        self.batch_size = Histogram(f"{prefix}_batch_size", "Images per inference batch",
                                    buckets=BATCH_BUCKETS, registry=r)
        self.stage_seconds = Histogram(f"{prefix}_stage_seconds",
                                       "Seconds spent per stage (fetch and decode per image; "
                                       "inference and database per batch)", ["stage"],
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.unexpected = Counter(f"{prefix}_unexpected_errors_total",
                                  "Records whose step raised an exception it does not expect "
                                  "(stored as internal_error or dead-lettered), by stage",
                                  ["stage"], registry=r)


class WorkerMetrics(StageMetrics):
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        super().__init__(registry)
        r = self.registry
        self.records = Counter("logowatch_worker_records_total",
                               "Records consumed, by outcome (ok, image_failed, dead_letter)",
                               ["outcome"], registry=r)
        self.dlq = Counter("logowatch_worker_dlq_total",
                           "Records sent to the dead-letter topic, by reason kind",
                           ["reason"], registry=r)
        self.detections = Counter("logowatch_worker_detections_total",
                                  "Brand detections written with present=true", ["brand"],
                                  registry=r)
        self.end_to_end = Histogram("logowatch_worker_end_to_end_seconds",
                                    "Kafka record timestamp to database commit",
                                    buckets=LATENCY_BUCKETS, registry=r)
        self.inflight = Gauge("logowatch_worker_inflight", "Records consumed, not yet committed",
                              registry=r)
        self.paused = Gauge("logowatch_worker_paused_partitions",
                            "Partitions paused for backpressure", registry=r)
        self.lag = Gauge("logowatch_worker_consumer_lag",
                         "End offset minus committed offset", ["topic", "partition"], registry=r)
        self.db_errors = Counter("logowatch_worker_db_errors_total",
                                 "Database transactions that failed and were retried",
                                 registry=r)
        self.commits = Counter("logowatch_worker_offset_commits_total",
                               "Offset commits sent to Kafka", registry=r)
        self.model_info = Gauge("logowatch_worker_model_info", "The loaded model (value 1)",
                                ["model_version", "backbone"], registry=r)


class Health:
    """Liveness: the poll loop ran recently, it makes progress while records wait
    (``workers.liveness``) and the database answers. Readiness: also partitions assigned and
    the model loaded."""

    def __init__(self, stall_after: float = 120.0, *, model_loaded: bool = False) -> None:
        self.stall_after = stall_after
        self.last_loop = time.monotonic()
        self.db_ok = True
        self.model_loaded = model_loaded
        self.assigned = 0
        self.stalled: str | None = None

    def beat(self) -> None:
        self.last_loop = time.monotonic()

    def live(self) -> tuple[bool, str]:
        if time.monotonic() - self.last_loop > self.stall_after:
            return False, "poll loop stalled"
        if self.stalled:
            return False, self.stalled
        if not self.db_ok:
            return False, "database unreachable (retrying)"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        ok, why = self.live()
        if not ok:
            return ok, why
        if not self.model_loaded:
            return False, "model not loaded"
        if self.assigned == 0:
            return False, "no partitions assigned"
        return True, "ok"


def serve(metrics: WorkerMetrics, health: Health, port: int,
          host: str = "127.0.0.1") -> ThreadingHTTPServer:
    """Serves /metrics, /healthz and /readyz on ``host:port`` (``OSError`` when it cannot)."""
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
            elif path in ("/healthz", "/readyz"):
                ok, why = health.live() if path == "/healthz" else health.ready()
                self._send(200 if ok else 503, why.encode() + b"\n", "text/plain")
            else:
                self._send(404, b"not found\n", "text/plain")

        def _send(self, status: int, body: bytes, ctype: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    server = type("MetricsServer", (ThreadingHTTPServer,), {"address_family": family})(
        (host, port), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="metrics", daemon=True).start()
    return server


def start_server(metrics: WorkerMetrics, health: Health, port: int | None,
                 host: str) -> ThreadingHTTPServer | None:
    """``serve`` where a port is configured; a port in use or out of range is one line."""
    if port is None:
        return None
    from workers.errors import WorkerError

    try:
        return serve(metrics, health, port, host)
    except (OSError, OverflowError) as exc:
        raise WorkerError(f"cannot serve metrics on {host}:{port}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None


def stop_server(server: ThreadingHTTPServer | None) -> None:
    if server is not None:
        server.shutdown()
        server.server_close()
