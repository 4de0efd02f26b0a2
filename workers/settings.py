"""What a detector worker is configured with (``logowatch detect`` builds it from flags)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from detector.preprocess import TileSpec
from workers.fetch import FetchConfig


@dataclass
class WorkerConfig:
    bootstrap: str
    database_url: str
    topic: str = "posts"
    group: str = "logowatch-detectors"
    dlq_topic: str | None = None
    batch_size: int = 32
    max_wait_ms: int = 200
    fetch_workers: int = 16
    max_inflight: int = 256
    tiles: TileSpec | None = None
    max_pixels: int = 40_000_000
    fetch: FetchConfig = field(default_factory=FetchConfig)
    commit_interval: float = 1.0
    drain_timeout: float = 30.0
    stall_timeout: float = 120.0
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    once: bool = False
    dlq_window: int = 200
    dlq_max_ratio: float = 0.5
    pseudonymise: Any = None
    kafka_options: dict[str, Any] = field(default_factory=dict)
