"""least-privilege roles for ingest and for the reader watchdog

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-29 14:40:00

``logowatch_ingest`` may read and upsert the producers' checkpoints and produced ids and nothing
else. ``logowatch_watchdog`` (``logowatch watchdog``) may see every session's statement and
cancel it (the built-in ``pg_read_all_stats`` and ``pg_signal_backend``, which never reach a
superuser's sessions) and read no table. So in the compose stack only ``migrate`` connects as
the owner. Creation and removal follow 0004's rules for cluster-wide roles, reusing its SQL
(0004 never changes); granting the built-in roles needs a superuser migrating user, or on
PostgreSQL 16+ one holding them WITH ADMIN OPTION.
"""

import importlib
from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INGEST = "logowatch_ingest"
INGEST_TABLES = ("ingest_checkpoints", "produced_posts")
WATCHDOG = "logowatch_watchdog"
WATCHDOG_GRANTS = "pg_read_all_stats, pg_signal_backend"

_0004 = importlib.import_module("migrations.versions.0004_worker_role")


def upgrade() -> None:
    op.execute(_0004.ROLE_UP.replace("{role}", INGEST))
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {', '.join(INGEST_TABLES)} TO {INGEST}")
    op.execute(_0004.ROLE_UP.replace("{role}", WATCHDOG))
    op.execute(f"GRANT {WATCHDOG_GRANTS} TO {WATCHDOG}")


def downgrade() -> None:
    op.execute(f"REVOKE {WATCHDOG_GRANTS} FROM {WATCHDOG}")
    # 0004's removal revokes table grants; the watchdog holds none, so it names no table.
    op.execute(_0004.ROLE_DOWN
               .replace("EXECUTE format('REVOKE ALL ON {tables} FROM {role}');", "")
               .replace("{role}", WATCHDOG))
    op.execute(_0004.ROLE_DOWN.replace("{role}", INGEST)
               .replace("{tables}", ", ".join(INGEST_TABLES)))
