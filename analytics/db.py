"""One way for analytics commands to reach Postgres, with failures a user can act on.

Commands take a URL (flag or ``DATABASE_URL``); connection and "not migrated yet" errors become
``AnalyticsError`` so the CLI prints one line instead of a driver traceback.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import Connection, create_engine, pool
from sqlalchemy.exc import OperationalError, ProgrammingError

from analytics.errors import AnalyticsError


@contextmanager
def transaction(database_url: str | None, *, commit: bool = True) -> Iterator[Connection]:
    """A connection inside one transaction: committed on success, rolled back on any error,
    and always rolled back with ``commit=False`` (a dry run sees its own writes, keeps none)."""
    if not database_url:
        raise AnalyticsError("no database: pass --database-url or set DATABASE_URL")
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        try:
            conn = engine.connect()
        except OperationalError as exc:
            raise AnalyticsError(f"cannot reach the database: {_first_line(exc)}") from None
        with conn, conn.begin() as trans:
            yield conn
            if not commit:
                trans.rollback()
    except OperationalError as exc:  # e.g. the reader role's statement_timeout
        raise AnalyticsError(f"database error: {_first_line(exc)}") from None
    except ProgrammingError as exc:
        code = getattr(exc.orig, "pgcode", None)
        if code == "42P01":  # undefined_table
            raise AnalyticsError(
                f"{_first_line(exc)}; is the database migrated? (logowatch migrate)"
            ) from None
        if code == "42501":  # insufficient_privilege
            raise AnalyticsError(f"{_first_line(exc)}; this command needs a writer role") \
                from None
        raise
    finally:
        engine.dispose()


def _first_line(exc: OperationalError | ProgrammingError) -> str:
    lines = str(exc.orig).strip().splitlines()
    return lines[0] if lines else type(exc.orig).__name__
