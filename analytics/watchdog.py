"""A limit on the reader's statements that the reader cannot lift.

``statement_timeout`` is a user setting: Postgres lets any role ``SET statement_timeout = 0``,
whatever ``ALTER ROLE ... SET`` gave it as a default, and has no setting a role cannot change
for itself. So the limit is enforced from outside the session: ``logowatch watchdog`` polls
``pg_stat_activity`` and cancels every statement of the watched role that has run longer than
the limit. It connects as a role that may see and signal the reader's backends (a superuser,
or one granted ``pg_read_all_stats`` and ``pg_signal_backend``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from sqlalchemy import Connection, create_engine, pool, text
from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

OVERDUE = text("""
    SELECT pid, now() - query_start AS ran, pg_cancel_backend(pid) AS cancelled
    FROM pg_stat_activity
    WHERE usename = :role AND state = 'active' AND pid <> pg_backend_pid()
      AND now() - query_start > make_interval(secs => :limit)
""")


def cancel_overdue(conn: Connection, role: str, limit_s: float) -> list[int]:
    """Cancel the role's statements older than ``limit_s``; the pids that were signalled."""
    cancelled = []
    for row in conn.execute(OVERDUE, {"role": role, "limit": limit_s}):
        if row.cancelled:
            log.warning("cancelled a %s statement after %s (pid %s)", role, row.ran, row.pid)
            cancelled.append(row.pid)
    return cancelled


def watch(database_url: str, role: str, limit_s: float, interval_s: float,
          should_stop: Callable[[], bool] = lambda: False) -> None:
    """Poll until ``should_stop``; a lost connection is retried at the next poll."""
    engine = create_engine(database_url, poolclass=pool.NullPool)
    log.info("watching %s statements, limit %.0f s", role, limit_s)
    try:
        while not should_stop():
            try:
                with engine.connect() as conn:
                    while not should_stop():
                        cancel_overdue(conn, role, limit_s)
                        conn.commit()  # a fresh snapshot of pg_stat_activity each poll
                        time.sleep(interval_s)
            except OperationalError as exc:
                log.warning("watchdog: database unreachable (%s); retrying",
                            str(exc.orig).strip().splitlines()[0])
                time.sleep(interval_s)
    finally:
        engine.dispose()
