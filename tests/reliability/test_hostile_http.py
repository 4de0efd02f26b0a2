"""The fetcher against hostile HTTP servers on 127.0.0.1 (raw sockets, so they can misbehave
below HTTP): endless redirect bodies, dripping senders, cookie floods, names with a forbidden
address among allowed ones, and URLs two parsers read differently.

Nothing here asserts a duration: a server that drips forever only stops when the fetcher
hangs up, so a fetch without a working deadline would hang the test (and pytest's timeout
would fail it). The measured times are printed with ``-s`` for docs/reliability.md.
"""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator

import pytest

from tests.reliability.harness import Handler, RawServer, read_request
from tests.support.http_server import ImageServer, jpeg_bytes
from workers.fetch import FetchConfig, Fetcher, FetchError

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

@pytest.fixture
def raw() -> Iterator[list[RawServer]]:
    servers: list[RawServer] = []
    yield servers
    for server in servers:
        server.close()


def _fetcher(*hosts: str, **kw: object) -> Fetcher:
    return Fetcher(FetchConfig(allow_hosts=list(hosts), backoff=0.01, **kw))  # type: ignore[arg-type]


def test_a_redirect_with_an_endless_body_is_never_read(
    raw: list[RawServer], image_server: ImageServer,
) -> None:
    body = jpeg_bytes()
    target = image_server.add("/ok.jpg", body)

    def endless_302(conn: socket.socket) -> None:
        read_request(conn)
        server.send(conn, f"HTTP/1.1 302 Found\r\nLocation: {target}\r\n\r\n".encode())
        while True:
            server.send(conn, b"x" * 65536)

    server = RawServer(endless_302)
    raw.append(server)
    got = _fetcher(server.hostport, image_server.host).fetch(f"http://{server.hostport}/r")
    assert got == body
    # The fetcher hung up without reading: the server could only fill the socket buffers.
    assert server.sent < 64 * 1024 * 1024, server.sent


def test_an_endless_body_is_cut_at_max_bytes(raw: list[RawServer]) -> None:
    def endless_200(conn: socket.socket) -> None:
        read_request(conn)
        server.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n")
        while True:
            server.send(conn, b"x" * 65536)

    server = RawServer(endless_200)
    raw.append(server)
    with pytest.raises(FetchError) as caught:
        _fetcher(server.hostport, max_bytes=1_000_000).fetch(f"http://{server.hostport}/a")
    assert caught.value.status == "too_large"


def _dripping(what: bytes) -> Callable[[RawServer], Handler]:
    def make(server: RawServer) -> Handler:
        def handler(conn: socket.socket) -> None:
            read_request(conn)
            server.send(conn, what)
            while True:  # one byte every 0.2 s, forever: each read is quick, the whole never ends
                time.sleep(0.2)
                server.send(conn, b"a")

        return handler
    return make


@pytest.mark.parametrize("stage", ["status line", "headers", "body"])
def test_a_server_dripping_bytes_cannot_hold_a_fetch_past_its_total_deadline(
    raw: list[RawServer], stage: str,
) -> None:
    head = {"status line": b"HTTP/1.1 2",
            "headers": b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Drip: ",
            "body": b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n\r\n"}[stage]
    holder: list[RawServer] = []
    server = RawServer(lambda conn: _dripping(head)(holder[0])(conn))
    holder.append(server)
    raw.append(server)
    fetcher = _fetcher(server.hostport, read_timeout=1.0, total_timeout=2.0, retries=3)
    started = time.monotonic()
    with pytest.raises(FetchError) as caught:
        fetcher.fetch(f"http://{server.hostport}/drip")
    took = time.monotonic() - started
    assert caught.value.status == "fetch_failed"
    assert "exceeded the total timeout of 2s" in str(caught.value)
    print(f"\ndripping {stage}: fetch ended after {took:.2f}s (total timeout 2s)")


def test_cookies_a_server_sets_are_never_sent_back(raw: list[RawServer]) -> None:
    body = jpeg_bytes()
    requests: list[bytes] = []

    def cookie_flood(conn: socket.socket) -> None:
        requests.append(read_request(conn))
        cookies = "".join(f"Set-Cookie: c{i}={'v' * 1000}; Path=/\r\n" for i in range(50))
        server.send(conn, (f"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\n{cookies}"
                           f"Content-Length: {len(body)}\r\n\r\n").encode() + body)

    server = RawServer(cookie_flood)
    raw.append(server)
    fetcher = _fetcher(server.hostport)
    for _ in range(3):
        assert fetcher.fetch(f"http://{server.hostport}/a.jpg") == body
    assert len(requests) == 3
    assert all(b"cookie" not in r.lower() for r in requests), requests[-1]
    assert len({len(r) for r in requests}) == 1  # no request grew


def test_a_name_with_any_forbidden_address_is_refused_before_any_connection(
    raw: list[RawServer], monkeypatch: pytest.MonkeyPatch,
) -> None:
    """``multi.test`` resolves to a forbidden address and an allowed one (same port); the
    forbidden one must not even see a TCP handshake, in either order."""
    body = jpeg_bytes()

    def image(conn: socket.socket) -> None:
        read_request(conn)
        allowed.send(conn, b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: "
                     + str(len(body)).encode() + b"\r\n\r\n" + body)

    allowed = RawServer(image, "127.0.0.1")
    forbidden = RawServer(image, "127.0.0.2", allowed.port)
    raw += [allowed, forbidden]
    real = socket.getaddrinfo
    answers: list[str] = []

    def resolver(host, port, *args, **kwargs):  # type: ignore[no-untyped-def]
        if host == "multi.test":
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in answers]
        return real(host, port, *args, **kwargs)

    monkeypatch.setattr(socket, "getaddrinfo", resolver)
    fetcher = _fetcher(allowed.hostport)
    for order in (["127.0.0.2", "127.0.0.1"], ["127.0.0.1", "127.0.0.2"]):
        answers[:] = order
        with pytest.raises(FetchError) as caught:
            fetcher.fetch(f"http://multi.test:{allowed.port}/a.jpg")
        assert caught.value.status == "blocked"
    answers[:] = ["127.0.0.1"]  # control: the allowed address alone is fetched
    assert fetcher.fetch(f"http://multi.test:{allowed.port}/a.jpg") == body
    assert forbidden.accepted == 0
    assert allowed.accepted == 1


@pytest.mark.parametrize("template", [
    "http://127.0.0.1:{ok}\\@127.0.0.1:{canary}/x.jpg",
    "http://127.0.0.1:{canary}\\@127.0.0.1:{ok}/x.jpg",
    "http://127.0.0.1:{ok}\\\\@127.0.0.1:{canary}/x.jpg",
    "http://127.0.0.1:{canary}#@127.0.0.1:{ok}/x.jpg",
    "http://127.0.0.1:{ok}?@127.0.0.1:{canary}/x.jpg",
    "http://127.0.0.1:{canary}%2f@127.0.0.1:{ok}/x.jpg",
])
def test_the_host_the_check_reads_is_the_host_connected_to(
    raw: list[RawServer], image_server: ImageServer, template: str,
) -> None:
    """URLs that parsers disagree on: whatever the outcome, no connection reaches a host that
    is not allowed (the canary counts TCP handshakes, not only HTTP requests)."""
    image_server.add("/x.jpg", jpeg_bytes())
    canary = RawServer(lambda conn: None)
    raw.append(canary)
    url = template.format(ok=image_server.port, canary=canary.port)
    try:
        _fetcher(image_server.host).fetch(url)
    except FetchError as exc:
        assert exc.status in ("blocked", "fetch_failed", "not_image"), exc
    assert canary.accepted == 0


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    """A self-signed certificate for ``localhost`` (made with the openssl command line)."""
    folder = tmp_path_factory.mktemp("tls")
    cert, key = str(folder / "cert.pem"), str(folder / "key.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost",
                    "-keyout", key, "-out", cert], check=True, capture_output=True)
    return cert, key


def _tls_image_server(cert: str, key: str, body: bytes) -> RawServer:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    def handler(conn: socket.socket) -> None:
        with context.wrap_socket(conn, server_side=True) as tls:
            read_request(tls)
            tls.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nContent-Length: "
                        + str(len(body)).encode() + b"\r\n\r\n" + body)

    return RawServer(handler)


def test_https_verifies_the_certificate_for_the_name_while_connecting_to_the_checked_address(
    raw: list[RawServer], certificate: tuple[str, str],
) -> None:
    cert, key = certificate
    body = jpeg_bytes()
    server = _tls_image_server(cert, key, body)
    raw.append(server)
    fetcher = _fetcher(f"localhost:{server.port}", f"127.0.0.1:{server.port}", retries=0)
    with pytest.raises(FetchError, match="CERTIFICATE_VERIFY_FAILED"):
        fetcher.fetch(f"https://localhost:{server.port}/a.jpg")  # not a public CA
    fetcher.tls = ssl.create_default_context(cafile=cert)  # trust this one certificate
    assert fetcher.fetch(f"https://localhost:{server.port}/a.jpg") == body
    with pytest.raises(FetchError, match=r"IP address mismatch|doesn.t match"):
        fetcher.fetch(f"https://127.0.0.1:{server.port}/a.jpg")  # the name is what is verified


def test_a_server_that_never_completes_the_tls_handshake_ends_at_the_deadline(
    raw: list[RawServer],
) -> None:
    def silent(conn: socket.socket) -> None:
        while conn.recv(4096):  # reads the client hello, never answers
            pass

    server = RawServer(silent)
    raw.append(server)
    fetcher = _fetcher(server.hostport, read_timeout=5.0, total_timeout=1.0)
    with pytest.raises(FetchError, match="exceeded the total timeout of 1s"):
        fetcher.fetch(f"https://{server.hostport}/a.jpg")
