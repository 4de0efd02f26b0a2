"""The Graph client paces itself by the usage headers, waits out throttling, fails clearly."""

from __future__ import annotations

import logging

import pytest

from ingest.errors import IngestError
from ingest.graph import Backoff, GraphApiError, GraphClient, TokenError, parse_usage
from tests.support.graph_api import (
    EXPIRED,
    IG_USER_ID,
    THROTTLED,
    FakeGraph,
    graph_error,
    image,
    usage_headers,
)
from tests.support.http_server import ImageServer

TOKEN = "EAAtestTOKENvalue123456789"
FAST = Backoff(max_pace=0.5, pause=2.0, throttled=0.25, retries=3)


def _client(graph: FakeGraph, sleeps: list[float], token: str = TOKEN) -> GraphClient:
    return GraphClient(token, graph.base_url, backoff=FAST, sleep=sleeps.append)


@pytest.fixture
def graph(image_server: ImageServer) -> FakeGraph:
    fake = FakeGraph(image_server, TOKEN).install()
    fake.media["media"] = [image("1", "2024-05-01T12:00:00+0000")]
    return fake


def test_usage_headers_are_read_from_both_headers_and_the_highest_wins() -> None:
    usage = parse_usage(usage_headers(88, regain_minutes=7))
    assert usage.percent == 88
    assert usage.regain_minutes == 7
    assert parse_usage({"X-App-Usage": "not json"}).percent == 0


def test_pace_is_zero_when_low_grows_near_the_limit_and_pauses_at_it() -> None:
    backoff = Backoff(slowdown_at=75, pause_at=95, max_pace=30, pause=300)
    assert backoff.pace(50) == 0
    assert 0 < backoff.pace(80) < backoff.pace(90) < 30
    assert backoff.pace(96) == 300
    assert backoff.pace(99, regain_minutes=10) == 600


def test_client_slows_down_after_a_response_near_the_limit(graph: FakeGraph) -> None:
    sleeps: list[float] = []
    client = _client(graph, sleeps)
    graph.headers = [usage_headers(90)]
    client.get(f"{IG_USER_ID}/media")
    assert sleeps == []  # the first call had no usage to go by
    client.get(f"{IG_USER_ID}/media")
    assert len(sleeps) == 1 and 0 < sleeps[0] <= FAST.max_pace
    assert len(graph.calls) == 2  # it waited, then really called again


def test_throttling_error_and_429_are_waited_out_then_the_call_succeeds(graph: FakeGraph
                                                                       ) -> None:
    sleeps: list[float] = []
    graph.errors = [THROTTLED, (429, {"error": {"message": "slow down"}})]
    body = _client(graph, sleeps).get(f"{IG_USER_ID}/media")
    assert body["data"][0]["id"] == "1"
    assert sleeps == [FAST.throttled, FAST.throttled * 2]


def test_throttling_that_never_ends_gives_up_after_the_retries(graph: FakeGraph) -> None:
    graph.errors = [THROTTLED] * 10
    with pytest.raises(GraphApiError, match="still throttled"):
        _client(graph, []).get(f"{IG_USER_ID}/media")


def test_expired_token_is_fatal_with_a_hint_and_no_retry(graph: FakeGraph) -> None:
    sleeps: list[float] = []
    graph.errors = [EXPIRED]
    with pytest.raises(TokenError, match=r"invalid or expired.*subcode 463"):
        _client(graph, sleeps).get(f"{IG_USER_ID}/media")
    assert sleeps == [] and len(graph.calls) == 1


def test_permission_error_is_fatal(graph: FakeGraph) -> None:
    graph.errors = [(403, graph_error(10, "Application does not have permission"))]
    with pytest.raises(GraphApiError, match="permission denied"):
        _client(graph, []).get(f"{IG_USER_ID}/media")


def test_network_errors_never_show_the_token(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    client = GraphClient(TOKEN, "http://127.0.0.1:9", backoff=Backoff(retries=1, throttled=0.01),
                         sleep=lambda s: None)
    with pytest.raises(IngestError) as failure:
        client.get("me/media")
    assert "unreachable" in str(failure.value)
    assert TOKEN not in str(failure.value)
    assert TOKEN not in repr(client)


def test_missing_token_is_refused() -> None:
    with pytest.raises(TokenError):
        GraphClient("", "http://127.0.0.1:9")
