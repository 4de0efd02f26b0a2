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
from workers.fetch import Fetcher, FetchError, short
from workers.metrics import StageMetrics, WorkerMetrics
from workers.strategy import Batch, Message, Step

log = logging.getLogger(__name__)



@dataclass
class Work:
    """One record on its way through the chain."""

    record: PostRecord | None
    status: str = ImageStatus.PENDING
    # Where the image comes from: a URL to fetch, or bytes the caller already has (the
    # `classify` and `serve` commands); ``data`` is dropped once decoded.
    url: str | None = None
    data: bytes | None = None
    error: str | None = None
    tiles: list[Any] | None = None
    # The stored (float16) embeddings of the whole image (row 0) and its tiles, and the
    # tiles' boxes (None for the whole image), once scored.
    views: np.ndarray | None = None
    boxes: list[tuple[int, int, int, int] | None] = field(default_factory=list)
    scores: dict[str, tuple[float, tuple[int, int, int, int] | None]] = field(
        default_factory=dict
    )
    # The brands matched from their logo files, found on the decoded image in the fetch pool.
    marks: dict[str, tuple[float, tuple[int, int, int, int] | None]] = field(
        default_factory=dict
    )


class TooManyFailures(WorkerError):
    pass


class Tripwire:
    """Trips when most of the last ``window`` records failed the same way: a bad producer
    deploy or a broken model should stop the worker, not drain the topic into failures."""

    def __init__(self, what: str, advice: str, *, window: int = 200,
                 max_ratio: float = 0.5) -> None:
        self.what = what
        self.advice = advice
        self.recent: deque[bool] = deque(maxlen=window)
        self.max_ratio = max_ratio

    def observe(self, failed: bool, reason: str = "") -> None:
        self.recent.append(failed)
        bad = sum(self.recent)
        if len(self.recent) == self.recent.maxlen and bad > self.max_ratio * len(self.recent):
            raise TooManyFailures(
                f"{bad} of the last {len(self.recent)} records {self.what} (latest: {reason}); "
                f"stopping. {self.advice}"
            )


class DeadLetters:
    """Sends records that can never succeed to ``<topic>.dlq`` with the reason."""

    def __init__(self, producer: Any, topic: str, metrics: WorkerMetrics, *,
                 window: int = 200, max_ratio: float = 0.5) -> None:
        self.producer = producer
        self.topic = topic
        self.metrics = metrics
        self.tripwire = Tripwire(
            "could not be parsed", f"Fix the producer, then restart the worker (instead of "
            f"draining the topic into {topic}).", window=window, max_ratio=max_ratio)

    def send(self, message: Message[Any], reason: str, key: bytes | None,
             value: bytes | None) -> None:
        headers = [
            ("error", reason.encode("utf-8", "replace")[:1000]),
            ("source_topic", message.topic.encode()),
            ("source_partition", str(message.partition).encode()),
            ("source_offset", str(message.offset).encode()),
        ]
        future = self.producer.send(self.topic, value=value, key=key, headers=headers)
        future.get(timeout=30)  # the offset may only move once the dead letter is stored
        self.metrics.dlq.labels(reason=reason.split(":", 1)[0][:40]).inc()


def unexpected(stage: str, exc: BaseException, metrics: StageMetrics) -> str:
    """Counts and logs an exception a step does not expect from one record, and returns the
    reason stored with that record. One line in the log (the traceback only at DEBUG): a
    hostile input must not be able to flood the log either."""
    metrics.unexpected.labels(stage=stage).inc()
    reason = f"{stage}: unexpected {type(exc).__name__}: {short(exc)}"
    log.error("%s", reason)
    log.debug("traceback of the unexpected error", exc_info=exc)
    return reason


class ParseStep:
    """Turns Kafka records into ``Work``; a record that can never parse becomes a dead letter
    whose offset still travels down the chain to be committed in order."""

    def __init__(self, dead_letters: DeadLetters, next_step: Step[Work]) -> None:
        self.dead_letters = dead_letters
        self.next_step = next_step
        self._already_sent: set[tuple[int, int]] = set()

    def submit(self, message: Message[Any]) -> None:
        record = message.payload
        try:
            post = parse(record.value)
            work = Work(post, url=post.image_url)
            dead_reason = None
        except RecordError as exc:
            dead_reason = str(exc)
        except Exception as exc:  # a parser bug must not make this record a poison pill
            dead_reason = "record: " + unexpected("parse", exc, self.dead_letters.metrics)
        if dead_reason is not None:
            work = Work(None, status=ImageStatus.DEAD_LETTER, error=dead_reason)
        key = (message.partition, message.offset)
        if dead_reason is not None and key not in self._already_sent:
            self.dead_letters.send(message, dead_reason, record.key, record.value)
            self._already_sent.add(key)
        self.next_step.submit(message.with_payload(work))  # may raise MessageRejected
        self._already_sent.discard(key)
        self.dead_letters.tripwire.observe(dead_reason is not None, dead_reason or "")

    def poll(self) -> None:
        self.next_step.poll()

    def join(self, timeout: float | None = None) -> None:
        self.next_step.join(timeout)

    def close(self) -> None:
        self.next_step.close()


def fetch_and_prepare(work: Work, fetcher: Fetcher, size: int, tiles: TileSpec | None,
                      max_pixels: int, metrics: StageMetrics,
                      logos: dict[str, Any] | None = None) -> Work:
    """Runs in the fetch pool: download, decode, resize (and tile), and match the brands
    whose logo files the bundle searches for (``logos``; threads of this pool run it beside
    the model's thread). Never raises: bad input becomes the post's image status, and so
    does anything unexpected (``internal_error``)."""
    if work.status != ImageStatus.PENDING:
        return work  # failed before it got here (a dead letter, an unreadable file)
    data, work.data = work.data, None
    if data is None:
        started = time.perf_counter()
        try:
            data = fetcher.fetch(str(work.url))
        except FetchError as exc:
            work.status, work.error = exc.status, str(exc)
            return work
        except Exception as exc:
            work.status, work.error = ImageStatus.INTERNAL_ERROR, unexpected("fetch", exc,
                                                                             metrics)
            return work
        finally:
            metrics.stage_seconds.labels(stage="fetch").observe(time.perf_counter() - started)
    started = time.perf_counter()
    try:
        work.tiles = prepare(data, size, tiles=tiles, max_pixels=max_pixels)
        work.status = ImageStatus.OK
    except ImageError as exc:
        work.status, work.error = exc.status, str(exc)
    except Exception as exc:
        work.status, work.error = ImageStatus.INTERNAL_ERROR, unexpected("decode", exc, metrics)
    finally:
        metrics.stage_seconds.labels(stage="decode").observe(time.perf_counter() - started)
    if logos and work.status == ImageStatus.OK:
        from detector.exemplar import find_all

        started = time.perf_counter()
        try:
            work.marks = find_all(logos, data, max_pixels)
        except Exception as exc:
            work.status, work.error, work.tiles = (ImageStatus.INTERNAL_ERROR,
                                                   unexpected("match", exc, metrics), None)
        finally:
            metrics.stage_seconds.labels(stage="match").observe(time.perf_counter() - started)
    return work


def infer(batch: Batch[Work], bundle: Any, metrics: StageMetrics) -> Batch[Work]:
    """The backbone runs once per image (or tile); every brand head scores every embedding.
    With tiles, each brand keeps its best tile and that tile's box.

    If the model raises for a batch, each image is tried alone, so one image the model cannot
    take fails only itself (``internal_error``). A model that fails for every image marks them
    all, and the worker's tripwire stops it once most recent records failed that way."""
    items = [m.payload for m in batch.messages if m.payload.status == ImageStatus.OK]
    if not items:
        return batch
    started = time.perf_counter()
    try:
        _score(items, bundle)
    except Exception as exc:
        if len(items) == 1:
            _failed(items[0], unexpected("infer", exc, metrics))
        else:
            log.warning("inference failed for a batch of %d (%s); scoring them one by one",
                        len(items), type(exc).__name__)
            for work in items:
                try:
                    _score([work], bundle)
                except Exception as one:
                    _failed(work, unexpected("infer", one, metrics))
    metrics.batch_size.observe(len(items))
    metrics.stage_seconds.labels(stage="inference").observe(time.perf_counter() - started)
    return batch


def _failed(work: Work, reason: str) -> None:
    work.status, work.error, work.tiles = ImageStatus.INTERNAL_ERROR, reason, None


def _score(items: list[Work], bundle: Any) -> None:
    """Scores ``items`` and changes none of them unless all were scored."""
    counts = [len(w.tiles or []) for w in items]
    pixels = np.stack([t.pixels for w in items for t in (w.tiles or [])])
    # Score what is stored (workers.rows), so `logowatch rescore` reproduces these rows.
    embeddings = rows.stored(bundle.embed(pixels))
    scores = rows.score_stored(bundle, embeddings)
    results = []
    start = 0
    for work, count in zip(items, counts, strict=True):
        boxes = [t.box for t in work.tiles] if work.tiles else [None]
        found = rows.best_views(bundle.heads.brands, scores[start:start + count], boxes)
        results.append((embeddings[start:start + count], boxes, found))
        start += count
    for work, (views, boxes, found) in zip(items, results, strict=True):
        work.views, work.boxes = views, boxes
        work.scores = {**{brand: (score, box) for brand, score, box in found}, **work.marks}
        work.tiles = None  # free the pixels before the batch waits for the database
