"""`logowatch ingest instagram` against a fake Graph API, the real broker and real Postgres."""

from __future__ import annotations

import logging

import pytest
from kafka import KafkaConsumer
from sqlalchemy import create_engine, text

from ingest.records import parse
from tests.support.graph_api import (
    EXPIRED,
    IG_USER_ID,
    THROTTLED,
    FakeGraph,
    carousel,
    image,
    usage_headers,
    video,
)
from tests.support.http_server import ImageServer
from workers.cli import main

pytestmark = pytest.mark.integration

TOKEN = "EAAGintegrationSECRETtoken4242"


def consume_all(bootstrap: str, topic: str, idle_ms: int = 2000) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=idle_ms, group_id=None)
    out = [(m.key, m.value) for m in consumer]
    consumer.close()
    return out


@pytest.fixture
def graph(image_server: ImageServer, monkeypatch: pytest.MonkeyPatch,
          migrated_db: str) -> FakeGraph:
    engine = create_engine(migrated_db)  # each test starts with no checkpoints
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE ingest_checkpoints, produced_posts"))
    engine.dispose()
    monkeypatch.setenv("INSTAGRAM_ACCESS_TOKEN", TOKEN)
    return FakeGraph(image_server, TOKEN, page_size=2).install()


def _run(graph: FakeGraph, bootstrap: str, topic: str, db: str, *args: str) -> int:
    return main(["ingest", "instagram", *args, "--graph-url", graph.base_url,
                 "--ig-user-id", IG_USER_ID, "--bootstrap-servers", bootstrap, "--topic", topic,
                 "--database-url", db, "--max-pace", "0.2", "--throttle-wait", "0.1",
                 "--pause", "0.3"])


def _ts(minute: int) -> str:
    return f"2024-05-01T12:{minute:02d}:00+0000"


def test_every_media_item_becomes_one_record_and_paging_is_followed(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    graph.media["recent_media"] = [
        image("101", _ts(59), caption="Fresh pair #Nike #JustDoIt with @alice"),
        carousel("102", _ts(58), 2, caption="two shots #nike"),
        video("103", _ts(57), caption="clip"),
        video("104", _ts(56), thumbnail=False),
        image("105", _ts(55)),
    ]
    code = _run(graph, bootstrap, topic, migrated_db, "hashtag", "nike")
    assert code == 0, capsys.readouterr()
    assert "produced 5, skipped 1" in capsys.readouterr().out
    assert len(graph.media_calls()) == 3  # 5 items, 2 per page

    messages = consume_all(bootstrap, topic)
    records = {parse(v).post_id: parse(v) for _, v in messages}
    assert sorted(records) == ["101", "102:0", "102:1", "103", "105"]
    assert all(k.decode() == parse(v).post_id for k, v in messages)
    first = records["101"]
    assert first.source == "instagram" and first.image_url.endswith("/101.jpg")
    assert first.hashtags == ["nike", "justdoit"] and first.mentions == ["alice"]
    assert first.permalink == "https://www.instagram.com/p/101/"
    assert first.posted_at is not None and first.posted_at.minute == 59
    assert records["102:1"].image_url.endswith("/102_1.jpg")
    assert records["103"].image_url.endswith("/103_thumb.jpg")


def test_source_slows_down_near_the_limit_waits_out_throttling_and_resumes(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="ingest")
    graph.media["media"] = [image(str(200 + i), _ts(59 - i)) for i in range(6)]
    graph.headers = [usage_headers(20), usage_headers(90)]  # second answer: near the limit
    graph.errors = []
    calls_before_throttle = 2

    original = graph._handle

    def throttle_third_call(handler):  # type: ignore[no-untyped-def]
        if len(graph.calls) == calls_before_throttle:
            graph.errors.append(THROTTLED)
        original(handler)

    graph.server.routes[f"/{IG_USER_ID}/media"] = throttle_third_call
    assert _run(graph, bootstrap, topic, migrated_db, "me") == 0
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waiting")]
    assert any("usage at 90%" in w for w in waits), waits
    assert any("throttled (code 80002" in w for w in waits), waits
    assert len(consume_all(bootstrap, topic)) == 6


def test_restart_resumes_from_the_checkpoint_without_duplicates(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str) -> None:
    graph.discovery["bluebottle"] = [image(str(300 + i), _ts(50 - i)) for i in range(5)]
    assert _run(graph, bootstrap, topic, migrated_db, "user", "bluebottle",
                "--max-pages", "1") == 0
    engine = create_engine(migrated_db)
    with engine.connect() as conn:
        cursor = conn.execute(text("SELECT cursor FROM ingest_checkpoints WHERE source_key = "
                                   "'instagram:user:bluebottle'")).scalar_one()
    assert '"after": "QVFI2"' in cursor

    graph.calls.clear()
    assert _run(graph, bootstrap, topic, migrated_db, "user", "bluebottle") == 0
    assert ".after(QVFI2)" in graph.media_calls()[0]["fields"]  # resumed, not restarted

    graph.discovery["bluebottle"].insert(0, image("399", _ts(59)))  # a new post on top
    graph.calls.clear()
    assert _run(graph, bootstrap, topic, migrated_db, "user", "bluebottle") == 0
    # Page 1 holds the new post and the old newest (same time as the boundary, so it is
    # checked against produced_posts); page 2 is older than the boundary: the pass stops there.
    assert len(graph.media_calls()) == 2

    ids = [k.decode() for k, _ in consume_all(bootstrap, topic)]
    assert sorted(ids) == sorted(["399", *(str(300 + i) for i in range(5))])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM produced_posts WHERE post_id IN "
                                 "('399','300','304')")).scalar_one() == 3
    engine.dispose()


def test_expired_token_is_fatal_and_the_token_never_appears_in_logs(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str,
        caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    graph.media["media"] = [image("501", _ts(59)), image("502", _ts(58)), image("503", _ts(57))]
    # A good pass first, so paging.next URLs (which carry the token) go through the client,
    # and urllib3 logs every request line at DEBUG.
    assert _run(graph, bootstrap, topic, migrated_db, "me", "--page-size", "2") == 0
    graph.errors = [EXPIRED]
    graph.media["media"].insert(0, image("504", _ts(59)))
    assert _run(graph, bootstrap, topic, migrated_db, "me") == 1
    out, err = capfd.readouterr()
    assert "invalid or expired" in err and "Traceback" not in err
    assert any("/media" in r.getMessage() for r in caplog.records)  # urllib3 did log URLs
    assert TOKEN not in caplog.text
    assert TOKEN not in out and TOKEN not in err
    assert len(consume_all(bootstrap, topic)) == 3
