"""`logowatch ingest instagram` against a fake Graph API, the real broker and real Postgres."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from urllib.parse import quote, quote_plus

import pytest
from kafka import KafkaConsumer
from prometheus_client import REGISTRY
from sqlalchemy import create_engine, text

from ingest.records import parse
from logowatch.cli import main
from tests.support.graph_api import (
    EXPIRED,
    HTML_PAGE,
    IG_USER_ID,
    OUTAGE,
    THROTTLED,
    TRUNCATED,
    FakeGraph,
    carousel,
    image,
    usage_headers,
    video,
)
from tests.support.http_server import ImageServer

pytestmark = pytest.mark.integration

TOKEN = "EAAG|integration+SECRET/token=4242"  # characters URL encoding changes


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
    assert "produced 5, known 0, skipped 1 (video_without_thumbnail 1)" in \
        capsys.readouterr().out
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
    assert '"next": "QVFI2"' in cursor

    graph.calls.clear()
    assert _run(graph, bootstrap, topic, migrated_db, "user", "bluebottle") == 0
    assert ".after(QVFI2)" in graph.media_calls()[0]["fields"]  # resumed, not restarted

    graph.discovery["bluebottle"].insert(0, image("399", _ts(59)))  # a new post on top
    graph.calls.clear()
    assert _run(graph, bootstrap, topic, migrated_db, "user", "bluebottle",
                "--quiet-pages", "1") == 0
    # Page 1 holds the new post; page 2 holds nothing new: with --quiet-pages 1 it ends there.
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
    for spelling in (TOKEN, quote(TOKEN, safe=""), quote_plus(TOKEN), "SECRET"):
        assert spelling not in caplog.text, spelling
        assert spelling not in out and spelling not in err, spelling
    assert len(consume_all(bootstrap, topic)) == 3


def _produced(db: str) -> set[str]:
    engine = create_engine(db)
    with engine.connect() as conn:
        ids = {r[0] for r in conn.execute(text("SELECT post_id FROM produced_posts"))}
    engine.dispose()
    return ids


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_a_daemon_survives_every_transient_fault_and_leaves_nothing_new_unproduced(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    """--interval against a Graph API that misbehaves as Meta allows: bad pages (HTML, cut
    JSON), an outage longer than the retries, throttling, usage headers that come and go,
    unordered media and media indexed late. Every image is produced exactly once."""
    feed = [image(str(100 + i), _ts(40 - i)) for i in range(8)]
    feed.insert(3, image("90", _ts(55)))  # out of order
    feed.insert(5, video("91", _ts(50), thumbnail=False))  # hashtag videos have no thumbnail
    graph.media["recent_media"] = feed
    # --retries 1: two tries a call. The hashtag lookup fails a pass (HTML, then cut JSON),
    # an outage fails the next, then throttling is waited out within the third.
    graph.errors = [HTML_PAGE, TRUNCATED, OUTAGE, OUTAGE, THROTTLED]
    graph.headers = [{}, usage_headers(96), {}, {}, usage_headers(30), {}]
    late = [image(f"late{i}", _ts(1 + i)) for i in range(4)]  # older than everything seen
    skipped_before = _sample("logowatch_ingest_records_skipped_total", source="instagram",
                             reason="video_without_thumbnail")
    throttled_before = _sample("logowatch_ingest_api_wait_seconds_total", reason="throttled")
    expected = {str(100 + i) for i in range(8)} | {"90"}

    def drive() -> None:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not expected <= _produced(migrated_db):
            time.sleep(0.2)
        graph.errors.append(TRUNCATED)  # the next pass's first page is cut once: retried
        for position, item in zip((0, 2, 4, 7), late, strict=True):  # between known media
            feed.insert(position, item)
        expected.update(i["id"] for i in late)
        while time.monotonic() < deadline and not expected <= _produced(migrated_db):
            time.sleep(0.2)
        os.kill(os.getpid(), signal.SIGTERM)

    driver = threading.Thread(target=drive, daemon=True)
    previous = signal.signal(signal.SIGTERM, lambda *_: None)  # a late signal is harmless
    try:
        driver.start()
        code = _run(graph, bootstrap, topic, migrated_db, "hashtag", "nike", "--interval",
                    "0.3", "--retries", "1", "--quiet-pages", "2")
        driver.join(timeout=60)
    finally:
        signal.signal(signal.SIGTERM, previous)
    out, err = capsys.readouterr()
    assert code == 0, err  # stopped by SIGTERM; the failed passes were logged and retried
    ids = [k.decode() for k, _ in consume_all(bootstrap, topic)]
    assert sorted(ids) == sorted(expected)  # all of them, each once
    assert "Traceback" not in err
    assert "; 2 passes failed, the last: Graph API unavailable (HTTP 503)" in out
    assert "video_without_thumbnail" in out
    assert _sample("logowatch_ingest_records_skipped_total", source="instagram",
                   reason="video_without_thumbnail") > skipped_before
    assert _sample("logowatch_ingest_api_wait_seconds_total",
                   reason="throttled") > throttled_before


def test_every_pass_is_bounded_by_default_even_on_an_endless_feed(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    graph.endless = True
    assert _run(graph, bootstrap, topic, migrated_db, "me") == 0
    assert len(graph.media_calls()) == 100  # the default --max-pages
    assert "seen 200: produced 200, known 0" in capsys.readouterr().out
    graph.calls.clear()
    assert _run(graph, bootstrap, topic, migrated_db, "me", "--max-pages", "3") == 0
    assert graph.media_calls()[0]["pos"] == "200"  # the next pass continues where it stopped


def test_a_cycling_feed_ends_its_pass_and_a_rerun_counts_known_media(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    graph.media["media"] = [image(str(700 + i), _ts(50 - i)) for i in range(7)]
    graph.cycle_to = 2
    assert _run(graph, bootstrap, topic, migrated_db, "me") == 0
    # 4 pages to the end, then 3 read again through the cycle (5 media) hold nothing new.
    assert "produced 7, known 5," in capsys.readouterr().out
    assert len(graph.media_calls()) == 4 + 3
    # A rerun counts every known media it reads: 10 pages, around the cycle, 17 media.
    assert _run(graph, bootstrap, topic, migrated_db, "me", "--quiet-pages", "10") == 0
    assert "produced 0, known 17," in capsys.readouterr().out


def test_a_fatal_error_after_some_pages_prints_the_summary_then_one_line(
        graph: FakeGraph, bootstrap: str, topic: str, migrated_db: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    graph.media["media"] = [image(str(800 + i), _ts(50 - i)) for i in range(6)]
    original = graph._handle

    def expire_on_page_two(handler):  # type: ignore[no-untyped-def]
        if len(graph.calls) == 1:
            graph.errors.append(EXPIRED)
        original(handler)

    graph.server.routes[f"/{IG_USER_ID}/media"] = expire_on_page_two
    assert _run(graph, bootstrap, topic, migrated_db, "me", "--interval", "60") == 1
    out, err = capsys.readouterr()
    assert "produced 2, known 0" in out  # the page produced before the failure is reported
    assert err.splitlines()[-1].startswith(
        "logowatch ingest: error: the Instagram access token is invalid or expired")
    assert "Traceback" not in err
    assert sorted(k.decode() for k, _ in consume_all(bootstrap, topic)) == ["800", "801"]
