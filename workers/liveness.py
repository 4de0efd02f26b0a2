"""The guard against a worker that is alive and ready but does nothing.

Records waiting (lag > 0) and no progress (no record consumed, no offset committed) for
``stall_after`` seconds turn ``/healthz`` unhealthy; twice that and the worker exits non-zero
so its supervisor restarts it. A restart is a fresh consumer and a fresh group membership,
which no amount of re-seeking inside a stuck client gives. While the database is down the
clock stops: the database stage reports that itself, and a restart would not help.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from workers.errors import WorkerError
from workers.metrics import Health


class Stalled(WorkerError):
    """No progress with records waiting: exit so the supervisor restarts the worker."""


class Liveness:
    def __init__(self, health: Health, *, stall_after: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.health = health
        self.stall_after = stall_after
        self.clock = clock
        self.quiet_since = clock()

    def check(self, lag: int, progress_at: float) -> None:
        """Every loop: the latest total lag and when a record last arrived or an offset last
        moved (same clock). Raises ``Stalled`` at the end."""
        now = self.clock()
        if lag <= 0 or not self.health.db_ok:
            self.quiet_since = now  # nothing waits, or the database stage says why
        idle = now - max(progress_at, self.quiet_since)
        if idle < self.stall_after:
            self.health.stalled = None
            return
        if idle >= 2 * self.stall_after:
            raise Stalled(f"no progress for {idle:.0f}s although {lag} record(s) wait; "
                          "exiting so the supervisor restarts the worker")
        self.health.stalled = f"no progress for {idle:.0f}s with lag {lag}"
