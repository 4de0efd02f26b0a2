"""Writing results to Postgres: one transaction per batch, upserts on the natural keys.

Redelivery after a crash or a rebalance writes the same rows again, and ``ON CONFLICT`` turns
that into an update, so at-least-once delivery never duplicates a row. ``DatabaseStage`` is
the chain's write step: it retries a lost connection until the drain deadline.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.exc import DBAPIError, OperationalError

from analytics.schema import Detection, Embedding, Model, Post
from workers.config import ImageStatus, first_line
from workers.metrics import Health, WorkerMetrics
from workers.rows import batch_rows
from workers.stages import DeadLetters, Tripwire, unexpected
from workers.strategy import Batch, Message

log = logging.getLogger(__name__)

POST_UPDATE = ("source", "author", "caption", "hashtags", "mentions", "image_url", "permalink",
               "posted_at", "image_status", "error", "extra")


class ResultWriter:
    def __init__(self, database_url: str, *, pool_size: int = 2) -> None:
        self.engine = create_engine(database_url, pool_pre_ping=True, pool_size=pool_size,
                                    max_overflow=0)

    def close(self) -> None:
        self.engine.dispose()

    def register_model(self, version: str, backbone: str, thresholds: dict[str, float],
                       metadata: dict[str, Any]) -> None:
        """The ``models`` row goes in with the first batch's transaction (detections refer
        to it), so a database that is down at start-up is just another retried write.
        ``metadata`` is the bundle's: its metrics, training time and weights provenance, and
        the digest of each brand it matches from a logo file."""
        weights = metadata.get("backbone", {})
        self._model = {"model_version": version, "backbone": backbone, "brands": thresholds,
                       "metrics": metadata.get("metrics", {}),
                       "trained_at": metadata.get("created_at"),
                       "weights": weights.get("weights"),
                       "random_weights": weights.get("random_weights"),
                       "logos": {d["brand"]: d["digest"]
                                 for d in metadata.get("logos", {}).get("brands", [])} or None}

    _model: dict[str, Any] | None = None

    def write(self, posts: list[dict[str, Any]], detections: list[dict[str, Any]],
              embeddings: list[dict[str, Any]]) -> None:
        with self.engine.begin() as conn:
            if self._model is not None:
                conn.execute(insert(Model).values(self._model)
                             .on_conflict_do_nothing(index_elements=["model_version"]))
            if posts:
                # Two records of one post in a batch: the later one wins, as it would across
                # batches. Postgres refuses one statement touching the same key twice.
                unique = list({p["post_id"]: p for p in posts}.values())
                stmt = insert(Post).values(unique)
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["post_id"],
                    set_={c: stmt.excluded[c] for c in POST_UPDATE},
                ))
            if detections:
                keyed = {(d["post_id"], d["brand"], d["model_version"]): d for d in detections}
                stmt = insert(Detection).values(list(keyed.values()))
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["post_id", "brand", "model_version"],
                    set_={c: stmt.excluded[c] for c in ("score", "present", "region",
                                                         "posted_at", "detected_at")},
                ))
            if embeddings:
                keyed_e = {(e["post_id"], e["backbone"]): e for e in embeddings}
                stmt = insert(Embedding).values(list(keyed_e.values()))
                conn.execute(stmt.on_conflict_do_update(
                    index_elements=["post_id", "backbone"],
                    set_={c: stmt.excluded[c] for c in ("dim", "vector", "tiles", "tile_boxes",
                                                         "created_at")},
                ))
        self._model = None


def retry_forever(
    action: Callable[[], None], *, should_stop: Callable[[], bool],
    on_error: Callable[[BaseException], None], on_ok: Callable[[], None],
    first_delay: float = 0.5, max_delay: float = 15.0,
) -> bool:
    """Run ``action`` until it succeeds (True) or ``should_stop`` says give up (False).

    Only connection-level failures are retried: a constraint violation is a bug and raises.
    """
    delay = first_delay
    while True:
        try:
            action()
        except (OperationalError, DBAPIError) as exc:
            if isinstance(exc, DBAPIError) and not (
                isinstance(exc, OperationalError) or exc.connection_invalidated
            ):
                raise
            on_error(exc)
            log.warning("database write failed, retrying in %.1fs: %s", delay,
                        first_line(exc))
            stop_at = time.monotonic() + delay
            while time.monotonic() < stop_at:
                if should_stop():
                    return False
                time.sleep(0.1)
            delay = min(max_delay, delay * 2)
            continue
        on_ok()
        return True


class Abandoned(Exception):
    """The database stayed down past the drain deadline."""


@dataclass
class DatabaseStage:
    """The chain's write step (the database's one owner thread): rows in one transaction,
    then the metrics of what was written. A batch that cannot be written for any reason but
    a lost connection is written record by record, so no record can stop the worker: its
    rows, else its status row (``internal_error``), else a dead letter. What each record
    ended as feeds the unexpected-error tripwire (``check``, on the main thread)."""

    writer: ResultWriter
    bundle: Any
    metrics: WorkerMetrics
    health: Health
    should_stop: Callable[[], bool]
    dead_letters: DeadLetters
    pseudonymise: Any = None
    window: int = 200
    max_ratio: float = 0.5
    outcomes: deque[tuple[bool, str]] = field(default_factory=deque)

    def __post_init__(self) -> None:
        self.tripwire = Tripwire(
            "failed with an unexpected error", "The model, the database or the code is "
            "broken for every record; fix it, then restart the worker (those records keep "
            "their internal_error status until they are produced again).",
            window=self.window, max_ratio=self.max_ratio)

    def _failed(self, _: BaseException) -> None:
        self.health.db_ok = False
        self.metrics.db_errors.inc()

    def _recovered(self) -> None:
        self.health.db_ok = True

    def _store(self, messages: list[Message[Any]]) -> list[dict[str, Any]]:
        """One transaction; a lost connection is retried until the drain deadline (then
        ``Abandoned``), anything else raises."""
        posts, detections, embeddings = batch_rows(Batch(messages), self.bundle,
                                                   self.pseudonymise)
        if not retry_forever(lambda: self.writer.write(posts, detections, embeddings),
                             should_stop=self.should_stop, on_error=self._failed,
                             on_ok=self._recovered):
            raise Abandoned
        return detections

    def _store_alone(self, message: Message[Any]) -> list[dict[str, Any]]:
        work = message.payload
        reason = ""
        for _ in range(2):  # the record's rows, then its status row alone
            try:
                return self._store([message])
            except Abandoned:
                raise
            except Exception as exc:
                reason = unexpected("write", exc, self.metrics)
            if work.record is None:
                break
            work.status, work.error = ImageStatus.INTERNAL_ERROR, reason
            work.views, work.scores = None, {}
        key = value = None
        with contextlib.suppress(Exception):
            key, value = work.record.key, work.record.to_bytes()
        self.dead_letters.send(message, reason, key, value)
        work.status = ImageStatus.DEAD_LETTER
        return []

    def check(self) -> None:
        """On the worker's main thread: raises ``TooManyFailures`` once most recent records
        failed unexpectedly (a model or database broken for every record)."""
        while self.outcomes:
            self.tripwire.observe(*self.outcomes.popleft())

    def __call__(self, batch: Any) -> Any:
        started = time.perf_counter()
        try:
            detections = self._store(batch.messages)
        except Abandoned:
            raise
        except Exception as exc:
            log.warning("writing a batch of %d failed (%s); writing its records one by one",
                        len(batch.messages), type(exc).__name__)
            detections = [d for m in batch.messages for d in self._store_alone(m)]
        m = self.metrics
        m.stage_seconds.labels(stage="database").observe(time.perf_counter() - started)
        now = time.time()
        for message in batch.messages:
            if message.timestamp_ms > 0:
                m.end_to_end.observe(max(0.0, now - message.timestamp_ms / 1000))
            status = message.payload.status
            outcome = ("dead_letter" if status == ImageStatus.DEAD_LETTER
                       else "ok" if status == ImageStatus.OK else "image_failed")
            m.records.labels(outcome=outcome).inc()
            if message.payload.record is not None:
                m.images.labels(status=str(status)).inc()
            self.outcomes.append((status == ImageStatus.INTERNAL_ERROR,
                                  message.payload.error or ""))
        for d in detections:
            if d["present"]:
                m.detections.labels(brand=d["brand"]).inc()
        return batch
