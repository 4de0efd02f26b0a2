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


def set_reader_password(database_url: str, password: str) -> None:
    """Give the read-only dashboard role its password (from the environment, never logged).

    The literal is quoted by psycopg2 and sent on the raw cursor without parameters, so no
    character of the password (``%`` included) is read as SQL or as a placeholder."""
    from psycopg2 import sql
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.begin() as conn, conn.connection.dbapi_connection.cursor() as cursor:
            cursor.execute(sql.SQL("ALTER ROLE logowatch_reader PASSWORD {}")
                           .format(sql.Literal(password)))
    finally:
        engine.dispose()
