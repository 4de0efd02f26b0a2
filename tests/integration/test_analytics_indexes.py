"""The stored day and text matches behind the views (migration 0006) stay true to the posts
whoever writes them, and the dashboards' queries read indexes, not whole tables."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta

import pytest
from sqlalchemy import Connection, Engine, create_engine, text
from sqlalchemy.engine import make_url

from bench import views as bench_views

pytestmark = pytest.mark.integration

DAY = datetime(2026, 3, 1, 10, tzinfo=UTC)


@pytest.fixture(scope="module")
def owner(migrated_db: str) -> Iterator[Engine]:
    engine = create_engine(migrated_db)
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO brands (brand) VALUES ('acme')"))
        conn.execute(text("INSERT INTO models (model_version, backbone, brands) "
                          "VALUES ('m1', 'inception_v3', '{\"acme\": 0.5}')"))
    yield engine
    engine.dispose()


def _post(conn: Connection, post_id: str, caption: str, posted_at: datetime | None = DAY,
          hashtags: tuple[str, ...] = ()) -> None:
    conn.execute(text(
        "INSERT INTO posts (post_id, source, caption, hashtags, image_url, posted_at) "
        "VALUES (:p, 'test', :c, :h, 'http://x/i.jpg', :t)"),
        {"p": post_id, "c": caption, "h": list(hashtags), "t": posted_at})


def _mentions(conn: Connection, post_id: str) -> set[tuple[str, str, date]]:
    return {tuple(r) for r in conn.execute(text(
        "SELECT brand, kind, day FROM brand_mentions WHERE post_id = :p"), {"p": post_id})}


def test_an_alias_added_later_matches_old_posts_and_removing_it_unmatches_them(
    owner: Engine,
) -> None:
    with owner.begin() as conn:
        _post(conn, "a1", "new ACME boots", hashtags=("Acmé",))
        assert _mentions(conn, "a1") == set()
        conn.execute(text("INSERT INTO brand_aliases VALUES ('acme', 'word', 'acme')"))
        assert _mentions(conn, "a1") == {("acme", "text_only", DAY.date())}
        conn.execute(text("UPDATE brand_aliases SET kind = 'hashtag' WHERE brand = 'acme'"))
        assert conn.execute(text("SELECT in_caption, in_hashtags FROM brand_mentions "
                                 "WHERE post_id = 'a1'")).one() == (False, True)
        conn.execute(text("DELETE FROM brand_aliases WHERE brand = 'acme'"))
        assert _mentions(conn, "a1") == set()


def test_a_caption_edit_or_a_new_post_time_moves_matches_and_detections(owner: Engine) -> None:
    later = DAY + timedelta(days=3)
    with owner.begin() as conn:
        conn.execute(text("INSERT INTO brand_aliases VALUES ('acme', 'word', 'acme')"))
        _post(conn, "b1", "plain caption")
        conn.execute(text("INSERT INTO detections (post_id, brand, model_version, score, "
                          "present) VALUES ('b1', 'acme', 'm1', 0.9, true)"))
        assert _mentions(conn, "b1") == {("acme", "image_only", DAY.date())}
        conn.execute(text("UPDATE posts SET caption = 'acme at last', posted_at = :t "
                          "WHERE post_id = 'b1'"), {"t": later})
        assert _mentions(conn, "b1") == {("acme", "both", later.date())}
        assert conn.execute(text("SELECT day FROM detections WHERE post_id = 'b1'")) \
            .scalar_one() == later.date()
        conn.execute(text("UPDATE posts SET caption = NULL, posted_at = NULL "
                          "WHERE post_id = 'b1'"))
        ingest_day = conn.execute(text(
            "SELECT (ingested_at AT TIME ZONE 'UTC')::date FROM posts WHERE post_id = 'b1'"
        )).scalar_one()
        assert _mentions(conn, "b1") == {("acme", "image_only", ingest_day)}
        conn.execute(text("DELETE FROM brand_aliases WHERE brand = 'acme'"))


def test_the_worker_role_writes_posts_and_detections_that_the_views_count(
    owner: Engine, migrated_db: str
) -> None:
    with owner.begin() as conn:
        conn.execute(text("INSERT INTO brand_aliases VALUES ('acme', 'hashtag', 'acme')"))
    worker = create_engine(make_url(migrated_db).set(username="logowatch_worker"))
    try:
        with worker.begin() as conn:
            _post(conn, "w1", "tagged", hashtags=("acme",))
            conn.execute(text("INSERT INTO detections (post_id, brand, model_version, score, "
                              "present) VALUES ('w1', 'acme', 'm1', 0.8, true)"))
    finally:
        worker.dispose()
    with owner.begin() as conn:
        assert _mentions(conn, "w1") == {("acme", "both", DAY.date())}
        conn.execute(text("DELETE FROM brand_aliases WHERE brand = 'acme'"))


@pytest.fixture(scope="module")
def loaded(pg_cluster) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """The benchmark's data at 20,000 posts, in a database of its own."""
    from logowatch import migrate

    url = pg_cluster.create_database("t_indexes_bench")
    migrate.upgrade(url)
    engine = create_engine(url)
    with engine.connect() as conn:
        bench_views.load(conn, posts=20_000, brands=3)
    engine.dispose()
    yield url
    pg_cluster.drop_database("t_indexes_bench")


def test_every_dashboard_and_report_query_reads_posts_and_detections_by_index(
    loaded: str,
) -> None:
    until = bench_views.FIRST_DAY + timedelta(days=364)
    since = until - timedelta(days=bench_views.RANGE_DAYS - 1)
    reader = create_engine(make_url(loaded).set(username="logowatch_reader"))
    try:
        with reader.connect() as conn:
            queries = bench_views.dashboard_queries("brand0", since, until)
            queries += bench_views.report_queries(conn, "brand0", since, until)
            scans = {}
            for name, sql in queries:
                plan = conn.execute(text(f"EXPLAIN (FORMAT JSON) {sql}")).scalar_one()[0]
                reads, seq = bench_views.summarize(plan["Plan"])
                if seq:
                    scans[name] = reads
    finally:
        reader.dispose()
    assert len(queries) >= 14
    assert scans == {}
