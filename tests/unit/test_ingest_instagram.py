"""Every Graph API media item becomes the right records; paging and checkpoints are followed."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from ingest.checkpoints import Checkpoint
from ingest.errors import IngestError
from ingest.graph import Backoff, GraphClient
from ingest.instagram import InstagramSource, media_to_records
from tests.support.graph_api import IG_USER_ID, FakeGraph, carousel, image, video
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


def test_hashtag_recent_media_follows_paging_to_the_end(graph: FakeGraph) -> None:
    graph.media["recent_media"] = [image(str(i), _ts(i)) for i in range(5)]
    batches = list(_source(graph, "hashtag", "#Nike").batches(Checkpoint()))
    assert [r.post_id for b in batches for r in b.records] == ["0", "1", "2", "3", "4"]
    assert graph.calls[0] == ("/ig_hashtag_search", {"user_id": IG_USER_ID, "q": "nike"})
    assert [q.get("after") for q in graph.media_calls()] == [None, "QVFI2", "QVFI4"]
    assert batches[0].checkpoint.cursor["after"] == "QVFI2"
    assert batches[-1].checkpoint == Checkpoint(None, datetime(2024, 5, 1, 12, 59, tzinfo=UTC))


def test_business_discovery_pages_by_field_expansion(graph: FakeGraph) -> None:
    graph.discovery["bluebottle"] = [image(str(i), _ts(i)) for i in range(3)]
    batches = list(_source(graph, "user", "@bluebottle").batches(Checkpoint()))
    records = [r for b in batches for r in b.records]
    assert [r.post_id for r in records] == ["0", "1", "2"]
    assert {r.author for r in records} == {"bluebottle"}
    assert ".after(QVFI2)" in graph.media_calls()[1]["fields"]


def test_a_pass_stops_at_the_newest_timestamp_of_the_previous_one(graph: FakeGraph) -> None:
    graph.media["media"] = [image(str(i), _ts(i)) for i in range(6)]
    boundary = datetime(2024, 5, 1, 12, 57, tzinfo=UTC)  # item 2's time
    batches = list(_source(graph, "me").batches(Checkpoint(None, boundary)))
    assert [r.post_id for b in batches for r in b.records] == ["0", "1", "2"]
    assert len(graph.media_calls()) == 2  # never fetched the pages below the boundary


def test_max_pages_saves_the_cursor_and_a_resumed_pass_starts_there(graph: FakeGraph) -> None:
    graph.media["media"] = [image(str(i), _ts(i)) for i in range(5)]
    first = list(_source(graph, "me", max_pages=1).batches(Checkpoint()))
    assert len(first) == 1 and first[0].checkpoint.cursor["after"] == "QVFI2"
    rest = list(_source(graph, "me").batches(first[0].checkpoint))
    assert [r.post_id for b in rest for r in b.records] == ["2", "3", "4"]
    assert rest[-1].checkpoint.newest_at == datetime(2024, 5, 1, 12, 59, tzinfo=UTC)
