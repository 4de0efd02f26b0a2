"""An in-memory stand-in for Kafka behind the worker's consumer seam (``workers.consumer``),
as Arroyo's LocalBroker: partitions are lists, a rebalance is a method call. It keeps the
kafka-python 3 behaviours the worker relies on: a rebalance is noted during ``poll`` (the
revoke first, the new assignment on a later poll), a partition handed back keeps its position
and paused flag, a new one starts at its committed offset.

Also the worker's other collaborators as plain recorders: producer, database writer, fetcher,
and a model bundle whose heads are a fixed logistic layer.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np
from PIL import Image

from workers.consumer import CommitRefused, Partition, RebalanceEvents, Record


class MemoryConsumer:
    def __init__(self, topic: str, partitions: int = 2, max_records: int = 64,
                 journal: list[tuple[str, Any]] | None = None) -> None:
        self.topic = topic
        self.events = RebalanceEvents()
        self.log: dict[Partition, list[Record]] = {(topic, p): [] for p in range(partitions)}
        self.committed_offsets: dict[Partition, int] = {}
        self.positions: dict[Partition, int] = {}
        self.paused: set[Partition] = set()
        self.assigned: set[Partition] = set()
        self.fetchable: set[Partition] = set()
        self.max_records = max_records
        self.journal = journal if journal is not None else []
        self.next_assignment: set[Partition] | None = None
        self.refuse_commits = False
        self.join_polls = 0
        self.polls = 0
        self.before_poll: Callable[[MemoryConsumer], None] | None = None
        self.subscribed = False
        self.closed = False

    # -- the test's side --------------------------------------------------------------------
    def produce(self, partition: int, value: bytes | None, key: bytes | None = None) -> None:
        part = self.log[(self.topic, partition)]
        part.append(Record((self.topic, partition), len(part), 1, key, value))

    def rebalance(self, new: set[Partition] | None = None, *, join_polls: int = 1) -> None:
        """Revoke everything now (EAGER: noted as if during the next poll), assign ``new``
        ``join_polls`` polls later (0: the join completes within that same poll, which
        then also returns records of the new assignment, as kafka-python's can)."""
        self.next_assignment = set(self.log) if new is None else new
        self.events.revoked(set(self.assigned))
        self.fetchable = set()
        self.join_polls = join_polls

    def end(self, partition: Partition) -> int:
        return len(self.log[partition])

    # -- the seam ---------------------------------------------------------------------------
    def subscribe(self, topic: str) -> None:
        assert topic == self.topic
        self.subscribed = True
        self.next_assignment = set(self.log)

    def partitions_for(self, topic: str) -> set[int]:
        return {p for t, p in self.log if t == topic}

    def poll(self, timeout_ms: int) -> list[Record]:
        self.polls += 1
        if self.before_poll is not None:
            self.before_poll(self)
        if self.next_assignment is not None:
            if self.join_polls > 0:  # the join is still on its way
                self.join_polls -= 1
                return []
            new, self.next_assignment = self.next_assignment, None
            for p in self.assigned - new:
                self.positions.pop(p, None)
                self.paused.discard(p)
            for p in new - self.assigned:
                self.positions[p] = self.committed_offsets.get(p, 0)
            self.assigned = self.fetchable = set(new)
            self.events.assigned(new)
        out: list[Record] = []
        for p in sorted(self.fetchable - self.paused):
            start = self.positions[p]
            batch = self.log[p][start:start + self.max_records - len(out)]
            self.positions[p] = start + len(batch)
            out += batch
        return out

    def assignment(self) -> set[Partition]:
        return set(self.assigned)

    def pause(self, partitions: set[Partition]) -> None:
        self.paused |= partitions

    def resume(self, partitions: set[Partition]) -> None:
        self.paused -= partitions

    def seek(self, partition: Partition, offset: int) -> None:
        if partition in self.assigned:
            self.positions[partition] = offset

    def commit(self, offsets: dict[Partition, int]) -> None:
        if self.refuse_commits:
            raise CommitRefused("RebalanceInProgressError")
        self.journal.append(("commit", dict(offsets)))
        self.committed_offsets.update(offsets)

    def committed(self, partition: Partition) -> int | None:
        return self.committed_offsets.get(partition)

    def end_offsets(self, partitions: set[Partition]) -> dict[Partition, int]:
        return {p: self.end(p) for p in partitions}

    def close(self) -> None:
        self.closed = True


@dataclass
class Sent:
    topic: str
    value: bytes | None
    key: bytes | None
    headers: list[tuple[str, bytes]]

    def get(self, timeout: float | None = None) -> Sent:
        return self


@dataclass
class MemoryProducer:
    sent: list[Sent] = field(default_factory=list)

    def send(self, topic: str, value: bytes | None = None, key: bytes | None = None,
             headers: list[tuple[str, bytes]] | None = None) -> Sent:
        self.sent.append(Sent(topic, value, key, headers or []))
        return self.sent[-1]

    def close(self, timeout: float | None = None) -> None:
        pass


class MemoryWriter:
    """Records each transaction; ``fail`` raises before a write, ``gate`` holds writes."""

    def __init__(self, journal: list[tuple[str, Any]] | None = None) -> None:
        self.journal = journal if journal is not None else []
        self.posts: list[dict[str, Any]] = []
        self.detections: list[dict[str, Any]] = []
        self.embeddings: list[dict[str, Any]] = []
        self.fail: Callable[[], None] | None = None
        self.gate = threading.Event()
        self.gate.set()

    def register_model(self, *args: Any) -> None:
        pass

    def write(self, posts: list[dict[str, Any]], detections: list[dict[str, Any]],
              embeddings: list[dict[str, Any]]) -> None:
        self.gate.wait()
        if self.fail is not None:
            self.fail()
        self.posts += posts
        self.detections += detections
        self.embeddings += embeddings
        self.journal.append(("write", [p["post_id"] for p in posts]))

    def close(self) -> None:
        pass


def jpeg(shade: int = 90) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (24, 16), (shade, 200 - shade, 40)).save(out, "JPEG")
    return out.getvalue()


class MemoryFetcher:
    def __init__(self, body: bytes | None = None) -> None:
        self.body = body or jpeg()
        self.gate = threading.Event()
        self.gate.set()

    def fetch(self, url: str) -> bytes:
        self.gate.wait()
        return self.body

    def close(self) -> None:
        self.gate.set()


class StubBundle:
    """Brand heads as one fixed logistic layer over a pixel-statistics 'backbone'."""

    version = "stub-1"
    backbone_id = "stub-backbone"
    input_size = 8
    tiles = None

    def __init__(self) -> None:
        self.brands = ["acme", "globex"]
        self.heads = SimpleNamespace(brands=self.brands)  # every brand has a head
        self.logos: dict[str, Any] = {}
        self.thresholds = {"acme": 0.5, "globex": 0.6}
        self.metadata: dict[str, Any] = {}
        rng = np.random.default_rng(7)
        self.weights = rng.normal(size=(6, 2)).astype(np.float32)

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        flat = pixels.reshape(len(pixels), -1, 3).astype(np.float32)
        return np.concatenate([flat.mean(axis=1), flat.std(axis=1)], axis=1) / 64.0

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        return 1.0 / (1.0 + np.exp(-(embeddings @ self.weights)))


def worker_detections(bundle: Any, urls: list[str], allow: list[str],
                      tiles: Any = None) -> dict[tuple[str, str], tuple[Any, ...]]:
    """(url, brand) → (score, present, region) as the worker stores them: the real chain,
    fetcher and bundle, with Kafka and Postgres in memory."""
    import json

    from workers.fetch import FetchConfig, Fetcher
    from workers.worker import Worker, WorkerConfig

    consumer = MemoryConsumer("posts", partitions=1)
    for i, url in enumerate(urls):
        consumer.produce(0, json.dumps({"post_id": f"p{i}", "source": "test",
                                        "image_url": url}).encode(), str(i).encode())
    writer = MemoryWriter()
    fetcher = Fetcher(FetchConfig(allow_hosts=allow, retries=0))
    try:
        Worker(WorkerConfig(bootstrap="memory", database_url="memory", batch_size=8,
                            max_wait_ms=50, fetch_workers=2, commit_interval=0.0, once=True,
                            tiles=tiles),
               bundle, consumer=consumer, producer=MemoryProducer(), writer=writer,
               fetcher=fetcher).run()
    finally:
        fetcher.close()
    return {(urls[int(d["post_id"][1:])], d["brand"]): (d["score"], d["present"], d["region"])
            for d in writer.detections}


def assert_same_detections(got: dict[Any, tuple[Any, ...]],
                           want: dict[Any, tuple[Any, ...]]) -> None:
    """The same rows: present and region exactly, scores within 1e-3. The backbone's CPU
    kernels round differently for other batch shapes, and which images share a batch depends
    on timing, so the last bits of a score may differ between two runs of any one path."""
    import pytest

    assert set(got) == set(want)
    for key, (score, present, region) in want.items():
        assert got[key][0] == pytest.approx(score, abs=1e-3), key
        assert got[key][1:] == (present, region), key
