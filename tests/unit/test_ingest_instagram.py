"""Every Graph API media item becomes the right records; paging and checkpoints are followed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.checkpoints import Checkpoint
from ingest.errors import IngestError
from ingest.graph import Backoff, GraphClient
from ingest.instagram import InstagramSource, media_to_records
from tests.support.graph_api import IG_USER_ID, SAME_AFTER, FakeGraph, carousel, image, video
from tests.support.http_server import ImageServer

TOKEN = "EAAunitTOKEN987654321"


def test_image_becomes_one_record_with_caption_author_time_and_tags() -> None:
    item = image("179", "2024-05-01T12:00:00+0000", caption="New kicks #Nike #run @Bob.S",
                 username="shop")
    (record,), skipped = media_to_records(item, "instagram:me:me")
    assert not skipped
    assert record.post_id == "179"
    assert record.source == "instagram"
    assert record.image_url == "https://scontent.example/179.jpg"
    assert record.author == "shop"
    assert record.posted_at == datetime(2024, 5, 1, 12, tzinfo=UTC)
    assert record.permalink == "https://www.instagram.com/p/179/"
    assert record.hashtags == ["nike", "run"] and record.mentions == ["bob.s"]
    assert record.extra == {"ig_media_id": "179", "media_type": "IMAGE",
                            "origin": "instagram:me:me"}


def test_carousel_yields_one_record_per_child_with_stable_ids() -> None:
    records, _ = media_to_records(carousel("55", "2024-05-01T12:00:00+0000", 3, caption="x"),
                                  "o")
    assert [r.post_id for r in records] == ["55:0", "55:1", "55:2"]
    assert records[2].image_url == "https://scontent.example/55_2.jpg"
    assert all(r.caption == "x" and r.extra["ig_media_id"] == "55" for r in records)


def test_video_uses_its_thumbnail_and_is_skipped_without_one() -> None:
    (record,), _ = media_to_records(video("7", "2024-05-01T12:00:00+0000"), "o")
    assert record.image_url.endswith("7_thumb.jpg")
    records, skipped = media_to_records(video("8", "2024-05-01T12:00:00+0000",
                                              thumbnail=False), "o")
    assert records == [] and skipped == {"video_without_thumbnail": 1}


def test_media_without_id_or_with_a_bad_url_is_skipped_not_fatal() -> None:
    assert media_to_records({"media_type": "IMAGE"}, "o")[1] == {"malformed_media": 1}
    bad = image("9", "2024-05-01T12:00:00+0000", media_url="ftp://x/y.jpg")
    assert media_to_records(bad, "o")[1] == {"invalid_media": 1}


def test_invalid_names_are_refused_before_any_call() -> None:
    client = GraphClient(TOKEN, "http://127.0.0.1:9")
    with pytest.raises(IngestError, match="hashtag"):
        InstagramSource(client, IG_USER_ID, "hashtag", "ni ke")
    with pytest.raises(IngestError, match="ig-user-id"):
        InstagramSource(client, "", "me")


@pytest.fixture
def graph(image_server: ImageServer) -> FakeGraph:
    return FakeGraph(image_server, TOKEN, page_size=2).install()


def _source(graph: FakeGraph, kind: str, target: str = "", **kw: object) -> InstagramSource:
    client = GraphClient(TOKEN, graph.base_url, backoff=Backoff(), sleep=lambda s: None)
    return InstagramSource(client, IG_USER_ID, kind, target, **kw)  # type: ignore[arg-type]


def _ts(i: int) -> str:
    return f"2024-05-01T12:{59 - i:02d}:00+0000"  # newest first


def _passes(source: InstagramSource, known: set[str], start: Checkpoint | None = None
            ) -> tuple[list[str], Checkpoint]:
    """One pass the way the pipeline runs it: new ids are recorded and each batch learns how
    many of its records were new before the next page is read."""
    new: list[str] = []
    checkpoint = start = start or Checkpoint()
    for batch in source.batches(start):
        fresh = [r.post_id for r in batch.records if r.post_id not in known]
        known.update(fresh)
        new += fresh
        batch.new = len(fresh)
        checkpoint = batch.checkpoint or checkpoint
    return new, checkpoint


def test_hashtag_recent_media_follows_next_links_although_every_after_cursor_is_the_same(
        graph: FakeGraph) -> None:
    graph.media["recent_media"] = [image(str(i), _ts(i)) for i in range(5)]
    ids, checkpoint = _passes(_source(graph, "hashtag", "#Nike"), set())
    assert ids == ["0", "1", "2", "3", "4"]
    assert graph.calls[0] == ("/ig_hashtag_search", {"user_id": IG_USER_ID, "q": "nike"})
    assert {q.get("after") for q in graph.media_calls()[1:]} == {SAME_AFTER}
    assert [q.get("pos") for q in graph.media_calls()] == [None, "2", "4"]
    assert checkpoint == Checkpoint(None, datetime(2024, 5, 1, 12, 59, tzinfo=UTC))


def test_business_discovery_pages_by_field_expansion(graph: FakeGraph) -> None:
    graph.discovery["bluebottle"] = [image(str(i), _ts(i)) for i in range(3)]
    batches = list(_source(graph, "user", "@bluebottle").batches(Checkpoint()))
    records = [r for b in batches for r in b.records]
    assert [r.post_id for r in records] == ["0", "1", "2"]
    assert {r.author for r in records} == {"bluebottle"}
    assert ".after(QVFI2)" in graph.media_calls()[1]["fields"]


def test_a_later_pass_finds_media_that_are_out_of_order_or_indexed_late(
        graph: FakeGraph) -> None:
    """Meta: recent_media "is not always in chronological order". New media older than the
    previous pass's newest, anywhere in the first pages, are produced; known ones are not."""
    media = [image(str(i), _ts(i)) for i in range(20)]
    graph.media["recent_media"] = list(media)
    known: set[str] = set()
    first, checkpoint = _passes(_source(graph, "hashtag", "nike"), known)
    assert len(first) == 20
    # Late arrivals: timestamps older than everything seen, spread over the top pages.
    for n, position in enumerate((0, 3, 5, 8, 11, 14)):
        graph.media["recent_media"].insert(position, image(f"late{n}", "2024-05-01T09:00:00+0000"))
    graph.calls.clear()
    later, checkpoint = _passes(_source(graph, "hashtag", "nike"), known, checkpoint)
    assert sorted(later) == [f"late{n}" for n in range(6)]
    # 26 items at 2 a page: it read until three pages in a row held nothing new, not to the end.
    assert len(graph.media_calls()) < 13


def test_a_pass_with_nothing_new_stops_after_the_quiet_pages(graph: FakeGraph) -> None:
    graph.media["media"] = [image(str(i), _ts(i)) for i in range(40)]
    known = {str(i) for i in range(40)}
    ids, checkpoint = _passes(_source(graph, "me", quiet_pages=3), known)
    assert ids == [] and len(graph.media_calls()) == 3
    assert checkpoint.cursor is None  # the next pass starts from the top again


def test_hashtag_videos_without_thumbnails_do_not_end_a_first_pass(graph: FakeGraph) -> None:
    """Hashtag edges return no thumbnail_url, so their videos are skipped: pages of them are
    not "nothing new" on a first pass, or the images below them would never be read."""
    graph.media["recent_media"] = [video(str(i), _ts(i), thumbnail=False) for i in range(10)]
    graph.media["recent_media"].append(image("img", _ts(30)))
    ids, _ = _passes(_source(graph, "hashtag", "nike", quiet_pages=2), set())
    assert ids == ["img"]


def test_a_cycling_next_link_ends_the_pass(graph: FakeGraph) -> None:
    graph.media["media"] = [image(str(i), _ts(i)) for i in range(6)]
    graph.cycle_to = 0  # the last page's next leads back to the first
    ids, checkpoint = _passes(_source(graph, "me", quiet_pages=2), set())
    assert sorted(ids) == [str(i) for i in range(6)]
    assert len(graph.media_calls()) == 3 + 2  # the pages, then two that held nothing new
    assert checkpoint.cursor is None


def test_an_endless_feed_is_read_a_bounded_number_of_pages_per_pass(graph: FakeGraph) -> None:
    graph.endless = True
    source = _source(graph, "me", max_pages=7)
    ids, checkpoint = _passes(source, set())
    assert len(ids) == 14 and len(graph.media_calls()) == 7
    assert source.client.requests == 7
    assert checkpoint.cursor and "pos=14" in checkpoint.cursor["next"]
    assert "access_token" not in checkpoint.cursor["next"].replace("access_token=***", "")


def test_max_pages_saves_the_next_link_and_a_resumed_pass_starts_there(graph: FakeGraph) -> None:
    graph.media["media"] = [image(str(i), _ts(i)) for i in range(5)]
    known: set[str] = set()
    first, checkpoint = _passes(_source(graph, "me", max_pages=1), known)
    assert first == ["0", "1"] and "pos=2" in checkpoint.cursor["next"]
    rest, checkpoint = _passes(_source(graph, "me"), known, checkpoint)
    assert rest == ["2", "3", "4"]
    assert checkpoint == Checkpoint(None, datetime(2024, 5, 1, 12, 59, tzinfo=UTC))
