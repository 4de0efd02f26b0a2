"""Fetching untrusted image URLs without becoming an SSRF proxy, or a hostage.

Every record's URL, and every byte a server sends back, is attacker-controlled. So:

- One parser (``urllib.parse.urlsplit``) decides the host, and the connection goes to that
  host: the name is resolved once, refused if *any* of its addresses is off limits, and the
  socket connects to a checked address (never to a name resolved again later), so DNS
  rebinding, integer or octal IP spellings and names with a private address among public ones
  buy nothing. Only an explicit ``host:port`` allow-list (the demo's and the tests' own image
  server) may reach a non-public address.
- One wall-clock deadline covers the whole fetch (every try, redirect, DNS answer, connect,
  TLS handshake, request, headers and body): each socket operation waits at most until it.
- Every response of a redirect chain is bounded: a redirect's body is never read, the final
  body is read up to ``max_bytes``, headers are bounded by ``http.client`` (100 lines of at
  most 64 KiB). Content is never decompressed (``Accept-Encoding: identity``).
- Nothing a server sends is kept: no cookies, no pooled connections, no per-server state.
"""

from __future__ import annotations

import http.client
import io
import ipaddress
import logging
import random
import socket
import ssl
import time
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import certifi

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3
REDIRECTS = {301, 302, 303, 307, 308}
RETRY_STATUSES = {429, 500, 502, 503, 504}
CHUNK = 65536
# Characters left as they are when a request target is quoted (reserved ones and escapes).
_SAFE = "!#$%&'()*+,/:;=?@[]~"


class FetchError(Exception):
    """An image that could not be had; ``status`` is the post's image status."""

    def __init__(self, status: str, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


class BlockedAddress(FetchError):
    def __init__(self, message: str) -> None:
        super().__init__("blocked", message)


class _DeadlinePassed(TimeoutError):
    pass


# IPv6 prefixes whose addresses carry an IPv4 address that the packets end up at. Such an
# address is judged by the IPv4 inside it (all of them where there are several), not by the
# IPv6 ranges, whatever this Python's ``ipaddress`` tables say about the prefix.
_SIXTOFOUR = ipaddress.ip_network("2002::/16")  # RFC 3056: bits 16-47
_TEREDO = ipaddress.ip_network("2001::/32")  # RFC 4380: server and (obfuscated) client
_NAT64 = ipaddress.ip_network("64:ff9b::/96")  # RFC 6052 well-known prefix: the last 32 bits
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")  # RFC 8215: any RFC 6052 length in it
_LOW32 = (ipaddress.ip_network("::/96"),  # IPv4-compatible (RFC 4291, deprecated)
          ipaddress.ip_network("::ffff:0:0/96"),  # IPv4-mapped
          ipaddress.ip_network("::ffff:0:0:0/96"))  # IPv4-translated (RFC 2765)


def _ipv4_at(value: int, *spans: tuple[int, int]) -> ipaddress.IPv4Address:
    """The IPv4 address made of the given (first bit, bit count) spans of a 128-bit value."""
    out = 0
    for first, count in spans:
        out = (out << count) | ((value >> (128 - first - count)) & ((1 << count) - 1))
    return ipaddress.IPv4Address(out)


def embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address stands for (6to4, Teredo, NAT64 in its well-known
    and local-use prefixes, IPv4-mapped, -compatible and -translated); empty for the rest."""
    value = int(addr)
    if addr in _SIXTOFOUR:
        return [_ipv4_at(value, (16, 32))]
    if addr in _TEREDO:
        return [_ipv4_at(value, (32, 32)), ipaddress.IPv4Address(~value & 0xFFFFFFFF)]
    if addr in _NAT64 or any(addr in net for net in _LOW32):
        return [_ipv4_at(value, (96, 32))]
    if addr in _NAT64_LOCAL:  # the operator picks the length: every place an IPv4 can be
        return [_ipv4_at(value, (48, 16), (72, 16)), _ipv4_at(value, (56, 8), (72, 24)),
                _ipv4_at(value, (72, 32)), _ipv4_at(value, (96, 32))]
    return []


def _ip_is_public(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return addr.is_global and not (
        addr.is_loopback or addr.is_private or addr.is_link_local or addr.is_multicast
        or addr.is_reserved or addr.is_unspecified
    )


def address_is_public(ip: str) -> bool:
    addr = ipaddress.ip_address(ip.split("%", 1)[0])
    if isinstance(addr, ipaddress.IPv6Address):
        inside = embedded_ipv4(addr)
        if inside:
            return all(_ip_is_public(v4) for v4 in inside)
    return _ip_is_public(addr)


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

    def addresses(self, infos: list[Any], port: int) -> list[str]:
        """The addresses to connect to, in order, from a ``getaddrinfo`` answer; refused as a
        whole when any of them is off limits (a name is as safe as its worst address)."""
        ips = list(dict.fromkeys(str(info[4][0]) for info in infos))
        for ip in ips:
            self.check(ip, port)
        if not ips:
            raise FetchError("fetch_failed", "the name has no address")
        return ips


@dataclass(frozen=True)
class Target:
    """What one URL asks for, as the one parser reads it."""

    scheme: str
    host: str  # ASCII (IDNA) host name or IP literal, without brackets
    port: int
    path: str  # the request target: path and query, quoted

    @classmethod
    def parse(cls, url: str) -> Target:
        try:
            parts = urlsplit(url)
            scheme = parts.scheme.lower()
            if scheme not in ("http", "https"):
                raise BlockedAddress(f"scheme {scheme or 'none'!r} is not allowed")
            port = parts.port or (443 if scheme == "https" else 80)
            host = (parts.hostname or "").encode("idna").decode("ascii")
        except (ValueError, UnicodeError) as exc:
            raise FetchError("fetch_failed", f"invalid URL: {short(exc)}") from None
        if not host:
            raise FetchError("fetch_failed", "invalid URL: no host")
        path = quote(parts.path or "/", safe=_SAFE)
        if parts.query:
            path += "?" + quote(parts.query, safe=_SAFE)
        return cls(scheme, host, port, path)

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"


class _DeadlineSocket:
    """A connected socket whose every send and receive waits at most ``idle`` seconds and
    never past ``deadline``: a server dripping a byte a second cannot stretch the fetch."""

    def __init__(self, sock: socket.socket, deadline: float, idle: float) -> None:
        self._sock = sock
        self._deadline = deadline
        self._idle = idle

    def _arm(self) -> None:
        left = self._deadline - time.monotonic()
        if left <= 0:
            raise _DeadlinePassed("the total deadline passed")
        self._sock.settimeout(min(self._idle, left))

    def recv_into(self, buffer: Any, nbytes: int = 0, flags: int = 0) -> int:
        self._arm()
        return self._sock.recv_into(buffer, nbytes, flags)

    def sendall(self, data: Any) -> None:
        self._arm()
        self._sock.sendall(data)

    def makefile(self, mode: str = "rb", buffering: int = -1) -> io.BufferedReader:
        return io.BufferedReader(socket.SocketIO(self, "rb"))  # type: ignore[arg-type]

    def _decref_socketios(self) -> None:  # called by SocketIO.close
        pass

    def close(self) -> None:
        """``http.client`` closes its socket while the response may still be read (as a
        real socket's reference count allows); the fetcher calls ``release`` when done."""

    def release(self) -> None:
        self._sock.close()


@dataclass
class FetchConfig:
    max_bytes: int = 20 * 1024 * 1024
    connect_timeout: float = 3.0
    read_timeout: float = 10.0  # the longest wait for any one send or receive
    total_timeout: float = 20.0  # the whole fetch: every try, redirect and byte
    retries: int = 2
    backoff: float = 0.25
    allow_hosts: list[str] = field(default_factory=list)
    pool_size: int = 16  # threads resolving names (a name server cannot hold fetches longer)
    user_agent: str = "logowatch/0.1 (+brand analytics; image fetcher)"


class Fetcher:
    """Shared by the fetch threads; holds no state a server can influence."""

    def __init__(self, config: FetchConfig) -> None:
        self.config = config
        self.policy = AddressPolicy.from_hosts(config.allow_hosts)
        self.tls = ssl.create_default_context(cafile=certifi.where())
        self._resolver = ThreadPoolExecutor(max_workers=config.pool_size,
                                            thread_name_prefix="resolve")

    def close(self) -> None:
        self._resolver.shutdown(wait=False, cancel_futures=True)

    def fetch(self, url: str) -> bytes:
        """The image's bytes, or ``FetchError`` with the status to record, within
        ``total_timeout`` seconds whatever the servers do."""
        deadline = time.monotonic() + self.config.total_timeout
        attempt = 0
        while True:
            try:
                return self._fetch_once(url, deadline)
            except FetchError as exc:
                left = deadline - time.monotonic()
                delay = self.config.backoff * (2 ** attempt) * (0.5 + random.random())
                if not exc.transient or attempt >= self.config.retries or delay >= left:
                    if exc.transient:
                        raise FetchError("fetch_failed", f"{exc} (after {attempt + 1} tries)") \
                            from None
                    raise
                log.debug("retrying %s in %.2fs: %s", url, delay, exc)
                time.sleep(delay)
                attempt += 1

    def _fetch_once(self, url: str, deadline: float) -> bytes:
        for _ in range(MAX_REDIRECTS + 1):
            target = Target.parse(url)
            conn, sock = self._connect(target, deadline)
            try:
                response = self._request(conn, target, deadline)
                location = response.getheader("Location")
                if response.status in REDIRECTS and location:
                    # The redirect's body is never read: closing drops it with the socket.
                    url = _redirect_target(url, location)
                    continue
                return self._read(response, deadline)
            finally:
                conn.close()
                sock.release()
        raise FetchError("fetch_failed", f"more than {MAX_REDIRECTS} redirects")

    def _resolve(self, target: Target, deadline: float) -> list[str]:
        lookup = self._resolver.submit(socket.getaddrinfo, target.host, target.port,
                                       type=socket.SOCK_STREAM)
        try:
            infos = lookup.result(timeout=max(0.0, deadline - time.monotonic()))
        except FutureTimeout:
            lookup.cancel()  # still queued behind stalled lookups: never start it
            raise FetchError("fetch_failed", f"resolving {target.host!r} timed out",
                             transient=True) from None
        except (OSError, UnicodeError, ValueError) as exc:
            raise FetchError("fetch_failed", f"cannot resolve {target.host!r}: {exc}") from None
        return self.policy.addresses(infos, target.port)

    def _connect(self, target: Target,
                 deadline: float) -> tuple[http.client.HTTPConnection, _DeadlineSocket]:
        """A connection to a checked address of the target, TLS verified for its name."""
        error: BaseException | None = None
        for ip in self._resolve(target, deadline):
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                sock = socket.create_connection((ip, target.port),
                                                timeout=min(self.config.connect_timeout, left))
            except OSError as exc:
                error = exc
                continue
            try:
                if target.scheme == "https":
                    sock.settimeout(max(0.001, min(self.config.read_timeout,
                                                   deadline - time.monotonic())))
                    sock = self.tls.wrap_socket(sock, server_hostname=target.host)
            except OSError as exc:
                sock.close()
                raise self._failure("TLS handshake failed", exc, deadline) from None
            bounded = _DeadlineSocket(sock, deadline, self.config.read_timeout)
            conn = http.client.HTTPConnection(target.host, target.port)
            conn.sock = bounded  # type: ignore[assignment]
            return conn, bounded
        if error is None:
            raise FetchError("fetch_failed", "the total timeout passed before connecting",
                             transient=True)
        raise self._failure("connection failed", error, deadline)

    def _request(self, conn: http.client.HTTPConnection, target: Target,
                 deadline: float) -> http.client.HTTPResponse:
        try:
            conn.putrequest("GET", target.path, skip_host=True, skip_accept_encoding=True)
            for name, value in (("Host", target.host_header),
                                ("User-Agent", self.config.user_agent),
                                ("Accept", "image/*"), ("Accept-Encoding", "identity"),
                                ("Connection", "close")):
                conn.putheader(name, value)
            conn.endheaders()
            return conn.getresponse()
        except http.client.InvalidURL as exc:
            raise FetchError("fetch_failed", f"invalid URL: {short(exc)}") from None
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._failure("no valid response", exc, deadline) from None

    def _read(self, response: http.client.HTTPResponse, deadline: float) -> bytes:
        code = response.status
        if code >= 400:
            raise FetchError("fetch_failed", f"HTTP {code}", transient=code in RETRY_STATUSES)
        if not 200 <= code < 300:
            raise FetchError("fetch_failed", f"HTTP {code} is not an image response")
        ctype = (response.getheader("Content-Type") or "").split(";")[0].strip().lower()
        if not ctype.startswith("image/"):
            raise FetchError("not_image", f"content type {ctype or 'missing'!r} is not an image")
        declared = response.getheader("Content-Length") or ""
        if declared.isdigit() and int(declared) > self.config.max_bytes:
            raise FetchError("too_large", f"{declared} bytes is over {self.config.max_bytes}")
        body = bytearray()
        try:
            while chunk := response.read(CHUNK):
                body += chunk
                if len(body) > self.config.max_bytes:
                    raise FetchError("too_large", f"more than {self.config.max_bytes} bytes")
        except (OSError, http.client.HTTPException, ValueError) as exc:
            raise self._failure("read failed", exc, deadline) from None
        return bytes(body)

    def _failure(self, what: str, exc: BaseException, deadline: float) -> FetchError:
        if time.monotonic() >= deadline:
            return FetchError("fetch_failed",
                              f"exceeded the total timeout of {self.config.total_timeout:g}s")
        if isinstance(exc, TimeoutError):
            return FetchError("fetch_failed", "timed out", transient=True)
        return FetchError("fetch_failed", f"{what}: {short(exc)}", transient=True)


def _redirect_target(url: str, location: str) -> str:
    """Where a redirect leads, or ``fetch_failed`` when its Location is no URL at all."""
    try:
        return urljoin(url, location.strip())
    except ValueError as exc:  # e.g. "Invalid IPv6 URL" from an unclosed bracket
        raise FetchError("fetch_failed", f"invalid redirect target: {short(exc)}") from None


def short(exc: BaseException) -> str:
    """An exception's text for a status or a log line: never empty, at most 200 characters."""
    text = str(exc) or type(exc).__name__
    return text if len(text) < 200 else text[:197] + "..."
