"""Where each source got to, and which posts were already produced, kept in Postgres.

A restart resumes from the checkpoint instead of re-reading a feed from the top, and the
``produced_posts`` table makes "never produce a post twice" hold across runs and sources. The
order is produce → flush → record, so a crash between Kafka's acknowledgement and the database
commit produces those posts again on restart: at-least-once, which the worker's idempotent
upserts absorb. The tables belong to ``analytics.schema``; this module only speaks SQL to them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.errors import IngestError


@dataclass(frozen=True)
class Checkpoint:
    """``cursor`` is source-defined JSON (e.g. a paging cursor); ``newest_at`` the boundary."""

    cursor: dict[str, Any] | None = None
    newest_at: datetime | None = None


@contextmanager
def _database(what: str) -> Iterator[None]:
    """A database failure is an :class:`IngestError` of one line: a daemon logs it and tries
    again next pass, a single run exits 1 after its summary."""
    from sqlalchemy.exc import SQLAlchemyError

    try:
        yield
    except SQLAlchemyError as exc:
        first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
        raise IngestError(f"checkpoint database failed ({what}): {first}") from None


class CheckpointStore:
    """Reads and writes ``ingest_checkpoints`` and ``produced_posts``."""

    def __init__(self, database_url: str) -> None:
        from sqlalchemy import create_engine

        self.engine = create_engine(database_url, pool_pre_ping=True)
        self._check()

    def _check(self) -> None:
        from sqlalchemy import text
        from sqlalchemy.exc import SQLAlchemyError

        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1 FROM ingest_checkpoints LIMIT 1"))
        except SQLAlchemyError as exc:
            first = str(getattr(exc, "orig", exc)).strip().splitlines()[0]
            raise IngestError(
                f"cannot use the checkpoint database ({first}); run `logowatch migrate` or "
                "pass --no-checkpoint"
            ) from None

    def load(self, source_key: str) -> Checkpoint:
        from sqlalchemy import text

        with _database("load"), self.engine.connect() as conn:
            row = conn.execute(
                text("SELECT cursor, newest_at FROM ingest_checkpoints WHERE source_key = :k"),
                {"k": source_key},
            ).first()
        if row is None:
            return Checkpoint()
        cursor = None
        if row.cursor:
            try:
                cursor = json.loads(row.cursor)
            except ValueError:
                cursor = None  # a cursor we cannot read is a pass started over, not a crash
        return Checkpoint(cursor if isinstance(cursor, dict) else None, row.newest_at)

    def already_produced(self, post_ids: Iterable[str]) -> set[str]:
        from sqlalchemy import text

        ids = list(post_ids)
        if not ids:
            return set()
        with _database("dedup"), self.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT post_id FROM produced_posts WHERE post_id = ANY(:ids)"),
                {"ids": ids},
            )
            return {r.post_id for r in rows}

    def commit(self, source_key: str, produced: Iterable[str],
               checkpoint: Checkpoint | None) -> None:
        """Record delivered ids and (optionally) advance the checkpoint in one transaction."""
        from sqlalchemy import text

        ids = list(produced)
        with _database("commit"), self.engine.begin() as conn:
            if ids:
                conn.execute(
                    text(
                        "INSERT INTO produced_posts (post_id, source_key) "
                        "SELECT unnest(CAST(:ids AS text[])), :k ON CONFLICT DO NOTHING"
                    ),
                    {"ids": ids, "k": source_key},
                )
            if checkpoint is not None:
                conn.execute(
                    text(
                        "INSERT INTO ingest_checkpoints (source_key, cursor, newest_at, updated_at)"
                        " VALUES (:k, :c, :n, now()) ON CONFLICT (source_key) DO UPDATE SET "
                        "cursor = EXCLUDED.cursor, newest_at = EXCLUDED.newest_at, "
                        "updated_at = now()"
                    ),
                    {
                        "k": source_key,
                        "c": json.dumps(checkpoint.cursor) if checkpoint.cursor else None,
                        "n": checkpoint.newest_at,
                    },
                )

    def close(self) -> None:
        self.engine.dispose()
