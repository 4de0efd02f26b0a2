"""Prometheus metrics of the producers, served on ``--metrics-port`` (0 = off) and written to
``--metrics-file`` at the start and end of a run.

Defined once per process on the default registry, so every source and the producer count into
the same series and one scrape shows the whole ingest process.
"""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge, start_http_server, write_to_textfile

from ingest.errors import IngestError

POSTS_PRODUCED = Counter(
    "logowatch_ingest_posts_produced_total", "Posts delivered to Kafka", ["source"]
)
RECORDS_SKIPPED = Counter(
    "logowatch_ingest_records_skipped_total", "Input records not produced", ["source", "reason"]
)
DELIVERY_FAILURES = Counter(
    "logowatch_ingest_delivery_failures_total", "Records Kafka did not acknowledge", ["source"]
)
API_CALLS = Counter(
    "logowatch_ingest_api_calls_total", "Graph API requests sent", ["endpoint"]
)
API_ERRORS = Counter(
    "logowatch_ingest_api_errors_total", "Graph API error answers, by error code", ["code"]
)
API_WAIT_SECONDS = Counter(
    "logowatch_ingest_api_wait_seconds_total",
    "Seconds spent waiting before Graph API calls: pace and pause (usage headers), throttled, "
    "unavailable and network (retries)",
    ["reason"],
)
RATE_LIMIT_USAGE = Gauge(
    "logowatch_ingest_rate_limit_usage_percent",
    "Highest usage percentage the Graph API reported, by header",
    ["header"],
)


def serve(port: int, host: str = "127.0.0.1") -> None:
    """Start the /metrics endpoint in a daemon thread; port 0 means metrics are off."""
    if not port:
        return
    try:
        start_http_server(port, addr=host)
    except (OSError, OverflowError) as exc:
        raise IngestError(f"cannot serve metrics on {host}:{port}: "
                          f"{getattr(exc, 'strerror', None) or exc}") from None


def write(path: str) -> None:
    """Write every metric to ``path`` in Prometheus text format (atomically, for node_exporter's
    textfile collector): a one-off run is over before a scrape could see it."""
    if not path:
        return
    try:
        write_to_textfile(path, REGISTRY)
    except OSError as exc:
        raise IngestError(f"cannot write metrics to {path}: {exc.strerror}") from None
