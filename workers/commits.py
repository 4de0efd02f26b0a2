"""When offsets go to Kafka: one code path for the periodic commit, the commit before a
revoked partition is released and the one at shutdown (as Quix's checkpoint), so there is one
place that decides what is safe to commit."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from workers.consumer import CommitRefused, Consumer
from workers.metrics import WorkerMetrics
from workers.offsets import OffsetTracker

log = logging.getLogger(__name__)


class Committer:
    def __init__(self, consumer: Consumer, tracker: OffsetTracker, metrics: WorkerMetrics, *,
                 interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.consumer = consumer
        self.tracker = tracker
        self.metrics = metrics
        self.interval = interval
        self.clock = clock
        self.last = clock()
        self.moved_at = clock()

    def commit(self, force: bool = False) -> bool:
        """Commit what finished since the last commit, at most once per ``interval`` unless
        forced; True when offsets moved."""
        if not force and self.clock() - self.last < self.interval:
            return False
        self.last = self.clock()
        offsets = self.tracker.to_commit()
        if not offsets:
            return False
        try:
            self.consumer.commit(offsets)
        except CommitRefused as exc:
            # Nothing is marked committed: the next commit tries again, or, if the partitions
            # moved, their next owner redoes the work since the last commit (upserts).
            log.warning("offset commit of %s failed: %s", sorted(offsets), exc)
            return False
        self.tracker.mark_committed(offsets)
        self.metrics.commits.inc()
        self.moved_at = self.clock()
        return True
