"""The ``logowatch_reader`` role sees the views and nothing else, and can write nothing."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections.abc import Iterator

import psycopg2
import psycopg2.errors
import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from logowatch import migrate

pytestmark = pytest.mark.integration

VIEWS = ("brand_catalogue", "brand_current_model", "brand_mentions", "brand_daily",
         "brand_top_accounts", "brand_hashtags_image_only", "brand_cooccurrence",
         "model_provenance")


@pytest.fixture(scope="module")
def reader(migrated_db: str) -> Iterator[Engine]:
    url = make_url(migrated_db).set(username="logowatch_reader")
    engine = create_engine(url)
    yield engine
    engine.dispose()


def _refused(engine: Engine, sql: str) -> str:
    with engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text(sql))
    return str(caught.value.orig)


def test_reader_can_select_every_view(reader: Engine) -> None:
    with reader.connect() as conn:
        for view in VIEWS:
            conn.execute(text(f"SELECT * FROM {view} LIMIT 1")).all()


@pytest.mark.parametrize("table", ["posts", "detections", "embeddings", "brands", "models"])
def test_reader_is_refused_on_base_tables(reader: Engine, table: str) -> None:
    assert "permission denied" in _refused(reader, f"SELECT * FROM {table}")


@pytest.mark.parametrize("sql", [
    "INSERT INTO brand_catalogue (brand) VALUES ('x')",
    "DELETE FROM brand_daily",
    "INSERT INTO brands (brand) VALUES ('x')",
    "UPDATE posts SET caption = 'x'",
    "CREATE TABLE sneaky (x int)",
])
def test_reader_is_refused_on_any_write(reader: Engine, sql: str) -> None:
    message = _refused(reader, sql)
    reasons = ("permission denied", "read-only transaction", "cannot insert into view",
               "cannot delete from view")
    assert any(reason in message for reason in reasons), message


def test_reader_cannot_lift_its_read_only_default_to_write(reader: Engine) -> None:
    with reader.connect() as conn:
        conn.execute(text("SET transaction_read_only = off"))
        with pytest.raises(DBAPIError, match="permission denied"):
            conn.execute(text("INSERT INTO brands (brand) VALUES ('x')"))


def test_downgrade_keeps_the_role_while_another_database_still_grants_it(
    pg_cluster, migrated_db: str  # type: ignore[no-untyped-def]
) -> None:
    other = pg_cluster.create_database("t_reader_other")
    try:
        migrate.upgrade(other)
        migrate.downgrade(other, "0002")
        with create_engine(migrated_db).connect() as conn:
            assert conn.execute(text(
                "SELECT 1 FROM pg_roles WHERE rolname = 'logowatch_reader'")).scalar() == 1
        migrate.upgrade(other)  # and it comes back cleanly on top of the surviving role
    finally:
        pg_cluster.drop_database("t_reader_other")


@pytest.mark.parametrize("sql", [
    "CREATE TEMP TABLE sneaky (x int)",
    "CREATE TEMP VIEW sneaky AS SELECT 1",
    "CREATE TEMP SEQUENCE sneaky",
    "CREATE FUNCTION pg_temp.sneaky() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    "CREATE TABLE sneaky (x int)",
    "CREATE SCHEMA sneaky",
    "SELECT lo_create(0)",
    "SELECT lo_creat(-1)",
    "SELECT lo_from_bytea(0, 'x')",
])
def test_reader_creates_nothing_even_in_a_read_write_transaction(
    migrated_db: str, sql: str
) -> None:
    conn = psycopg2.connect(make_url(migrated_db).set(
        username="logowatch_reader", drivername="postgresql").render_as_string(False))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("BEGIN READ WRITE")
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute(sql)
    finally:
        conn.close()


def test_reader_statement_outrunning_the_limit_is_cancelled_though_it_set_no_timeout(
    migrated_db: str, reader: Engine
) -> None:
    # As the compose stack runs it: its own role, which may only see and cancel statements.
    as_watchdog = make_url(migrated_db).set(username="logowatch_watchdog")
    watchdog = subprocess.Popen(
        [sys.executable, "-m", "logowatch.cli", "watchdog", "--database-url",
         as_watchdog.render_as_string(hide_password=False),
         "--limit", "1", "--interval", "0.2"], stderr=subprocess.PIPE, text=True)
    try:
        with reader.connect() as conn:
            conn.execute(text("SET statement_timeout = 0"))
            assert conn.execute(text("SHOW statement_timeout")).scalar() == "0"
            with pytest.raises(DBAPIError) as caught:
                conn.execute(text("SELECT pg_sleep(300)"))
        assert isinstance(caught.value.orig, psycopg2.errors.QueryCanceled)
    finally:
        watchdog.send_signal(signal.SIGTERM)
        _, log = watchdog.communicate(timeout=60)
    assert watchdog.returncode == 0, log
    assert "cancelled a logowatch_reader statement" in log
