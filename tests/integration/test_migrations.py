"""Migrations go up, down and up again, and agree with the SQLAlchemy models."""

from __future__ import annotations

import subprocess
import sys

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from analytics.schema import Base
from logowatch import migrate

pytestmark = pytest.mark.integration

TABLES = {"posts", "detections", "embeddings", "models", "ingest_checkpoints", "produced_posts"}


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    try:
        return set(inspect(engine).get_table_names()) - {"alembic_version"}
    finally:
        engine.dispose()


def test_migrate_up_down_up(database_url: str) -> None:
    migrate.upgrade(database_url)
    assert _tables(database_url) >= TABLES
    migrate.downgrade(database_url, "base")
    assert _tables(database_url) == set()
    migrate.upgrade(database_url)
    assert _tables(database_url) >= TABLES
    assert migrate.current(database_url) is not None


def test_models_and_migrations_agree(database_url: str) -> None:
    migrate.upgrade(database_url)
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "compare_server_default": True}
            )
            diff = compare_metadata(context, Base.metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_the_migrate_command_reports_the_revision(database_url: str) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "logowatch.cli", "migrate", "--database-url", database_url],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "database at revision" in result.stdout


def test_the_migrate_command_fails_in_one_line_when_the_database_is_down() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "logowatch.cli", "migrate",
         "--database-url", "postgresql+psycopg2://u@127.0.0.1:1/none"],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if "error" in line]
    assert len(errors) == 1 and "cannot reach the database" in errors[0]
    assert "Traceback" not in result.stderr
