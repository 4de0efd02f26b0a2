"""What each step of the detector chain does to one record or one batch.

parse (consumer thread; bad records to the dead-letter topic) → fetch + decode (thread pool)
→ batch → infer (the model's one owner thread) → write (the database's one owner thread)
→ offsets. ``workers.worker`` wires them together; this module holds the work itself.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from detector.preprocess import ImageError, TileSpec, prepare
from ingest.records import PostRecord, RecordError, parse
from workers import rows
from workers.config import ImageStatus
from workers.errors import WorkerError
from workers.fetch import Fetcher, FetchError
from workers.metrics import WorkerMetrics
from workers.strategy import Batch, Message, Step

log = logging.getLogger(__name__)


@dataclass
class Work:
    """One record on its way through the chain."""

    record: PostRecord | None
    status: str = ImageStatus.PENDING
    error: str | None = None
    tiles: list[Any] | None = None
    embedding: np.ndarray | None = None
    scores: dict[str, tuple[float, tuple[int, int, int, int] | None]] = field(
        default_factory=dict
    )


class TooManyDeadLetters(WorkerError):
    pass


class DeadLetters:
    """Sends unparseable records to ``<topic>.dlq`` and trips when most recent ones fail."""

    def __init__(self, producer: Any, topic: str, metrics: WorkerMetrics, *,
                 window: int = 200, max_ratio: float = 0.5) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.recent: deque[bool] = deque(maxlen=window)
        self.max_ratio = max_ratio

    def observe(self, dead: bool, reason: str = "") -> None:
        self.recent.append(dead)
        bad = sum(self.recent)
        if (len(self.recent) == self.recent.maxlen and bad > self.max_ratio * len(self.recent)):
            raise TooManyDeadLetters(
                f"{bad} of the last {len(self.recent)} records could not be parsed (latest: "
                f"{reason}); stopping instead of draining the topic into {self.topic}. Fix the "
                "producer, then restart the worker."
            )

    def send(self, message: Message[Any], reason: str) -> None:
        record = message.payload
        headers = [
            ("error", reason.encode("utf-8", "replace")[:1000]),
            ("source_topic", message.topic.encode()),
            ("source_partition", str(message.partition).encode()),
            ("source_offset", str(message.offset).encode()),
        ]
        future = self.producer.send(self.topic, value=record.value, key=record.key,
                                    headers=headers)
        future.get(timeout=30)  # the offset may only move once the dead letter is stored
        self.metrics.dlq.labels(reason=reason.split(":", 1)[0][:40]).inc()


class ParseStep:
    """Turns Kafka records into ``Work``; a record that can never parse becomes a dead letter
    whose offset still travels down the chain to be committed in order."""

    def __init__(self, dead_letters: DeadLetters, next_step: Step[Work]) -> None:
        self.dead_letters = dead_letters
        self.next_step = next_step
        self._already_sent: set[tuple[int, int]] = set()

    def submit(self, message: Message[Any]) -> None:
        try:
            work = Work(parse(message.payload.value))
            dead_reason = None
        except RecordError as exc:
            dead_reason = str(exc)
            work = Work(None, status=ImageStatus.DEAD_LETTER, error=dead_reason)
        key = (message.partition, message.offset)
        if dead_reason is not None and key not in self._already_sent:
            self.dead_letters.send(message, dead_reason)
            self._already_sent.add(key)
        self.next_step.submit(message.with_payload(work))  # may raise MessageRejected
        self._already_sent.discard(key)
        self.dead_letters.observe(dead_reason is not None, dead_reason or "")

    def poll(self) -> None:
        self.next_step.poll()

    def join(self, timeout: float | None = None) -> None:
        self.next_step.join(timeout)

    def close(self) -> None:
        self.next_step.close()


def fetch_and_prepare(work: Work, fetcher: Fetcher, size: int, tiles: TileSpec | None,
                      max_pixels: int, metrics: WorkerMetrics) -> Work:
    """Runs in the fetch pool: download, decode, resize (and tile). Never raises for bad
    input: the failure becomes the post's image status."""
    if work.record is None:
        return work
    started = time.perf_counter()
    try:
        data = fetcher.fetch(work.record.image_url)
    except FetchError as exc:
        work.status, work.error = exc.status, str(exc)
        return work
    finally:
        metrics.stage_seconds.labels(stage="fetch").observe(time.perf_counter() - started)
    started = time.perf_counter()
    try:
        work.tiles = prepare(data, size, tiles=tiles, max_pixels=max_pixels)
        work.status = ImageStatus.OK
    except ImageError as exc:
        work.status, work.error = exc.status, str(exc)
    finally:
        metrics.stage_seconds.labels(stage="decode").observe(time.perf_counter() - started)
    return work


def infer(batch: Batch[Work], bundle: Any, metrics: WorkerMetrics) -> Batch[Work]:
    """The backbone runs once per image (or tile); every brand head scores every embedding.
    With tiles, each brand keeps its best tile and that tile's box."""
    items = [m.payload for m in batch.messages if m.payload.status == ImageStatus.OK]
    if not items:
        return batch
    started = time.perf_counter()
    counts = [len(w.tiles or []) for w in items]
    pixels = np.stack([t.pixels for w in items for t in (w.tiles or [])])
    # Score what is stored (workers.rows), so `logowatch rescore` reproduces these rows.
    embeddings = rows.stored(bundle.embed(pixels))
    scores = rows.score_stored(bundle, embeddings)
    metrics.batch_size.observe(len(items))
    start = 0
    for work, count in zip(items, counts, strict=True):
        own = scores[start:start + count]
        work.embedding = embeddings[start]  # the whole image, always the first tile
        for j, brand in enumerate(bundle.brands):
            best = int(np.argmax(own[:, j]))
            box = work.tiles[best].box if work.tiles else None
            work.scores[brand] = (float(own[best, j]), box)
        work.tiles = None  # free the pixels before the batch waits for the database
        start += count
    metrics.stage_seconds.labels(stage="inference").observe(time.perf_counter() - started)
    return batch
