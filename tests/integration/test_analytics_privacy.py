"""forget and retention leave no row of the person, post or period in any table."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import Engine, create_engine, text

from analytics.privacy import pseudonymise
from logowatch.cli import main
from tests.integration.analytics_seed import seed

pytestmark = pytest.mark.integration

PER_POST = ("posts", "detections", "embeddings", "produced_posts", "brand_labels")


@pytest.fixture
def db(migrated_db: str) -> Engine:
    """The seed, plus an embedding, a producer id and a person's label for every post; fresh
    for each test."""
    engine = create_engine(migrated_db)
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE posts, detections, embeddings, produced_posts, models, "
                          "brands, brand_aliases, brand_model_pins, brand_text_matches, "
                          "brand_labels"))
    seed(migrated_db)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO embeddings (post_id, backbone, dim, vector) "
                          "SELECT post_id, 'inception_v3', 2, '\\x00010203' FROM posts"))
        conn.execute(text("INSERT INTO produced_posts (post_id, source_key) "
                          "SELECT post_id, 'test' FROM posts"))
        conn.execute(text("INSERT INTO brand_labels (post_id, brand, present) "
                          "SELECT post_id, 'patagonia', true FROM posts"))
    yield engine
    engine.dispose()


def count(engine: Engine, table: str, where: str, **params: object) -> int:
    with engine.connect() as conn:
        return conn.execute(text(f"SELECT count(*) FROM {table} WHERE {where}"), params).scalar()


def ids_everywhere(engine: Engine, ids: list[str]) -> dict[str, int]:
    return {t: count(engine, t, "post_id = ANY(:ids)", ids=ids) for t in PER_POST}


def test_forget_author_removes_their_posts_everywhere_and_only_theirs(
    db: Engine, migrated_db: str, capsys: pytest.CaptureFixture[str]
) -> None:
    before = count(db, "posts", "true")
    assert main(["forget", "--author", "@Alice", "--database-url", migrated_db]) == 0
    assert ids_everywhere(db, ["p1", "p3", "p8"]) == dict.fromkeys(PER_POST, 0)
    assert count(db, "posts", "true") == before - 3
    assert count(db, "detections", "post_id = 'p4'") == 2  # other people's rows untouched
    assert "removed 3 posts" in capsys.readouterr().out


def test_forget_author_scrubs_their_handle_from_other_posts(db: Engine, migrated_db: str) -> None:
    assert main(["forget", "--author", "patagonia", "--database-url", migrated_db]) == 0
    with db.connect() as conn:
        caption, mentions = conn.execute(text(
            "SELECT caption, mentions FROM posts WHERE post_id = 'p6'")).one()
    assert mentions == [] and caption == "Thanks @[forgotten] for the repair"


def test_forget_author_finds_pseudonymised_authors_with_the_key(
    db: Engine, migrated_db: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = "test-key"
    with db.begin() as conn:
        conn.execute(text("UPDATE posts SET author = :p WHERE author = 'bob'"),
                     {"p": pseudonymise("bob", key)})
    monkeypatch.setenv("LOGOWATCH_AUTHOR_KEY", key)
    assert main(["forget", "--author", "Bob", "--database-url", migrated_db]) == 0
    assert ids_everywhere(db, ["p2", "p7"]) == dict.fromkeys(PER_POST, 0)


def test_forget_post_takes_its_carousel_children_and_producer_ids(
    db: Engine, migrated_db: str
) -> None:
    with db.begin() as conn:
        conn.execute(text("INSERT INTO posts (post_id, source, image_url) VALUES "
                          "('c_1:0', 't', 'u'), ('c_1:1', 't', 'u'), ('cx1:0', 't', 'u')"))
        conn.execute(text("INSERT INTO produced_posts (post_id, source_key) VALUES "
                          "('c_1', 't'), ('c_1:0', 't')"))
    assert main(["forget", "--post", "c_1", "--database-url", migrated_db]) == 0
    assert ids_everywhere(db, ["c_1", "c_1:0", "c_1:1"]) == dict.fromkeys(PER_POST, 0)
    assert count(db, "posts", "post_id = 'cx1:0'") == 1  # '_' is not a wildcard here


def test_retention_removes_the_old_period_everywhere_and_keeps_the_rest(
    db: Engine, migrated_db: str
) -> None:
    recent = datetime.now(UTC) - timedelta(days=2)
    with db.begin() as conn:
        conn.execute(text("UPDATE posts SET posted_at = :t WHERE post_id IN ('p1', 'p2')"),
                     {"t": recent})
        conn.execute(text("UPDATE posts SET ingested_at = :t WHERE post_id = 'p11'"),
                     {"t": recent})  # no posted_at: its ingest time counts
        conn.execute(text("UPDATE produced_posts SET produced_at = :t "
                          "WHERE post_id IN ('p1', 'p2', 'p11')"), {"t": recent})
    assert main(["retention", "--days", "30", "--dry-run", "--database-url", migrated_db]) == 0
    assert count(db, "posts", "true") == 11
    assert main(["retention", "--days", "30", "--database-url", migrated_db]) == 0
    kept = ["p1", "p2", "p11"]
    for table in PER_POST:
        assert count(db, table, "NOT (post_id = ANY(:ids))", ids=kept) == 0, table
    assert count(db, "posts", "true") == 3
