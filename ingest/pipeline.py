"""One loop for every source: read a batch, drop what was already produced, produce, record.

Sources only turn their input into batches of records plus the checkpoint to save once the
batch is in Kafka; this module owns the order that makes restarts safe (produce and flush
first, then record ids and checkpoint in one transaction), the counting, and shutdown.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Protocol

from ingest import metrics
from ingest.checkpoints import Checkpoint, CheckpointStore
from ingest.errors import IngestError
from ingest.graph import AccessError, Stopped
from ingest.producer import RecordProducer
from ingest.records import PostRecord

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FATAL = 1
EXIT_SKIPPED = 3  # some input lines were invalid and skipped; the rest was produced
EXIT_UNDELIVERED = 4  # Kafka did not acknowledge some records; rerun to retry them


@dataclass
class Batch:
    records: list[PostRecord]
    skipped: Counter[str] = field(default_factory=Counter)  # reason → count, not produced
    bad_lines: int = 0  # invalid input lines (file sources); they decide exit code 3
    checkpoint: Checkpoint | None = None  # saved only once every record here is delivered
    new: int = 0  # set by the pipeline once handled: records that were not known before


class Source(Protocol):
    key: str  # the checkpoint's source_key, stable across runs
    label: str  # the metrics label: instagram, file, urls

    def batches(self, start: Checkpoint) -> Iterator[Batch]: ...


@dataclass
class Summary:
    produced: int = 0
    known: int = 0  # produced before (an earlier run, or earlier in this one)
    failed: int = 0
    skipped: Counter[str] = field(default_factory=Counter)  # reason → records not produced
    bad_lines: int = 0
    seconds: float = 0.0
    stopped: bool = False
    failed_passes: int = 0  # passes that ended in an error (a daemon tries again)
    error: str = ""  # the last such error
    fatal: bool = False  # a failure no later pass can fix (token, permission)

    def add(self, other: Summary) -> None:
        for name in ("produced", "known", "failed", "bad_lines", "seconds", "failed_passes"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.skipped += other.skipped
        self.error = other.error or self.error
        self.stopped = self.stopped or other.stopped
        self.fatal = self.fatal or other.fatal

    @property
    def exit_code(self) -> int:
        if self.failed:
            return EXIT_UNDELIVERED
        if self.bad_lines:
            return EXIT_SKIPPED
        return EXIT_OK

    def line(self) -> str:
        rate = self.produced / self.seconds if self.seconds > 0 else 0.0
        reasons = ", ".join(f"{r} {n}" for r, n in sorted(self.skipped.items()))
        seen = self.produced + self.known + sum(self.skipped.values()) + self.failed
        text = (f"seen {seen}: produced {self.produced}, known {self.known}, "
                f"skipped {sum(self.skipped.values())}{f' ({reasons})' if reasons else ''}, "
                f"failed {self.failed} in {self.seconds:.1f} s ({rate:.0f} records/s)")
        if self.failed_passes:
            n = self.failed_passes
            text += f"; {n} pass{'es' if n > 1 else ''} failed, the last: {self.error}"
        return text + (" (stopped early)" if self.stopped else "")


class Pipeline:
    """Runs sources through one producer and (optionally) one checkpoint store."""

    def __init__(self, producer: RecordProducer, store: CheckpointStore | None,
                 stop: threading.Event | None = None) -> None:
        self.producer = producer
        self.store = store
        self.stop = stop or threading.Event()

    def run_source(self, source: Source) -> Summary:
        """One pass over one source, resuming from its checkpoint."""
        summary = Summary()
        started = time.monotonic()
        seen: set[str] = set()
        try:
            start = self.store.load(source.key) if self.store else Checkpoint()
            for batch in source.batches(start):
                self._handle(source, batch, seen, summary)
                if summary.failed:
                    log.error("%s: stopping this pass, %d records were not delivered",
                              source.key, summary.failed)
                    break
                if self.stop.is_set():
                    summary.stopped = True
                    break
        except Stopped:
            summary.stopped = True
        except IngestError as exc:  # what was delivered before it stays recorded
            summary.failed_passes, summary.error = 1, str(exc)
            summary.fatal = isinstance(exc, AccessError)
        summary.seconds = time.monotonic() - started
        return summary

    def run(self, sources: Sequence[Source], interval: float | None = None) -> Summary:
        """Pass over every source once, or every ``interval`` seconds until stopped.

        A failed pass (a page that stayed bad through every retry, an unreachable API, records
        Kafka did not take) is logged and tried again next interval; only a failure no later
        pass can fix (the token or a permission) ends a daemon.
        """
        total = Summary()
        while True:
            for source in sources:
                summary = self.run_source(source)
                (log.error if summary.failed_passes else log.info)("%s: %s", source.key,
                                                             summary.line())
                total.add(summary)
                if self.stop.is_set() or summary.fatal or (interval is None and summary.failed):
                    total.stopped = self.stop.is_set()
                    return total
            if interval is None or self.stop.wait(interval):
                total.stopped = self.stop.is_set()
                return total

    def _handle(self, source: Source, batch: Batch, seen: set[str], summary: Summary) -> None:
        for reason, count in batch.skipped.items():
            metrics.RECORDS_SKIPPED.labels(source=source.label, reason=reason).inc(count)
        summary.skipped += batch.skipped
        summary.bad_lines += batch.bad_lines

        fresh: list[PostRecord] = []
        for record in batch.records:
            if record.post_id not in seen:
                seen.add(record.post_id)
                fresh.append(record)
        done = self.store.already_produced(r.post_id for r in fresh) if self.store else set()
        todo = [r for r in fresh if r.post_id not in done]
        batch.new = len(todo)
        known = len(batch.records) - len(todo)
        if known:
            metrics.RECORDS_SKIPPED.labels(source=source.label, reason="known").inc(known)
        summary.known += known

        delivery = self.producer.send_batch(todo) if todo else None
        delivered = delivery.delivered if delivery else []
        failed = len(delivery.failed) if delivery else 0
        metrics.POSTS_PRODUCED.labels(source=source.label).inc(len(delivered))
        if failed:
            metrics.DELIVERY_FAILURES.labels(source=source.label).inc(failed)
        summary.produced += len(delivered)
        summary.failed += failed
        if self.store:
            # The checkpoint only moves when the whole batch is in Kafka; otherwise the next
            # run re-reads the batch and produced_posts keeps the delivered part from repeating.
            self.store.commit(source.key, delivered, None if failed else batch.checkpoint)


def install_signal_handlers(stop: threading.Event) -> Callable[[], None]:
    """SIGTERM/SIGINT finish the current batch, flush and save; a second SIGINT aborts.

    Returns a function restoring the previous handlers (tests run commands in-process).
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def handle(signum: int, frame: FrameType | None) -> None:
        if stop.is_set() and signum == signal.SIGINT:
            raise KeyboardInterrupt
        log.warning("signal %d: finishing the current batch, then stopping", signum)
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGTERM, signal.SIGINT)}

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)

    return restore


def interruptible_sleep(stop: threading.Event) -> Callable[[float], None]:
    """A sleep for the Graph client that ends early (raising ``Stopped``) on shutdown."""

    def sleep(seconds: float) -> None:
        if stop.wait(seconds):
            raise Stopped

    return sleep
