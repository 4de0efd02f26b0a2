"""The Graph client paces itself by the usage headers, waits out throttling, fails clearly."""

from __future__ import annotations

import logging

import pytest

from ingest.errors import IngestError
from ingest.graph import (
    AccessError,
    Backoff,
    GraphApiError,
    GraphClient,
    TokenError,
    guard_logs,
    parse_usage,
    redact,
)
from tests.support.graph_api import (
    EXPIRED,
    HTML_PAGE,
    IG_USER_ID,
    OUTAGE,
    THROTTLED,
    TRUNCATED,
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


@pytest.mark.parametrize("code", [10, 200])
def test_permission_error_is_fatal(graph: FakeGraph, code: int) -> None:
    graph.errors = [(403, graph_error(code, "Application does not have permission"))]
    with pytest.raises(AccessError, match="permission denied"):
        _client(graph, []).get(f"{IG_USER_ID}/media")


@pytest.mark.parametrize("fault", [HTML_PAGE, TRUNCATED, OUTAGE], ids=["html", "cut", "503"])
def test_a_bad_page_is_retried_with_back_off_then_the_call_succeeds(
        graph: FakeGraph, fault: tuple[int, bytes]) -> None:
    sleeps: list[float] = []
    graph.errors = [fault, fault]
    body = _client(graph, sleeps).get(f"{IG_USER_ID}/media")
    assert body["data"][0]["id"] == "1"
    assert sleeps == [FAST.throttled, FAST.throttled * 2]


def test_a_page_that_stays_bad_is_a_clear_non_fatal_error(graph: FakeGraph) -> None:
    graph.errors = [HTML_PAGE] * 10
    with pytest.raises(GraphApiError) as failure:
        _client(graph, []).get(f"{IG_USER_ID}/media")
    assert not isinstance(failure.value, AccessError)
    assert "not JSON" in str(failure.value) and "gave up after 4 tries" in str(failure.value)


def test_an_outage_is_called_an_outage_not_throttling(graph: FakeGraph) -> None:
    graph.errors = [OUTAGE] * 10
    with pytest.raises(GraphApiError, match=r"unavailable \(HTTP 503\)") as failure:
        _client(graph, []).get(f"{IG_USER_ID}/media")
    assert "code None" not in str(failure.value) and "throttled" not in str(failure.value)


class _Clock:
    """A clock that the client's sleeps move forward (no real waiting in tests)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.mark.parametrize("percent", [96, 85])  # a pause and a pace
def test_a_usage_reading_ends_when_the_next_answer_carries_no_header(
        graph: FakeGraph, percent: int) -> None:
    clock = _Clock()
    backoff = Backoff(pause=5.0, max_pace=10.0)  # a short pause, the default 300 s lifetime
    client = GraphClient(TOKEN, graph.base_url, backoff=backoff, sleep=clock.sleep,
                         clock=lambda: clock.now)
    graph.headers = [usage_headers(percent)]  # one answer near the limit, then none say anything
    for _ in range(6):
        client.get(f"{IG_USER_ID}/media")
    assert clock.sleeps == [backoff.pace(percent)]  # waited once, not before every later call


def test_a_reading_older_than_its_lifetime_is_forgotten(graph: FakeGraph) -> None:
    clock = _Clock()
    client = GraphClient(TOKEN, graph.base_url, backoff=Backoff(max_pace=10.0, usage_ttl=25.0),
                         sleep=clock.sleep, clock=lambda: clock.now)
    graph.headers = [usage_headers(85)] * 2  # 85 % paces 5 s a call
    client.get(f"{IG_USER_ID}/media")
    clock.now += 30.0  # a daemon's interval between passes: no answer for longer than 25 s
    client.get(f"{IG_USER_ID}/media")
    assert clock.sleeps == []


def test_a_fresh_reading_replaces_an_old_one(graph: FakeGraph) -> None:
    sleeps: list[float] = []
    client = _client(graph, sleeps)
    graph.headers = [usage_headers(96), usage_headers(10)]
    client.get(f"{IG_USER_ID}/media")
    client.get(f"{IG_USER_ID}/media")
    client.get(f"{IG_USER_ID}/media")
    assert sleeps == [FAST.pause]


def test_a_paging_link_to_another_host_is_refused_before_the_token_is_sent(
        graph: FakeGraph) -> None:
    with pytest.raises(GraphApiError, match="another host"):
        _client(graph, []).get("https://evil.example/v23.0/1/media?after=x")
    assert graph.calls == []


ODD_TOKEN = "EAAB|a+b/c=d%e f"  # every character URL encoding changes


def test_redact_removes_every_spelling_of_the_token() -> None:
    from urllib.parse import quote, quote_plus

    for spelling in (ODD_TOKEN, quote(ODD_TOKEN), quote(ODD_TOKEN, safe=""),
                     quote_plus(ODD_TOKEN), quote_plus(ODD_TOKEN).lower()):
        assert "***" in redact(f"GET /x?{spelling}&y", ODD_TOKEN)
        assert spelling not in redact(f"GET /x?{spelling}&y", ODD_TOKEN)
    assert redact("/media?limit=5&access_token=ANYTHING-else&after=Q", None) == \
        "/media?limit=5&access_token=***&after=Q"


def test_network_errors_and_debug_lines_never_show_the_token(
        caplog: pytest.LogCaptureFixture) -> None:
    from urllib.parse import quote, quote_plus

    caplog.set_level(logging.DEBUG)
    unguard = guard_logs(ODD_TOKEN)
    try:
        client = GraphClient(ODD_TOKEN, "http://127.0.0.1:9",
                             backoff=Backoff(retries=1, throttled=0.01), sleep=lambda s: None)
        with pytest.raises(IngestError) as failure:
            client.get("me/media")
    finally:
        unguard()
    assert "unreachable" in str(failure.value)
    texts = [str(failure.value), repr(client), caplog.text]
    for spelling in (ODD_TOKEN, quote(ODD_TOKEN, safe=""), quote_plus(ODD_TOKEN), "a+b", "a%2Bb"):
        assert not any(spelling in text for text in texts), spelling


def test_missing_token_is_refused() -> None:
    with pytest.raises(TokenError):
        GraphClient("", "http://127.0.0.1:9")
