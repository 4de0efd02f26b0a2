"""Scoring without Kafka or Postgres, for `logowatch classify` and `logowatch serve`.

The worker's own steps (fetch+decode threads → batch step → the model's thread,
``workers.chain.scoring_steps``) are driven by one thread that takes images from a bounded
queue. Callers get a future per image; images from concurrent callers share micro-batches
(dynamic batching: a batch closes when it is full or ``max_wait`` after it opened).
"""

from __future__ import annotations

import itertools
import logging
import queue
import threading
from collections.abc import Iterable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

from workers import rows
from workers.chain import scoring_steps
from workers.config import ImageStatus
from workers.metrics import StageMetrics
from workers.stages import Work
from workers.strategy import Batch, Message, MessageRejected, Sink

log = logging.getLogger(__name__)


class Busy(Exception):
    """The queue cannot take these images now; the caller may retry later."""


@dataclass
class Scored:
    """One image's outcome: ``status`` (``ok`` or why not), per-brand results when ok, and
    the model batch it ran in (its id and how many images the model ran together)."""

    status: str
    error: str | None
    detections: list[dict[str, Any]]
    batch_id: int | None = None
    batch_size: int = 0


@dataclass
class ScorerConfig:
    batch_size: int = 32
    max_wait: float = 0.2
    fetch_workers: int = 8
    max_queue: int = 256  # images admitted and not yet scored, queue and chain together
    tiles: Any = None
    max_pixels: int = 40_000_000


class Scorer:
    def __init__(self, bundle: Any, fetcher: Any, metrics: StageMetrics,
                 config: ScorerConfig) -> None:
        self.bundle = bundle
        self.fetcher = fetcher
        self.metrics = metrics
        self.capacity = config.max_queue
        self.tiles = config.tiles
        self._queue: queue.SimpleQueue[Message[Work]] = queue.SimpleQueue()
        self._futures: dict[int, Future[Scored]] = {}
        self._lock = threading.Lock()
        self._ids = itertools.count()
        self._batches = itertools.count(1)
        self._closing = threading.Event()
        self.failure: BaseException | None = None
        self._first = scoring_steps(
            Sink(self._finished, lambda: None), bundle, metrics, fetcher=fetcher,
            tiles=config.tiles, batch_size=config.batch_size, max_wait=config.max_wait,
            fetch_workers=config.fetch_workers, max_inflight=config.max_queue,
            max_pixels=config.max_pixels)
        self._thread = threading.Thread(target=self._run, name="scorer", daemon=True)
        self._thread.start()

    @property
    def waiting(self) -> int:
        """Images admitted and not yet finished."""
        with self._lock:
            return len(self._futures)

    def alive(self) -> bool:
        return self._thread.is_alive()

    def submit(self, works: Iterable[Work]) -> list[Future[Scored]]:
        """Admits all of ``works`` or none (``Busy``); one future per image."""
        works = list(works)
        with self._lock:
            if self._closing.is_set():
                raise Busy("shutting down")
            if not self.alive():
                raise Busy("the scorer stopped")
            if len(self._futures) + len(works) > self.capacity:
                raise Busy(f"{len(self._futures)} images queued (at most {self.capacity})")
            futures = []
            for work in works:
                key = next(self._ids)
                future: Future[Scored] = Future()
                # running: a caller that gives up (a client gone) cannot cancel it under us
                future.set_running_or_notify_cancel()
                self._futures[key] = future
                futures.append(future)
                self._queue.put(Message("score", 0, key, 0, work))
        return futures

    def close(self, timeout: float | None = None) -> None:
        """Finishes what was admitted (within ``timeout``), then stops and closes the
        fetcher; admits nothing new."""
        self._closing.set()
        self._thread.join(timeout)
        self._first.close()
        self.fetcher.close()
        with self._lock:
            for future in self._futures.values():
                future.set_exception(Busy("shut down before this image was scored"))
            self._futures.clear()

    def _run(self) -> None:
        carried: Message[Work] | None = None
        try:
            while True:
                if carried is None:
                    busy = self.waiting > 0
                    try:
                        carried = self._queue.get(timeout=0.005 if busy else 0.1)
                    except queue.Empty:
                        if self._closing.is_set() and not busy:
                            return
                if carried is not None:
                    try:
                        self._first.submit(carried)
                        carried = None
                    except MessageRejected:
                        pass  # the chain is full: poll moves it along, then try again
                self._first.poll()
        except BaseException as exc:  # a bug here must fail the callers, not hang them
            log.exception("the scorer stopped")
            self.failure = exc
            with self._lock:
                for future in self._futures.values():
                    future.set_exception(exc)
                self._futures.clear()

    def _finished(self, message: Message[Batch[Work]]) -> None:
        works = [m.payload for m in message.payload.messages]
        ran = sum(w.status == ImageStatus.OK for w in works)
        batch_id = next(self._batches) if ran else None
        for m in message.payload.messages:
            work = m.payload
            self.metrics.images.labels(status=str(work.status)).inc()
            scored = Scored(str(work.status), work.error, [
                rows.detection(self.bundle, brand, score, box)
                for brand, (score, box) in work.scores.items()])
            if work.status == ImageStatus.OK:
                scored.batch_id, scored.batch_size = batch_id, ran
            with self._lock:
                future = self._futures.pop(m.offset, None)
            if future is not None:
                future.set_result(scored)
