"""A fake Instagram Graph API on a real loopback HTTP server, answering with the real JSON shapes.

Shapes follow Meta's reference: lists are ``{"data": [...], "paging": {"cursors": {"before",
"after"}, "next": URL}}`` (the last page has no ``next``), business discovery nests the media
edge under ``business_discovery.media`` and pages by ``media.after(CURSOR)`` field expansion,
errors are ``{"error": {"message", "type": "OAuthException", "code", "error_subcode",
"fbtrace_id"}}``, and usage arrives in ``X-App-Usage`` / ``X-Business-Use-Case-Usage``.

Where the reference warns, the fake does the awkward thing: hashtag and own-media edges give
the same ``after`` cursor on every page (the reference says so for ``recent_media``), so the
position lives only in the ``paging.next`` link; items come in the order the test lists them
(``recent_media`` "is not always in chronological order", and tests insert late-indexed media
anywhere); ``cycle_to`` makes the last page's ``next`` lead back to an earlier position and
``endless`` makes up new media for ever; ``errors`` may hold raw bodies (an HTML page or a
truncated JSON body, served as 200 with a matching Content-Length); ``headers`` come and go
per answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit

from tests.support.http_server import ImageServer

IG_USER_ID = "17841405309211844"
SAME_AFTER = "QVFIUzRGTXRTbjNhWUJPZAkRZAQ"  # the one after cursor every edge page carries
HASHTAG_ID = "17843853986012965"


def image(media_id: str, ts: str, caption: str | None = None, **more: Any) -> dict[str, Any]:
    item = {"id": media_id, "media_type": "IMAGE", "timestamp": ts,
            "media_url": f"https://scontent.example/{media_id}.jpg",
            "permalink": f"https://www.instagram.com/p/{media_id}/"}
    if caption is not None:
        item["caption"] = caption
    item.update(more)
    return item


def video(media_id: str, ts: str, thumbnail: bool = True, **more: Any) -> dict[str, Any]:
    item = image(media_id, ts, **more)
    item["media_type"] = "VIDEO"
    item["media_url"] = f"https://scontent.example/{media_id}.mp4"
    if thumbnail:
        item["thumbnail_url"] = f"https://scontent.example/{media_id}_thumb.jpg"
    return item


def carousel(media_id: str, ts: str, n: int, **more: Any) -> dict[str, Any]:
    item = image(media_id, ts, **more)
    item["media_type"] = "CAROUSEL_ALBUM"
    del item["media_url"]
    item["children"] = {"data": [
        {"id": f"{media_id}{i}", "media_type": "IMAGE",
         "media_url": f"https://scontent.example/{media_id}_{i}.jpg"} for i in range(n)
    ]}
    return item


def usage_headers(percent: int, regain_minutes: int = 0) -> dict[str, str]:
    app = {"call_count": percent, "total_time": max(0, percent - 10), "total_cputime": 3}
    buc = {"1234567890": [{"type": "instagram", "call_count": percent, "total_cputime": 2,
                           "total_time": 4, "estimated_time_to_regain_access": regain_minutes}]}
    return {"X-App-Usage": json.dumps(app), "X-Business-Use-Case-Usage": json.dumps(buc)}


def graph_error(code: int, message: str, subcode: int | None = None) -> dict[str, Any]:
    error: dict[str, Any] = {"message": message, "type": "OAuthException", "code": code,
                             "fbtrace_id": "AbCdEf123"}
    if subcode is not None:
        error["error_subcode"] = subcode
    return {"error": error}


EXPIRED = (400, graph_error(190, "Error validating access token: Session has expired.", 463))
HTML_PAGE = (200, b"<!DOCTYPE html><html><body>Sorry, something went wrong.</body></html>")
TRUNCATED = (200, b'{"data": [{"id": "1", "media_type": "IMAGE", "media_u')
OUTAGE = (503, b"<html><body>Service Unavailable</body></html>")
THROTTLED = (400, graph_error(80002, "There have been too many calls to this Instagram "
                                     "account. Wait a bit and try again."))


@dataclass
class FakeGraph:
    """Routes for hashtag search, hashtag/own media edges and business discovery."""

    server: ImageServer
    token: str
    page_size: int = 2
    media: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # edge path → items
    discovery: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # user → items
    errors: list[tuple[int, dict[str, Any] | bytes]] = field(default_factory=list)  # next answers
    cycle_to: int | None = None  # the last page links back to this position
    endless: bool = False  # made-up media after the listed ones, for ever
    headers: list[dict[str, str]] = field(default_factory=list)  # next answers' headers
    calls: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    def install(self) -> FakeGraph:
        for path in ("/ig_hashtag_search", f"/{HASHTAG_ID}/recent_media",
                     f"/{HASHTAG_ID}/top_media", f"/{IG_USER_ID}/media", f"/{IG_USER_ID}"):
            self.server.routes[path] = self._handle
        return self

    @property
    def base_url(self) -> str:
        return self.server.url("")  # a --graph-url without the version path

    def media_calls(self) -> list[dict[str, str]]:
        return [q for p, q in self.calls if p != "/ig_hashtag_search"]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        query = dict(parse_qsl(parts.query))
        token = query.pop("access_token", None)
        self.calls.append((parts.path, query))
        extra = self.headers.pop(0) if self.headers else {}
        if token != self.token:
            return _send(handler, 400, graph_error(
                190, "Invalid OAuth access token - Cannot parse access token"), extra)
        if self.errors:
            status, body = self.errors.pop(0)
            return _send(handler, status, body, extra)
        if parts.path == "/ig_hashtag_search":
            return _send(handler, 200, {"data": [{"id": HASHTAG_ID}]}, extra)
        if parts.path == f"/{IG_USER_ID}":
            return self._discovery(handler, query, extra)
        items = self.media.get(parts.path.removeprefix(f"/{HASHTAG_ID}/").removeprefix(
            f"/{IG_USER_ID}/"), [])
        start = int(query.get("pos", 0))
        body = self._page(items, start, int(query.get("limit") or 25))
        if "next" in body.get("paging", {}):
            body["paging"]["cursors"]["after"] = SAME_AFTER
            next_query = {**query, "access_token": self.token, "after": SAME_AFTER,
                          "pos": body["paging"]["next"]}
            body["paging"]["next"] = self.server.url(parts.path) + "?" + urlencode(next_query)
        _send(handler, 200, body, extra)

    def _discovery(self, handler: BaseHTTPRequestHandler, query: dict[str, str],
                   extra: dict[str, str]) -> None:
        fields = query.get("fields", "")
        match = re.match(r"business_discovery\.username\(([^)]+)\)\{username,media"
                         r"(?:\.after\(([^)]*)\))?\.limit\((\d+)\)\{", fields)
        if not match or match.group(1) not in self.discovery:
            return _send(handler, 400, graph_error(110, "Invalid user id"), extra)
        username, after, limit = match.group(1), match.group(2), int(match.group(3))
        media = self._page(self.discovery[username],
                           int(after.removeprefix("QVFI")) if after else 0, limit)
        media.get("paging", {}).pop("next", None)  # discovery pages by cursor alone
        _send(handler, 200, {"business_discovery": {"username": username, "media": media,
                                                    "id": "17841401441775531"},
                             "id": IG_USER_ID}, extra)

    def _page(self, items: list[dict[str, Any]], start: int, limit: int) -> dict[str, Any]:
        """A page from ``start``; ``paging.next`` holds the next position for the caller to
        turn into a link."""
        size = min(limit, self.page_size)
        if self.endless:
            items = items + [image(f"9{n}", "2024-05-01T00:00:00+0000")
                             for n in range(len(items), start + size)]
        chunk = items[start:start + size]
        body: dict[str, Any] = {"data": chunk}
        end = start + len(chunk)
        following = end if end < len(items) or self.endless else self.cycle_to
        if chunk:
            body["paging"] = {"cursors": {"before": f"QVFI{start}", "after": f"QVFI{end}"}}
            if following is not None:
                body["paging"]["next"] = following
        return body


def _send(handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | bytes,
          headers: dict[str, str]) -> None:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    handler.send_response(status)
    handler.send_header("Content-Type", "text/html; charset=UTF-8" if data.startswith(b"<")
                        else "application/json; charset=UTF-8")
    handler.send_header("Content-Length", str(len(data)))
    for name, value in headers.items():
        handler.send_header(name, value)
    handler.end_headers()
    handler.wfile.write(data)
