"""Every brand view's numbers against the hand-counted seed in ``analytics_seed``."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import date

import pytest
from sqlalchemy import Connection, create_engine, text

from tests.integration.analytics_seed import seed

pytestmark = pytest.mark.integration

D1, D2 = date(2026, 3, 1), date(2026, 3, 2)


@pytest.fixture(scope="module")
def conn(migrated_db: str) -> Iterator[Connection]:
    seed(migrated_db)
    engine = create_engine(migrated_db)
    with engine.connect() as connection:
        yield connection
    engine.dispose()


def rows(conn: Connection, sql: str, **params: object) -> set[tuple]:
    return {tuple(r) for r in conn.execute(text(sql), params)}


def test_current_model_is_the_newest_model_with_a_head_for_the_brand(conn: Connection) -> None:
    assert rows(conn, "SELECT brand, model_version, threshold, pinned FROM brand_current_model") \
        == {("patagonia", "m2", 0.6, False), ("nike", "m1", 0.4, False),
            ("adidas", "m2", 0.7, False)}


def test_mentions_fold_case_accents_and_match_whole_words_hashtags_and_handles(
    conn: Connection,
) -> None:
    got = rows(conn, "SELECT post_id, brand, kind, in_caption, in_hashtags, in_mentions "
                     "FROM brand_mentions")
    assert got == {
        ("p1", "patagonia", "both", True, False, False),
        ("p2", "patagonia", "text_only", False, True, False),
        ("p3", "patagonia", "image_only", False, False, False),
        ("p4", "patagonia", "image_only", False, False, False),
        ("p4", "nike", "image_only", False, False, False),
        ("p6", "patagonia", "text_only", False, False, True),
        ("p7", "nike", "both", True, False, False),
        ("p7", "adidas", "image_only", False, False, False),
        ("p8", "thenorthface", "text_only", True, False, False),
        ("p8", "patagonia", "image_only", False, False, False),
        ("p10", "nike", "text_only", False, True, False),
        ("p11", "patagonia", "text_only", True, False, False),
    }


def test_mentions_use_only_the_current_model_and_fall_back_to_ingest_day(
    conn: Connection,
) -> None:
    got = rows(conn, "SELECT post_id, model_version, day FROM brand_mentions "
                     "WHERE brand = 'patagonia'")
    assert ("p5", "m1", D1) not in got and all(version == "m2" for _, version, _ in got)
    assert ("p11", "m2", D2) in got


def test_daily_counts_and_image_only_share(conn: Connection) -> None:
    got = rows(conn, "SELECT day, brand, posts, image_hits, text_hits, both_hits, image_only, "
                     "text_only, image_only_share FROM brand_daily")
    assert got == {
        (D1, "patagonia", 5, 3, 3, 1, 2, 2, 2 / 3),
        (D2, "patagonia", 2, 1, 1, 0, 1, 1, 1.0),
        (D1, "nike", 1, 1, 0, 0, 1, 0, 1.0),
        (D2, "nike", 2, 1, 2, 1, 0, 1, 0.0),
        (D2, "adidas", 1, 1, 0, 0, 1, 0, 1.0),
        (D2, "thenorthface", 1, 0, 1, 0, 0, 1, None),
    }


def test_top_accounts_per_day_skip_posts_without_author(conn: Connection) -> None:
    got = rows(conn, "SELECT author, day, image_only_posts, both_posts, text_only_posts, posts "
                     "FROM brand_top_accounts WHERE brand = :b", b="patagonia")
    assert got == {
        ("alice", D1, 1, 1, 0, 2), ("alice", D2, 1, 0, 0, 1), ("bob", D1, 0, 0, 1, 1),
        ("carol", D1, 1, 0, 0, 1), ("erin", D1, 0, 0, 1, 1), ("gina", D2, 0, 0, 1, 1),
    }
    assert rows(conn, "SELECT author FROM brand_top_accounts WHERE brand = 'nike'") \
        == {("carol",), ("bob",)}


def test_hashtags_come_from_image_only_posts_only(conn: Connection) -> None:
    assert rows(conn, "SELECT brand, hashtag, day, posts FROM brand_hashtags_image_only") == {
        ("patagonia", "climbing", D1, 1), ("patagonia", "climbing", D2, 1),
        ("patagonia", "snow", D2, 1),
    }


def test_cooccurrence_lists_both_directions_of_brands_in_one_image(conn: Connection) -> None:
    assert rows(conn, "SELECT brand, other_brand, day, posts FROM brand_cooccurrence") == {
        ("patagonia", "nike", D1, 1), ("nike", "patagonia", D1, 1),
        ("nike", "adidas", D2, 1), ("adidas", "nike", D2, 1),
    }


def test_a_pin_moves_every_view_to_the_pinned_model(conn: Connection) -> None:
    conn.rollback()  # end the autobegun read transaction; the pin is rolled back below
    with conn.begin() as tx:
        conn.execute(text("INSERT INTO brand_model_pins (brand, model_version) "
                          "VALUES ('patagonia', 'm1')"))
        assert rows(conn, "SELECT model_version, pinned FROM brand_current_model "
                          "WHERE brand = 'patagonia'") == {("m1", True)}
        image = rows(conn, "SELECT post_id FROM brand_mentions "
                           "WHERE brand = 'patagonia' AND in_image")
        assert image == {("p5",)}
        tx.rollback()
