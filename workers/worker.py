"""The detector worker: one Kafka consumer in a group, turning posts into Postgres rows.

The main thread owns the consumer (it is not thread-safe) and only polls, submits, moves
finished work along and commits. Offsets are committed only after the database transaction
that holds their results, about once a second, and always on revoke and on shutdown, through
the same drain-and-commit path.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from dataclasses import dataclass, field
from functools import partial
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.consumer.subscription_state import AsyncConsumerRebalanceListener
from kafka.errors import KafkaError
from kafka.structs import OffsetAndMetadata

from detector.preprocess import TileSpec
from workers import stages
from workers.errors import WorkerError
from workers.fetch import FetchConfig, Fetcher
from workers.metrics import Health, WorkerMetrics, serve
from workers.offsets import OffsetTracker
from workers.sink import ResultWriter, retry_forever
from workers.strategy import Batch, BatchStep, Message, MessageRejected, RunInThreads, Sink

log = logging.getLogger(__name__)

STALL_AFTER = 10.0  # seconds without records, with records waiting, before re-seeking
KAFKA_BOOTSTRAP_MS = 15_000  # an unreachable broker is an error after this long
ONCE_TOPIC_WAIT = 30.0  # --once: a topic still unknown after this long does not exist


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
    metrics_port: int | None = None
    metrics_host: str = "127.0.0.1"
    once: bool = False
    dlq_window: int = 200
    dlq_max_ratio: float = 0.5
    pseudonymise: Any = None
    kafka_options: dict[str, Any] = field(default_factory=dict)


class Worker(AsyncConsumerRebalanceListener):
    def __init__(self, config: WorkerConfig, bundle: Any,
                 metrics: WorkerMetrics | None = None) -> None:
        self.config = config
        self.bundle = bundle
        self.metrics = metrics or WorkerMetrics()
        self.health = Health()
        self.health.model_loaded = True
        self.tracker = OffsetTracker()
        self.stop_event = threading.Event()
        self.paused = False
        self.carry: list[Message[Any]] = []
        self._last_commit = 0.0
        self._last_lag = 0.0
        self.end_offsets: dict[TopicPartition, int] | None = None
        self.metrics.model_info.labels(model_version=bundle.version,
                                       backbone=bundle.backbone_id).set(1)
        self._server = None
        if config.metrics_port is not None:
            try:
                self._server = serve(self.metrics, self.health, config.metrics_port,
                                     config.metrics_host)
            except (OSError, OverflowError) as exc:
                raise WorkerError(f"cannot serve metrics on {config.metrics_host}:"
                                  f"{config.metrics_port}: {getattr(exc, 'strerror', None) or exc}"
                                  ) from None
        try:
            self.consumer = KafkaConsumer(
                bootstrap_servers=config.bootstrap, group_id=config.group,
                enable_auto_commit=False, auto_offset_reset="earliest",
                max_poll_records=max(config.batch_size, 64),
                max_poll_interval_ms=300_000, session_timeout_ms=45_000,
                bootstrap_timeout_ms=KAFKA_BOOTSTRAP_MS, **config.kafka_options,
            )
            self.producer = KafkaProducer(bootstrap_servers=config.bootstrap, acks="all",
                                          bootstrap_timeout_ms=KAFKA_BOOTSTRAP_MS,
                                          **config.kafka_options)
        except KafkaError as exc:
            self._stop_server()
            raise WorkerError(f"cannot reach Kafka at {config.bootstrap}: {exc}") from None
        self.writer = ResultWriter(config.database_url)
        self.writer.register_model(bundle.version, bundle.backbone_id, bundle.thresholds,
                                   bundle.metadata.get("metrics", {}))
        self.fetcher = Fetcher(config.fetch)
        self.dead_letters = stages.DeadLetters(
            self.producer, config.dlq_topic or f"{config.topic}.dlq", self.metrics,
            window=config.dlq_window, max_ratio=config.dlq_max_ratio)
        self.internal_errors = stages.Tripwire(
            "failed with an unexpected error", "The model, the database or the code is "
            "broken for every record; fix it, then restart the worker (those records keep "
            "their internal_error status until they are produced again).",
            window=config.dlq_window, max_ratio=config.dlq_max_ratio)
        self._outcomes: list[tuple[bool, str]] = []
        self.chain = self._build_chain()

    # -- the chain ---------------------------------------------------------------------
    def _build_chain(self) -> stages.ParseStep:
        c = self.config
        done = Sink(self._finished, self._maybe_commit)
        write = RunInThreads(self._write, done, workers=1, max_pending=2, name="db")
        infer = RunInThreads(partial(stages.infer, bundle=self.bundle, metrics=self.metrics),
                             write, workers=1, max_pending=2, name="model")
        batch = BatchStep(infer, size=c.batch_size, max_wait=c.max_wait_ms / 1000)
        fetch = RunInThreads(
            partial(stages.fetch_and_prepare, fetcher=self.fetcher,
                    size=self.bundle.input_size, tiles=c.tiles, max_pixels=c.max_pixels,
                    metrics=self.metrics),
            batch, workers=c.fetch_workers, max_pending=c.max_inflight, name="fetch",
        )
        return stages.ParseStep(self.dead_letters, fetch)

    def _store(self, messages: list[Message[Any]]) -> list[dict[str, Any]]:
        """One transaction for ``messages``; connection failures are retried until the drain
        deadline (then ``_Abandoned``), anything else raises."""
        posts, detections, embeddings = stages.rows_for(Batch(messages), self.bundle,
                                                        self.config.pseudonymise)

        def failed(_: BaseException) -> None:
            self.health.db_ok = False
            self.metrics.db_errors.inc()

        def recovered() -> None:
            self.health.db_ok = True

        ok = retry_forever(lambda: self.writer.write(posts, detections, embeddings),
                           should_stop=self._abandon_writes, on_error=failed, on_ok=recovered)
        if not ok:
            raise _Abandoned
        return detections

    def _store_alone(self, message: Message[Any]) -> list[dict[str, Any]]:
        """A record whose batch could not be written: its own rows, else a status row
        (``internal_error``), else a dead letter, so no record can stop the worker."""
        work = message.payload
        reason = ""
        for _ in range(2):  # the record's rows, then its status row alone
            try:
                return self._store([message])
            except _Abandoned:
                raise
            except Exception as exc:
                reason = stages.unexpected("write", exc, self.metrics)
            if work.record is None:
                break
            work.status, work.error, work.embedding, work.scores = stages.INTERNAL, reason, None, {}
        key = value = None
        with contextlib.suppress(Exception):
            key, value = work.record.key, work.record.to_bytes()
        self.dead_letters.send(message, reason, key, value)
        work.status = stages.DEAD
        return []

    def _write(self, batch: Any) -> Any:
        started = time.perf_counter()
        try:
            detections = self._store(batch.messages)
        except _Abandoned:
            raise
        except Exception as exc:
            log.warning("writing a batch of %d failed (%s); writing its records one by one",
                        len(batch.messages), type(exc).__name__)
            detections = [d for m in batch.messages for d in self._store_alone(m)]
        self.metrics.stage_seconds.labels(stage="database").observe(time.perf_counter() - started)
        now = time.time()
        for m in batch.messages:
            if m.timestamp_ms > 0:
                self.metrics.end_to_end.observe(max(0.0, now - m.timestamp_ms / 1000))
            outcome = ("dead_letter" if m.payload.status == stages.DEAD
                       else "ok" if m.payload.status == "ok" else "image_failed")
            self.metrics.records.labels(outcome=outcome).inc()
            if m.payload.record is not None:
                self.metrics.images.labels(status=m.payload.status).inc()
        for d in detections:
            if d["present"]:
                self.metrics.detections.labels(brand=d["brand"]).inc()
        return batch

    def _abandon_writes(self) -> bool:
        return self.stop_event.is_set() and time.monotonic() > self._drain_deadline

    _drain_deadline = float("inf")
    _last_record_at = 0.0
    _closed = False
    _in_rebalance = False

    def _finished(self, message: Message[Any]) -> None:
        for m in message.payload.messages:
            self.tracker.finished((m.topic, m.partition), m.offset)
            self._outcomes.append((m.payload.status == stages.INTERNAL, m.payload.error or ""))

    # -- offsets -----------------------------------------------------------------------
    def _maybe_commit(self, force: bool = False) -> None:
        if self._in_rebalance:  # the IO thread cannot block on a commit; the callback awaits it
            return
        if not force and time.monotonic() - self._last_commit < self.config.commit_interval:
            return
        offsets = self.tracker.to_commit()
        self._last_commit = time.monotonic()
        if not offsets:
            return
        self.consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                              for (t, p), o in offsets.items()})
        self.tracker.mark_committed(offsets)
        self.metrics.commits.inc()

    def _drain(self, timeout: float) -> None:
        """Finish what is in flight (or give up at the deadline) and commit it."""
        self.carry = []
        self.chain.join(timeout)
        self._maybe_commit(force=True)

    # -- rebalance -----------------------------------------------------------------------
    # kafka-python 3 runs these on its IO thread: blocking consumer calls are not allowed
    # there, so the drain runs the chain (other threads do the work) and the commit is awaited.
    async def on_partitions_revoked(self, revoked: Any) -> None:
        if self._closed:  # consumer.close() revokes too; shutdown already drained
            return
        parts = [(tp.topic, tp.partition) for tp in revoked]
        log.info("partitions revoked: %s; draining", sorted(parts))
        self._in_rebalance = True
        try:
            self.carry = [m for m in self.carry if (m.topic, m.partition) not in parts]
            self.chain.join(self.config.drain_timeout)
        finally:
            self._in_rebalance = False
        offsets = self.tracker.to_commit()
        if offsets:
            await self.consumer.commit_async({
                TopicPartition(t, p): OffsetAndMetadata(o, "", -1) for (t, p), o in offsets.items()
            })
            self.tracker.mark_committed(offsets)
            self.metrics.commits.inc()
        # kafka-python 3 keeps a partition's position (and paused flag) when the new
        # assignment hands it back, so work dropped here would be skipped, not redone:
        # rewind each revoked partition to its oldest unfinished record first.
        for topic, partition in parts:
            offset = self.tracker.committable((topic, partition))
            if offset is not None:
                with contextlib.suppress(ValueError):  # no longer assigned
                    self.consumer.seek(TopicPartition(topic, partition), offset)
        self.tracker.forget(parts)
        for topic, partition in parts:  # another worker reports these now
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(topic, str(partition))
        if self.paused:
            self.consumer.resume(*revoked)
            self.paused = False
            self.metrics.paused.set(0)

    async def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("partitions assigned: %s", sorted((tp.topic, tp.partition) for tp in assigned))
        self.health.assigned = len(assigned)
        self.paused = False
        self.metrics.paused.set(0)

    def _set_paused(self, paused: bool) -> None:
        assignment = list(self.consumer.assignment())
        if paused and not self.paused:
            self.consumer.pause(*assignment)
        elif not paused and self.paused:
            self.consumer.resume(*assignment)
        self.paused = paused
        self.metrics.paused.set(len(assignment) if paused else 0)

    # -- the loop ------------------------------------------------------------------------
    def _offer(self) -> None:
        """Submit carried-over messages; pause the partitions while the chain is full."""
        while self.carry:
            try:
                self.chain.submit(self.carry[0])
            except MessageRejected:
                self._set_paused(True)
                return
            self.carry.pop(0)
        self._set_paused(False)

    def _poll_once(self) -> None:
        self.health.beat()
        # With a carry-over the partitions are paused and poll only keeps the membership
        # alive; whatever it does return (a partition resumed by a rebalance) is kept, never
        # dropped.
        batches = self.consumer.poll(timeout_ms=50 if self.carry or self.paused else 100)
        if batches:
            self._last_record_at = time.monotonic()
        for tp, records in batches.items():
            for r in records:
                self.tracker.started((tp.topic, tp.partition), r.offset)
                self.carry.append(Message(tp.topic, tp.partition, r.offset, r.timestamp, r))
        self._offer()
        self.chain.poll()
        outcomes, self._outcomes = self._outcomes, []
        for failed, reason in outcomes:  # raised here, outside the chain, so the drain works
            self.internal_errors.observe(failed, reason)
        self.metrics.inflight.set(self.tracker.in_flight())
        if time.monotonic() - self._last_lag > 5:
            self._update_lag()

    def _update_lag(self) -> None:
        self._last_lag = time.monotonic()
        assignment = list(self.consumer.assignment())
        if not assignment:
            return
        try:
            ends = self.consumer.end_offsets(assignment)
            self._unstick(assignment, ends)
            for tp in assignment:
                committed = self.tracker.committable((tp.topic, tp.partition))
                if committed is None:
                    committed = self.consumer.committed(tp) or 0
                self.metrics.lag.labels(topic=tp.topic, partition=str(tp.partition)).set(
                    max(0, ends.get(tp, 0) - committed))
        except KafkaError as exc:  # broker unreachable: lag is a metric, never a reason to exit
            log.warning("consumer lag not updated: %s", exc)

    def _unstick(self, assignment: list[TopicPartition], ends: dict[Any, int]) -> None:
        """kafka-python 3 sometimes stops fetching a partition that has records waiting
        (a position left awaiting offset validation, dpkp/kafka-python#3106): polls return
        nothing while the lag grows. When nothing has arrived for a while although the
        partitions are neither paused nor busy and records wait, seek each of them to its
        own position: that resets the fetch state without skipping or repeating anything."""
        idle = time.monotonic() - self._last_record_at
        if self.paused or self.carry or self.tracker.in_flight() or idle < STALL_AFTER:
            return
        stuck = []
        for tp in assignment:
            position = self.consumer.position(tp, timeout_ms=5000)
            if position is not None and ends.get(tp, 0) > position:
                stuck.append((tp, position))
        for tp, position in stuck:
            self.consumer.seek(tp, position)
        if stuck:
            log.warning("no records for %.0fs although %d partition(s) have some waiting: "
                        "re-seeking them (kafka-python fetch stall)", idle, len(stuck))
            self._last_record_at = time.monotonic()

    def _caught_up(self) -> bool:
        """``--once``: every partition's committed offset reached the end seen at start."""
        if self.end_offsets is None:
            parts = self.consumer.partitions_for_topic(self.config.topic)
            if not parts:
                return False
            tps = [TopicPartition(self.config.topic, p) for p in parts]
            self.end_offsets = self.consumer.end_offsets(tps)
        if self.tracker.in_flight() or self.carry:
            return False
        for tp, end in self.end_offsets.items():
            done = self.tracker.committable((tp.topic, tp.partition))
            if done is None:
                done = self.consumer.committed(tp) or 0
            if done < end:
                return False
        return True

    def _wait_for_topic(self) -> None:
        """Subscribing before the topic's metadata is known yields an empty assignment that
        kafka-python only revisits at the next metadata refresh; wait for it instead."""
        warned = False
        give_up = time.monotonic() + ONCE_TOPIC_WAIT
        while not self.stop_event.is_set():
            if self.consumer.partitions_for_topic(self.config.topic):
                return
            if self.config.once and time.monotonic() > give_up:
                raise WorkerError(f"topic {self.config.topic!r} does not exist (waited "
                                  f"{ONCE_TOPIC_WAIT:.0f}s; --once does not wait for it)")
            if not warned:
                log.info("waiting for topic %r to exist", self.config.topic)
                warned = True
            self.health.beat()
            self.stop_event.wait(0.5)

    def run(self) -> None:
        self._last_record_at = time.monotonic()
        try:
            self._wait_for_topic()
            self.consumer.subscribe([self.config.topic], listener=self)
            while not self.stop_event.is_set():
                self._poll_once()
                if self.config.once and self._caught_up():
                    break
        finally:
            self.shutdown()

    def request_stop(self, *_: Any) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: draining in-flight work (up to %.0fs)", self.config.drain_timeout)
            self._drain_deadline = time.monotonic() + self.config.drain_timeout
            self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.request_stop)
        signal.signal(signal.SIGINT, self.request_stop)

    def shutdown(self) -> None:
        if self._drain_deadline == float("inf"):
            self._drain_deadline = time.monotonic() + self.config.drain_timeout
        try:
            self._drain(self.config.drain_timeout)
        except _Abandoned:
            log.warning("database unreachable at shutdown: uncommitted work will be redone")
        finally:
            self._closed = True
            self.chain.close()
            self.consumer.close()  # leaves the group at once, so partitions move now
            self.producer.close(timeout=5)
            self.writer.close()
            self.fetcher.close()
            self._stop_server()

    def _stop_server(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()


class _Abandoned(Exception):
    """The database stayed down past the drain deadline."""
