"""The detector worker: one Kafka consumer in a group, turning posts into Postgres rows.

The main thread owns the consumer and the offset tracker: it polls, hands records to the
chain (``workers.chain``), moves finished work along and commits (``workers.commits``). A
rebalance only leaves a note on the client's IO thread (``workers.consumer``); the main thread
then drains, commits and releases the revoked partitions, on the path shutdown takes too.
"""

from __future__ import annotations

import gc
import logging
import signal
import threading
import time
from collections import deque
from typing import Any

from workers.chain import build_chain
from workers.commits import Committer
from workers.consumer import Consumer, KafkaClient, Partition, Record, dead_letter_producer
from workers.errors import WorkerError
from workers.fetch import Fetcher
from workers.lag import Lag
from workers.liveness import Liveness
from workers.metrics import Health, WorkerMetrics, start_server, stop_server
from workers.offsets import OffsetTracker
from workers.settings import WorkerConfig
from workers.sink import Abandoned, ResultWriter
from workers.strategy import Message, MessageRejected

log = logging.getLogger(__name__)
ONCE_TOPIC_WAIT = 30.0  # --once: a topic still unknown after this long does not exist


class Worker:
    """Polls, submits, commits; its collaborators can be passed in (the step tests do)."""

    def __init__(self, config: WorkerConfig, bundle: Any, metrics: WorkerMetrics | None = None,
                 *, consumer: Consumer | None = None, producer: Any = None,
                 writer: Any = None, fetcher: Any = None) -> None:
        c = self.config = config
        self.metrics = metrics or WorkerMetrics()
        self.metrics.model_info.labels(model_version=bundle.version,
                                       backbone=bundle.backbone_id).set(1)
        self.health = Health(model_loaded=True)
        self.stop_event = threading.Event()
        self.drain_deadline = float("inf")
        self.carry: deque[Message[Record]] = deque()
        self.paused = False
        self.last_record_at = time.monotonic()
        self.tracker = OffsetTracker()
        self.server = start_server(self.metrics, self.health, c.metrics_port, c.metrics_host)
        try:  # a broker that cannot be reached is one line (WorkerError) after 15 s
            self.consumer = consumer or KafkaClient.for_worker(c)
            self.producer = producer or dead_letter_producer(c)
        except WorkerError:
            stop_server(self.server)
            raise
        self.writer = writer or ResultWriter(c.database_url)
        self.writer.register_model(bundle.version, bundle.backbone_id, bundle.thresholds,
                                   bundle.metadata)
        self.fetcher = fetcher or Fetcher(c.fetch)
        self.committer = Committer(self.consumer, self.tracker, self.metrics,
                                   interval=c.commit_interval)
        self.lag = Lag(self.consumer, self.tracker, self.metrics, c.topic)
        self.liveness = Liveness(self.health, stall_after=c.stall_timeout)
        self.chain, self.database = build_chain(
            c, bundle, self.metrics, fetcher=self.fetcher, producer=self.producer,
            writer=self.writer, health=self.health, should_stop=self._past_drain_deadline,
            tracker=self.tracker, commit=self.committer.commit)

    # -- the loop ------------------------------------------------------------------------
    def run(self) -> None:
        gc.freeze()  # a full GC over TensorFlow's objects took 0.2 s, also on kafka's IO thread
        try:
            self._wait_for_topic()
            self.consumer.subscribe(self.config.topic)
            while not self.stop_event.is_set():
                self._poll_once()
                if self.config.once and not self.carry and self.lag.caught_up():
                    break
        finally:
            self.shutdown()

    def _poll_once(self) -> None:
        self.health.beat()
        # While paused, poll only keeps the membership alive; whatever it still returns (a
        # partition a rebalance resumed) is carried, never dropped.
        records = self.consumer.poll(timeout_ms=50 if self.carry else 100)
        released = self._rebalanced(records)
        for r in records:
            if r.partition in released:  # rewound by _release: fetched again
                continue
            self.tracker.started(r.partition, r.offset)
            self.carry.append(Message(*r.partition, r.offset, r.timestamp_ms, r))
            self.last_record_at = time.monotonic()
        self._offer()
        self.chain.poll()
        self.database.check()  # the unexpected-error tripwire raises here, on the main thread
        self.metrics.inflight.set(self.tracker.in_flight())
        self.liveness.check(self.lag.update(),
                            max(self.last_record_at, self.committer.moved_at))

    def _offer(self) -> None:
        """Submit carried-over messages; pause the partitions while the chain is full."""
        while self.carry:
            try:
                self.chain.submit(self.carry[0])
            except MessageRejected:
                self._set_paused(True)
                return
            self.carry.popleft()
        self._set_paused(False)

    def _set_paused(self, paused: bool, *, force: bool = False) -> None:
        if paused == self.paused and not force:
            return
        assignment = self.consumer.assignment()
        (self.consumer.pause if paused else self.consumer.resume)(assignment)
        self.paused = paused
        self.metrics.paused.set(len(assignment) if paused else 0)

    # -- rebalance -----------------------------------------------------------------------
    def _rebalanced(self, fetched: list[Record]) -> set[Partition]:
        """Act on what the IO thread noted during ``poll``; the partitions released."""
        event = self.consumer.events.take()
        if event.revoked:
            self._release(event.revoked, fetched)
        if event.assigned is not None:
            log.info("partitions assigned: %s", sorted(event.assigned))
            self.health.assigned = len(event.assigned)
        if event.revoked or event.assigned is not None:
            self._set_paused(False, force=True)  # kept partitions keep kafka's paused flag
        return event.revoked

    def _release(self, revoked: set[Partition], fetched: list[Record]) -> None:
        """Drain (within the budget), commit, and rewind what was dropped, including records
        the same ``poll`` returned: kafka-python keeps a partition's position when the new
        assignment hands it back, so dropped work would be skipped by this member."""
        log.info("partitions revoked: %s; draining", sorted(revoked))
        self.health.assigned = 0
        self.carry = deque(m for m in self.carry if (m.topic, m.partition) not in revoked)
        self.chain.join(self.config.drain_timeout)
        self.committer.commit(force=True)
        first = {r.partition: r.offset for r in reversed(fetched)}
        for partition in revoked:  # where the group stands (a refused commit moved nothing)
            offsets = [o for o in (self.tracker.committed(partition), first.get(partition))
                       if o is not None]
            if offsets:
                self.consumer.seek(partition, min(offsets))
        self.tracker.forget(list(revoked))
        self.lag.forget(revoked)

    def _wait_for_topic(self) -> None:
        """Subscribing before the topic's metadata is known yields an empty assignment that
        kafka-python only revisits at the next metadata refresh; wait for it instead."""
        topic, give_up = self.config.topic, time.monotonic() + ONCE_TOPIC_WAIT
        if not self.consumer.partitions_for(topic):
            log.info("waiting for topic %r to exist", topic)
        while not self.stop_event.is_set() and not self.consumer.partitions_for(topic):
            if self.config.once and time.monotonic() > give_up:
                raise WorkerError(f"topic {topic!r} does not exist (waited "
                                  f"{ONCE_TOPIC_WAIT:.0f}s; --once does not wait for it)")
            self.health.beat()
            self.stop_event.wait(0.5)

    # -- stopping ------------------------------------------------------------------------
    def _past_drain_deadline(self) -> bool:  # the database stage gives up retrying
        return self.stop_event.is_set() and time.monotonic() > self.drain_deadline

    def request_stop(self, *_: Any) -> None:
        if not self.stop_event.is_set():
            log.info("stopping: draining in-flight work (up to %.0fs)", self.config.drain_timeout)
            self.drain_deadline = time.monotonic() + self.config.drain_timeout
            self.stop_event.set()

    def install_signal_handlers(self) -> None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self.request_stop)

    def shutdown(self) -> None:
        if self.drain_deadline == float("inf"):
            self.drain_deadline = time.monotonic() + self.config.drain_timeout
        try:
            self.carry.clear()
            self.chain.join(self.config.drain_timeout)
            self.committer.commit(force=True)
        except Abandoned:
            log.warning("database unreachable at shutdown: uncommitted work will be redone")
        finally:
            self.chain.close()
            self.consumer.close()  # leaves the group at once, so partitions move now
            self.producer.close(timeout=5)
            self.writer.close()
            self.fetcher.close()
            stop_server(self.server)
