"""The ``logowatch_reader`` role sees the views and nothing else, and can write nothing."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from workers import migrate

pytestmark = pytest.mark.integration

VIEWS = ("brand_catalogue", "brand_current_model", "brand_mentions", "brand_daily",
         "brand_top_accounts", "brand_hashtags_image_only", "brand_cooccurrence")


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
