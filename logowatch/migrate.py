"""Schema migrations: Alembic, pointed at the ``migrations`` package, driven from Python."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str) -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(Path(migrations.__file__).parent))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def downgrade(database_url: str, revision: str) -> None:
    command.downgrade(alembic_config(database_url), revision)


def current(database_url: str) -> str | None:
    from alembic.runtime.migration import MigrationContext
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()


# The login roles the migrations create, and the variable each one's password comes from.
ROLE_PASSWORDS = {
    "logowatch_reader": "LOGOWATCH_READER_PASSWORD",
    "logowatch_worker": "LOGOWATCH_WORKER_PASSWORD",
    "logowatch_ingest": "LOGOWATCH_INGEST_PASSWORD",
    "logowatch_watchdog": "LOGOWATCH_WATCHDOG_PASSWORD",
}


def set_role_password(database_url: str, role: str, password: str) -> None:
    """Give one of ``ROLE_PASSWORDS``' roles its password (from the environment, never logged).

    The literal is quoted by psycopg2 and sent on the raw cursor without parameters, so no
    character of the password (``%`` included) is read as SQL or as a placeholder."""
    from psycopg2 import sql
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.begin() as conn, conn.connection.dbapi_connection.cursor() as cursor:
            cursor.execute(sql.SQL("ALTER ROLE {} PASSWORD {}")
                           .format(sql.Identifier(role), sql.Literal(password)))
    finally:
        engine.dispose()
