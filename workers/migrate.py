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
    """Give the read-only dashboard role its password (from the environment, never logged)."""
    import psycopg2.extensions
    from sqlalchemy import create_engine

    engine = create_engine(database_url)
    try:
        with engine.begin() as conn:
            raw = conn.connection.dbapi_connection
            literal = psycopg2.extensions.QuotedString(password)
            literal.prepare(raw)  # type: ignore[arg-type]
            conn.exec_driver_sql(
                "ALTER ROLE logowatch_reader PASSWORD " + literal.getquoted().decode()
            )
    finally:
        engine.dispose()
