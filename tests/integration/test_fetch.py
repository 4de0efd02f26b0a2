"""Safe fetching against real HTTP servers on 127.0.0.1: allowed host, canary, failures."""

from __future__ import annotations

import time

import pytest

from tests.support.http_server import ImageServer, jpeg_bytes
from workers.fetch import FetchConfig, Fetcher, FetchError, address_is_public

pytestmark = pytest.mark.integration


def _fetcher(server: ImageServer, **kw: object) -> Fetcher:
    return Fetcher(FetchConfig(allow_hosts=[server.host], backoff=0.01, **kw))  # type: ignore[arg-type]


def _redirect(to: str, code: int = 302):  # type: ignore[no-untyped-def]
    def handler(req) -> None:  # type: ignore[no-untyped-def]
        req.send_response(code)
        req.send_header("Location", to)
        req.send_header("Content-Length", "0")
        req.end_headers()

    return handler


def test_an_allowed_host_serves_its_image(image_server: ImageServer) -> None:
    body = jpeg_bytes()
    url = image_server.add("/a.jpg", body)
    assert _fetcher(image_server).fetch(url) == body


@pytest.mark.parametrize(
    "url_template",
    [
        "http://127.0.0.1:{port}/x.jpg",
        "http://localhost:{port}/x.jpg",
        "http://[::1]:{port}/x.jpg",
        "http://0.0.0.0:{port}/x.jpg",
        "http://2130706433:{port}/x.jpg",
        "http://0177.0.0.1:{port}/x.jpg",
        "http://127.1:{port}/x.jpg",
    ],
)
def test_loopback_in_any_spelling_is_blocked_and_the_canary_hears_nothing(
    image_server: ImageServer, canary_server: ImageServer, url_template: str
) -> None:
    canary_server.add("/x.jpg", jpeg_bytes())
    with pytest.raises(FetchError) as caught:
        _fetcher(image_server).fetch(url_template.format(port=canary_server.port))
    assert caught.value.status == "blocked"
    assert canary_server.requests == []


def test_a_redirect_to_loopback_is_blocked(
    image_server: ImageServer, canary_server: ImageServer
) -> None:
    canary_server.add("/secret", b"x", "image/png")
    image_server.routes["/r"] = _redirect(canary_server.url("/secret"))
    with pytest.raises(FetchError) as caught:
        _fetcher(image_server).fetch(image_server.url("/r"))
    assert caught.value.status == "blocked"
    assert canary_server.requests == []


def test_redirects_are_followed_at_most_three_times(image_server: ImageServer) -> None:
    for i in range(5):
        image_server.routes[f"/r{i}"] = _redirect(f"/r{i + 1}")
    image_server.add("/r5", jpeg_bytes())
    image_server.add("/ok", jpeg_bytes())
    image_server.routes["/hop"] = _redirect("/ok")
    fetcher = _fetcher(image_server)
    assert fetcher.fetch(image_server.url("/hop"))
    with pytest.raises(FetchError, match="redirects"):
        fetcher.fetch(image_server.url("/r0"))


@pytest.mark.parametrize("scheme_url", ["file:///etc/passwd", "ftp://example.com/x.jpg",
                                        "gopher://example.com/"])
def test_other_schemes_are_blocked(image_server: ImageServer, scheme_url: str) -> None:
    with pytest.raises(FetchError) as caught:
        _fetcher(image_server).fetch(scheme_url)
    assert caught.value.status == "blocked"


def test_permanent_failures_have_their_own_status(image_server: ImageServer) -> None:
    image_server.add("/page", b"<html></html>", "text/html")
    image_server.add("/big", b"x" * 5000, "image/jpeg")
    fetcher = _fetcher(image_server, max_bytes=1000)
    cases = {"/missing": "fetch_failed", "/page": "not_image", "/big": "too_large"}
    for path, status in cases.items():
        with pytest.raises(FetchError) as caught:
            fetcher.fetch(image_server.url(path))
        assert caught.value.status == status
    assert image_server.requests.count("/missing") == 1, "4xx must not be retried"


def test_5xx_is_retried_with_backoff_then_succeeds(image_server: ImageServer) -> None:
    calls = {"n": 0}
    body = jpeg_bytes()

    def flaky(req) -> None:  # type: ignore[no-untyped-def]
        calls["n"] += 1
        status, payload = (503, b"busy") if calls["n"] < 3 else (200, body)
        req.send_response(status)
        req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(len(payload)))
        req.end_headers()
        req.wfile.write(payload)

    image_server.routes["/flaky"] = flaky
    assert _fetcher(image_server, retries=2).fetch(image_server.url("/flaky")) == body
    assert calls["n"] == 3


def test_a_slow_host_times_out_as_fetch_failed(image_server: ImageServer) -> None:
    def slow(req) -> None:  # type: ignore[no-untyped-def]
        time.sleep(3)

    image_server.routes["/slow"] = slow
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        _fetcher(image_server, read_timeout=0.3, retries=1).fetch(image_server.url("/slow"))
    assert caught.value.status == "fetch_failed"
    assert "tries" in str(caught.value)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize(
    ("ip", "public"),
    [("8.8.8.8", True), ("127.0.0.1", False), ("10.1.2.3", False), ("172.16.0.1", False),
     ("192.168.1.1", False), ("169.254.169.254", False), ("0.0.0.0", False),
     ("224.0.0.1", False), ("::1", False), ("fe80::1", False), ("fc00::1", False),
     ("::ffff:127.0.0.1", False), ("100.64.0.1", False), ("2606:4700::1111", True)],
)
def test_address_classification(ip: str, public: bool) -> None:
    assert address_is_public(ip) is public


# Every IPv6 form that carries an IPv4 address, each with a forbidden IPv4 inside
# (169.254.169.254, the cloud metadata address, or loopback) and with a public one (8.8.8.8).
EMBEDDED = {
    "6to4": ("2002:a9fe:a9fe::1", "2002:808:808::1"),
    "Teredo server": ("2001:0:a9fe:a9fe::f7f7:f7f7", "2001:0:808:808::f7f7:f7f7"),
    # Teredo's client address is stored inverted: ~169.254.169.254 = 86.1.86.1
    "Teredo client": ("2001:0:808:808::5601:5601", "2001:0:808:808::f7f7:f7f7"),
    "IPv4-mapped": ("::ffff:a9fe:a9fe", "::ffff:808:808"),
    "IPv4-compatible": ("::7f00:1", "::808:808"),
    "IPv4-translated": ("::ffff:0:a9fe:a9fe", "::ffff:0:808:808"),
    "NAT64 well-known": ("64:ff9b::a9fe:a9fe", "64:ff9b::808:808"),
    "NAT64 local-use /96": ("64:ff9b:1::a9fe:a9fe", None),
    "NAT64 local-use /48": ("64:ff9b:1:a9fe:a9:fe00::", None),
    "NAT64 local-use /64": ("64:ff9b:1:0:a9:fea9:fe00:0", None),
}


@pytest.mark.parametrize("form", sorted(EMBEDDED))
def test_an_ipv6_address_is_judged_by_the_ipv4_inside(form: str) -> None:
    forbidden, public = EMBEDDED[form]
    assert address_is_public(forbidden) is False
    if public is not None:
        assert address_is_public(public) is True


@pytest.mark.parametrize("form", sorted(EMBEDDED))
def test_an_embedded_forbidden_ipv4_is_refused_before_any_connect(
    image_server: ImageServer, form: str
) -> None:
    # Straight away and behind a redirect: "blocked" is the policy's answer, which comes before
    # a socket is opened (a connect that failed would be a "fetch_failed").
    url = f"http://[{EMBEDDED[form][0]}]:{image_server.port}/x.jpg"
    image_server.routes["/r"] = _redirect(url)
    for start in (url, image_server.url("/r")):
        with pytest.raises(FetchError) as caught:
            _fetcher(image_server).fetch(start)
        assert caught.value.status == "blocked", form
        assert "refused" in str(caught.value)


@pytest.mark.parametrize("location", ["http://[::1/x.jpg", "http://[zz::1]/x.jpg",
                                      "http://[2002:a9fe::1]:99999/", "http://h:port/"])
def test_a_malformed_redirect_target_is_a_fetch_failure(
    image_server: ImageServer, location: str
) -> None:
    image_server.routes["/bad"] = _redirect(location)
    with pytest.raises(FetchError) as caught:
        _fetcher(image_server).fetch(image_server.url("/bad"))
    assert caught.value.status == "fetch_failed"
    assert "invalid" in str(caught.value)
