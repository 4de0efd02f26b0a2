"""How far behind the worker is: the lag gauge per partition, the total the liveness guard
watches, and whether a ``--once`` run has caught up with the end it saw at start."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable

from workers.consumer import Consumer, ConsumerError, Partition
from workers.metrics import WorkerMetrics
from workers.offsets import OffsetTracker

log = logging.getLogger(__name__)


class Lag:
    def __init__(self, consumer: Consumer, tracker: OffsetTracker, metrics: WorkerMetrics,
                 topic: str, *, every: float = 5.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.tracker = tracker
        self.metrics = metrics
        self.topic = topic
        self.every = every
        self.clock = clock
        self.last = float("-inf")
        self.total = 0
        self.start_ends: dict[Partition, int] | None = None

    def _done(self, partition: Partition) -> int:
        done = self.tracker.committable(partition)
        return done if done is not None else (self.consumer.committed(partition) or 0)

    def update(self) -> int:
        """Refresh the gauge every ``every`` seconds; the last total lag. A broker that does
        not answer keeps the last values: lag is a metric, never a reason to exit."""
        if self.clock() - self.last < self.every:
            return self.total
        self.last = self.clock()
        assignment = self.consumer.assignment()
        try:
            ends = self.consumer.end_offsets(assignment) if assignment else {}
            lags = {p: max(0, ends.get(p, 0) - self._done(p)) for p in assignment}
        except ConsumerError as exc:
            log.warning("consumer lag not updated: %s", exc)
            return self.total
        for (topic, partition), value in lags.items():
            self.metrics.lag.labels(topic=topic, partition=str(partition)).set(value)
        self.total = sum(lags.values())
        return self.total

    def forget(self, partitions: set[Partition]) -> None:
        """Drop the gauges of partitions this worker no longer owns (another reports them)."""
        for topic, partition in partitions:
            with contextlib.suppress(KeyError):
                self.metrics.lag.remove(topic, str(partition))

    def caught_up(self) -> bool:
        """Every partition's committed offset reached the end seen at the first call."""
        try:
            if self.start_ends is None:
                parts = self.consumer.partitions_for(self.topic)
                if not parts:
                    return False
                self.start_ends = self.consumer.end_offsets({(self.topic, p) for p in parts})
            return all(self._done(p) >= end for p, end in self.start_ends.items())
        except ConsumerError as exc:
            log.warning("cannot tell whether the topic is done yet: %s", exc)
            return False
