"""Fetching untrusted image URLs without becoming an SSRF proxy.

Every record's URL is attacker-controlled. The address check happens on the connected socket
(not only on a DNS answer), so a name that resolves to loopback, an integer or octal IP
spelling, or a redirect to an internal host are all refused the same way, and DNS rebinding
between check and connect buys nothing. Only an explicit ``host:port`` allow-list (the demo's
and the tests' own image server) may reach a non-public address.
"""

from __future__ import annotations

import ipaddress
import logging
import random
import socket
import time
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import requests
import urllib3
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
RETRY_STATUSES = {429, 500, 502, 503, 504}


class FetchError(Exception):
    """An image that could not be had; ``status`` is the post's image status."""

    def __init__(self, status: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class BlockedAddress(FetchError):
    def __init__(self, message: str) -> None:
        super().__init__("blocked", message)


def address_is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_global and not (
        addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_multicast
        or addr.is_reserved or addr.is_unspecified
    )


@dataclass(frozen=True)
class AddressPolicy:
    """Public addresses are fine; others only when their exact ``ip:port`` is allowed."""

    allowed: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_hosts(cls, hosts: list[str] | None) -> AddressPolicy:
        allowed: set[tuple[str, int]] = set()
        for entry in hosts or []:
            host, _, port = entry.rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"--allow-host needs HOST:PORT, got {entry!r}")
            for info in socket.getaddrinfo(host.strip("[]"), int(port), type=socket.SOCK_STREAM):
                allowed.add((str(info[4][0]), int(port)))
        return cls(frozenset(allowed))

    def check(self, ip: str, port: int) -> None:
        if (ip, port) in self.allowed or address_is_public(ip):
            return
        raise BlockedAddress(f"refused to connect to non-public address {ip}:{port}")


def _guarded(base: type[HTTPConnection], policy: AddressPolicy) -> type[HTTPConnection]:
    class Guarded(base):  # type: ignore[valid-type,misc]
        def _new_conn(self) -> socket.socket:
            sock = super()._new_conn()
            ip, port = sock.getpeername()[:2]
            try:
                policy.check(str(ip), int(port))
            except BlockedAddress:
                sock.close()
                raise
            return sock

    return Guarded


class GuardedAdapter(HTTPAdapter):
    """A requests adapter whose every new connection is checked against the policy."""

    def __init__(self, policy: AddressPolicy, pool_size: int) -> None:
        self._policy = policy
        super().__init__(pool_connections=pool_size, pool_maxsize=pool_size, max_retries=0)

    def init_poolmanager(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().init_poolmanager(*args, **kwargs)
        http_conn = _guarded(HTTPConnection, self._policy)
        https_conn = _guarded(HTTPSConnection, self._policy)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("GuardedHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("GuardedHTTPSPool", (HTTPSConnectionPool,),
                          {"ConnectionCls": https_conn}),
        }


@dataclass
class FetchConfig:
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 3.0
    read_timeout: float = 10.0
    total_timeout: float = 20.0
    retries: int = 2
    backoff: float = 0.25
    allow_hosts: list[str] = field(default_factory=list)
    pool_size: int = 16
    user_agent: str = "logowatch/0.1 (+brand analytics; image fetcher)"


class Fetcher:
    """One pooled session shared by the fetch threads (requests sessions are thread-safe
    for plain GETs through a shared adapter)."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self.policy = AddressPolicy.from_hosts(config.allow_hosts)
        self.session = requests.Session()
        self.session.trust_env = False  # no proxies or netrc from the environment
        self.session.headers["User-Agent"] = config.user_agent
        self.session.headers["Accept"] = "image/*"
        adapter = GuardedAdapter(self.policy, config.pool_size)
        self.session.mount("http://", adapter)
        self.session.mount("https://", adapter)

    def close(self) -> None:
        self.session.close()

    def fetch(self, url: str) -> bytes:
        """The image's bytes, or ``FetchError`` with the status to record."""
        attempt = 0
        while True:
            try:
                return self._fetch_once(url)
            except FetchError as exc:
                if not exc.transient or attempt >= self.config.retries:
                    if exc.transient:
                        raise FetchError("fetch_failed", f"{exc} (after {attempt + 1} tries)") \
                            from None
                    raise
                delay = self.config.backoff * (2 ** attempt) * (0.5 + random.random())
                log.debug("retrying %s in %.2fs: %s", url, delay, exc)
                time.sleep(delay)
                attempt += 1

    def _fetch_once(self, url: str) -> bytes:
        deadline = time.monotonic() + self.config.total_timeout
        for _ in range(MAX_REDIRECTS + 1):
            parts = urlsplit(url)
            if parts.scheme not in ("http", "https"):
                raise BlockedAddress(f"scheme {parts.scheme or 'none'!r} is not allowed")
            self._precheck(parts.hostname or "", parts.port or (443 if parts.scheme == "https"
                                                                  else 80))
            try:
                response = self.session.get(
                    url, stream=True, allow_redirects=False,
                    timeout=(self.config.connect_timeout, self.config.read_timeout),
                )
            except BlockedAddress:
                raise
            except requests.exceptions.ConnectionError as exc:
                blocked = _blocked_cause(exc)
                if blocked is not None:
                    raise blocked from None
                raise FetchError("fetch_failed", f"connection failed: {_short(exc)}",
                                 transient=True) from None
            except requests.exceptions.Timeout:
                raise FetchError("fetch_failed", "timed out", transient=True) from None
            except (requests.exceptions.RequestException, ValueError) as exc:
                raise FetchError("fetch_failed", f"bad request: {_short(exc)}") from None
            with response:
                if response.is_redirect:
                    location = response.headers.get("Location", "")
                    url = urljoin(url, location)
                    continue
                return self._read(response, deadline)
        raise FetchError("fetch_failed", f"more than {MAX_REDIRECTS} redirects")

    def _precheck(self, host: str, port: int) -> None:
        """Refuse before connecting when every address of the host is off limits, so the
        verdict is ``blocked`` even where nothing listens there."""
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except (socket.gaierror, UnicodeError) as exc:
            raise FetchError("fetch_failed", f"cannot resolve {host!r}: {exc}") from None
        errors = []
        for info in infos:
            try:
                self.policy.check(str(info[4][0]), port)
                return
            except BlockedAddress as exc:
                errors.append(exc)
        raise errors[0]

    def _read(self, response: requests.Response, deadline: float) -> bytes:
        code = response.status_code
        if code >= 400:
            raise FetchError("fetch_failed", f"HTTP {code}", transient=code in RETRY_STATUSES)
        ctype = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
        if not ctype.startswith("image/"):
            raise FetchError("not_image", f"content type {ctype or 'missing'!r} is not an image")
        declared = response.headers.get("Content-Length", "")
        if declared.isdigit() and int(declared) > self.config.max_bytes:
            raise FetchError("too_large", f"{declared} bytes is over {self.config.max_bytes}")
        chunks: list[bytes] = []
        size = 0
        try:
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > self.config.max_bytes:
                    raise FetchError("too_large", f"more than {self.config.max_bytes} bytes")
                if time.monotonic() > deadline:
                    raise FetchError("fetch_failed", "download exceeded the total timeout",
                                     transient=True)
                chunks.append(chunk)
        except (requests.exceptions.RequestException, urllib3.exceptions.HTTPError) as exc:
            raise FetchError("fetch_failed", f"read failed: {_short(exc)}",
                             transient=True) from None
        return b"".join(chunks)


def _blocked_cause(exc: BaseException) -> BlockedAddress | None:
    seen: set[int] = set()
    stack: list[BaseException | None] = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen:
            continue
        seen.add(id(item))
        if isinstance(item, BlockedAddress):
            return item
        stack.extend([item.__cause__, item.__context__])
        stack.extend(arg for arg in getattr(item, "args", ()) if isinstance(arg, BaseException))
        reason = getattr(item, "reason", None)
        if isinstance(reason, BaseException):
            stack.append(reason)
    return None


def _short(exc: BaseException) -> str:
    text = str(exc)
    return text if len(text) < 200 else text[:197] + "..."
