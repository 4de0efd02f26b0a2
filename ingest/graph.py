"""A small Graph API client that keeps us inside Meta's rate limits and never leaks the token.

Meta throttles an app that ignores its usage headers, and a throttled app stays locked out for
minutes to hours. So every response's ``X-App-Usage`` / ``X-Business-Use-Case-Usage`` is read,
the client slows down as usage climbs and pauses before it hits 100%, and the throttling error
codes (and HTTP 429) mean "wait and retry", never "give up"; so do outages and pages that are
not a whole JSON object (an HTML error page or a cut body answered with 200). An invalid or
expired token or a missing permission is the failure no wait can fix (:class:`AccessError`):
it is fatal, with a message saying what to do.

The access token travels as a query parameter (that is what the API documents), so everything
that could print a URL (exception texts, urllib3's debug log) goes through :func:`redact`.
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit, urlunsplit

import requests

from ingest import metrics
from ingest.errors import IngestError

log = logging.getLogger(__name__)

DEFAULT_GRAPH_URL = "https://graph.facebook.com/v23.0"

# Graph API error codes that mean "you are calling too much, wait": 4 app, 17 user, 32 page,
# 613 custom limit, 80000-80014 the Business Use Case limits Instagram requests fall under.
THROTTLE_CODES = frozenset({4, 17, 32, 613, *range(80000, 80015)})
TRANSIENT_CODES = frozenset({1, 2})  # "temporary issue due to downtime, wait and retry"
TOKEN_CODES = frozenset({190, 102})
PERMISSION_CODES = frozenset({3, 10, *range(200, 300)})


class GraphApiError(IngestError):
    """A request failed: the API refused it, or kept failing through every retry."""

    def __init__(self, message: str, code: int | None = None) -> None:
        super().__init__(message)
        self.code = code


class AccessError(GraphApiError):
    """The token may not read this (revoked, expired, missing permission): no later pass can
    succeed, so this is the one Graph API failure that ends a daemon."""


class TokenError(AccessError):
    """The access token is invalid, expired or revoked."""


class Stopped(Exception):
    """Raised out of an interruptible sleep when shutdown was requested."""


@dataclass(frozen=True)
class Backoff:
    """When and how long to wait. Defaults suit the real API; tests pass tiny delays."""

    slowdown_at: float = 75.0  # usage % where pacing starts
    pause_at: float = 95.0  # usage % where we stop until the window frees up
    max_pace: float = 30.0  # seconds between calls just below pause_at
    pause: float = 300.0  # seconds to pause at pause_at when the API gives no estimate
    throttled: float = 60.0  # first wait after a throttling error, doubled per retry
    max_wait: float = 3600.0
    retries: int = 5
    usage_ttl: float = 300.0  # a reading with no answer after it for this long is forgotten

    def pace(self, usage: float, regain_minutes: float = 0.0) -> float:
        """Seconds to wait before the next call, given the highest usage percentage seen."""
        if usage >= self.pause_at:
            return min(self.max_wait, max(self.pause, regain_minutes * 60.0))
        if usage >= self.slowdown_at:
            span = max(self.pause_at - self.slowdown_at, 1e-9)
            return self.max_pace * (usage - self.slowdown_at) / span
        return 0.0

    def after_throttle(self, attempt: int, regain_minutes: float = 0.0) -> float:
        return min(self.max_wait, max(self.throttled * 2**attempt, regain_minutes * 60.0))


@dataclass
class Usage:
    """The highest percentage any usage header reported, and Meta's estimate to regain access."""

    percent: float = 0.0
    regain_minutes: float = 0.0
    by_header: dict[str, float] = field(default_factory=dict)


def parse_usage(headers: Mapping[str, str]) -> Usage:
    """Read both usage headers; malformed ones are ignored (they are advisory, not data)."""
    usage = Usage()
    app = _json_header(headers, "X-App-Usage")
    if isinstance(app, dict):
        usage.by_header["app"] = _max_percent(app)
    buc = _json_header(headers, "X-Business-Use-Case-Usage")
    if isinstance(buc, dict):
        best = 0.0
        for entries in buc.values():
            for entry in entries if isinstance(entries, list) else [entries]:
                if isinstance(entry, dict):
                    best = max(best, _max_percent(entry))
                    regain = entry.get("estimated_time_to_regain_access")
                    if isinstance(regain, int | float):
                        usage.regain_minutes = max(usage.regain_minutes, float(regain))
        usage.by_header["business_use_case"] = best
    usage.percent = max(usage.by_header.values(), default=0.0)
    return usage


def _json_header(headers: Mapping[str, str], name: str) -> Any:
    raw = headers.get(name)
    if not raw:
        return None
    try:
        return json.loads(raw)
    except ValueError:
        log.warning("ignoring a malformed %s header", name)
        return None


def _max_percent(entry: Mapping[str, Any]) -> float:
    values = [entry.get(k) for k in ("call_count", "total_time", "total_cputime")]
    return max((float(v) for v in values if isinstance(v, int | float)), default=0.0)


_QUERY_TOKEN = re.compile(r"(access_token=)[^&\s\"'<>]+", re.IGNORECASE)


def redact(text: str, secret: str | None) -> str:
    """Remove the token from text that may be shown or logged: the raw token, every URL
    encoding of it (either hex case), and any ``access_token=`` value in a query string."""
    text = _QUERY_TOKEN.sub(r"\1***", text)
    if secret:
        spellings = {secret, quote(secret), quote(secret, safe=""), quote_plus(secret),
                     quote_plus(secret, safe="")}
        pattern = "|".join(re.escape(s) for s in sorted(spellings, key=len, reverse=True))
        text = re.sub(pattern, "***", text, flags=re.IGNORECASE)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites log records so the token never reaches a handler, whoever logged it."""

    def __init__(self, secret: str) -> None:
        super().__init__()
        self.secret = secret

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        clean = redact(message, self.secret)
        if clean != message:
            record.msg = clean
            record.args = None
        return True


def guard_logs(secret: str) -> Callable[[], None]:
    """Install the redacting filter where URLs get logged; returns a function that removes it."""
    filt = RedactingFilter(secret)
    targets = [logging.getLogger(n) for n in ("urllib3", "urllib3.connectionpool", "requests",
                                              "ingest")]
    targets += logging.getLogger().handlers  # type: ignore[arg-type]
    for target in targets:
        target.addFilter(filt)

    def remove() -> None:
        for target in targets:
            target.removeFilter(filt)

    return remove


class GraphClient:
    """GET requests against the Graph API with pacing, retries and clear fatal errors."""

    def __init__(
        self,
        token: str,
        base_url: str = DEFAULT_GRAPH_URL,
        *,
        backoff: Backoff | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
        session: requests.Session | None = None,
        timeout: float = 30.0,
    ) -> None:
        if not token:
            raise TokenError("no Instagram access token: set INSTAGRAM_ACCESS_TOKEN")
        self._token = token
        self.base_url = base_url.rstrip("/")
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.clock = clock
        self.session = session or requests.Session()
        self.timeout = timeout
        self.usage = Usage()
        self._usage_at = 0.0
        self.requests = 0  # requests sent, retries included
        self.waits: list[float] = []  # every wait taken, for logs and tests

    def get(self, path: str, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """GET ``path`` (relative to the base URL, or a ``paging.next`` URL) as a JSON object.

        Throttling, 5xx, network errors and pages that are not a whole JSON object (an HTML
        error page or a truncated body with status 200) are retried with back-off; after
        ``retries`` it raises :class:`GraphApiError`. Token and permission errors raise
        :class:`AccessError` at once.
        """
        url, query = self._url(path, params or {})
        endpoint = _label(urlsplit(url).path.rsplit("/", 1)[-1] or "/")
        attempt = 0
        while True:
            self._pace()
            metrics.API_CALLS.labels(endpoint=endpoint).inc()
            self.requests += 1
            try:
                response = self.session.get(url, params={**query, "access_token": self._token},
                                            timeout=self.timeout)
                self._record_usage(response.headers)
                body, code, subcode, message = _answer(response)
            except requests.RequestException as exc:
                metrics.API_ERRORS.labels(code="network").inc()
                failure = f"Graph API unreachable: {redact(str(exc), self._token)}"
                self._retry_or_raise(attempt, failure, None, "network")
                attempt += 1
                continue
            if body is not None:
                return body
            status = response.status_code
            label = str(code) if code is not None else ("bad_page" if status == 200 else
                                                        str(status))
            metrics.API_ERRORS.labels(code=label).inc()
            message = redact(message, self._token)
            if code in TOKEN_CODES or (status == 401 and code is None):
                raise TokenError(
                    f"the Instagram access token is invalid or expired (code {code}"
                    f"{f', subcode {subcode}' if subcode else ''}: {message}); get a new "
                    "long-lived token and set INSTAGRAM_ACCESS_TOKEN (see docs/ingest.md)"
                )
            if code in PERMISSION_CODES:
                raise AccessError(
                    f"permission denied (code {code}: {message}); check the token's permissions "
                    "and the app's Instagram Public Content Access feature (see docs/ingest.md)",
                    code,
                )
            if code in THROTTLE_CODES or status == 429:
                failure, reason = f"still throttled (code {code}, HTTP {status}): {message}", \
                    "throttled"
            elif code in TRANSIENT_CODES or status >= 500 or status == 200:
                failure, reason = f"Graph API unavailable (HTTP {status}): {message}", "unavailable"
            else:
                raise GraphApiError(f"Graph API error {code} (HTTP {status}): {message}", code)
            self._retry_or_raise(attempt, failure, code, reason)
            attempt += 1

    def _retry_or_raise(self, attempt: int, failure: str, code: int | None, reason: str) -> None:
        if attempt >= self.backoff.retries:
            raise GraphApiError(f"{failure} (gave up after {attempt + 1} tries)", code)
        self._wait(self.backoff.after_throttle(attempt, self.usage.regain_minutes), reason,
                   failure)

    def _pace(self) -> None:
        if self.usage.by_header and self.clock() - self._usage_at >= self.backoff.usage_ttl:
            self._set_usage(Usage())  # an old reading says nothing about the window now
        wait = self.backoff.pace(self.usage.percent, self.usage.regain_minutes)
        self._wait(wait, "pause" if self.usage.percent >= self.backoff.pause_at else "pace",
                   f"usage at {self.usage.percent:.0f}%")

    def _url(self, path: str, params: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
        if path.startswith(("http://", "https://")):
            parts, base = urlsplit(path), urlsplit(self.base_url)
            if (parts.scheme, parts.netloc) != (base.scheme, base.netloc):
                # The token goes with every request: never to a host the user did not name.
                raise GraphApiError(f"refusing a paging link to another host ({parts.netloc})")
            query = {k: v for k, v in parse_qsl(parts.query) if k != "access_token"}
            query.update(params)
            return urlunsplit((*parts[:3], "", "")), query
        return f"{self.base_url}/{path.lstrip('/')}", dict(params)

    def _record_usage(self, headers: Mapping[str, str]) -> None:
        """Each answer's headers are the reading now: an answer without them ends the last one
        (a window that was at 96 % and stopped reporting must not pause every later call)."""
        usage = parse_usage(headers)
        if usage.by_header or self.usage.by_header:
            self._set_usage(usage)
            self._usage_at = self.clock()

    def _set_usage(self, usage: Usage) -> None:
        self.usage = usage
        for header in ("app", "business_use_case"):
            metrics.RATE_LIMIT_USAGE.labels(header=header).set(usage.by_header.get(header, 0.0))

    def _wait(self, seconds: float, reason: str, why: str) -> None:
        if seconds <= 0:
            return
        self.waits.append(seconds)
        metrics.API_WAIT_SECONDS.labels(reason=reason).inc(seconds)
        log.info("waiting %.1f s before the next Graph API call: %s", seconds, why)
        self.sleep(seconds)

    def __repr__(self) -> str:  # never show the token, even in a debugger
        return f"GraphClient(base_url={self.base_url!r})"


def _answer(response: requests.Response
            ) -> tuple[dict[str, Any] | None, int | None, int | None, str]:
    """``(body, None, None, "")`` for a good page, else ``(None, code, subcode, message)``.

    Reading the body may raise a network error (a connection cut mid-body): the caller
    retries those like any other.
    """
    try:
        body = response.json()
    except ValueError:
        body = None
    if response.status_code == 200:
        if isinstance(body, dict):
            return body, None, None, ""
        kind = "a JSON object" if body is not None else "JSON (an HTML page or a cut body?)"
        return None, None, None, f"a 200 answer that is not {kind}"
    error = body.get("error") if isinstance(body, dict) else None
    error = error if isinstance(error, dict) else {}
    code = error.get("code") if isinstance(error.get("code"), int) else None
    subcode = error.get("error_subcode") if isinstance(error.get("error_subcode"), int) else None
    message = str(error.get("message") or response.reason or "no message")[:300]
    return None, code, subcode, message


def _label(endpoint: str) -> str:
    """Numeric node ids would make one metric series per id; keep the label set small."""
    return "node" if endpoint.isdigit() else endpoint[:40]

