"""Untrusted input through the whole worker (real broker, Postgres and HTTP servers): the
bad-input corpus, SSRF attempts, and an image host that hangs. Each record ends with its
documented status or dead-letter reason, and the worker keeps going: one ``logowatch detect``
process serves the whole module and must still be alive, and exit cleanly, at the end.
"""

from __future__ import annotations

import json
import select
import signal
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.reliability.harness import (
    RawServer,
    WorkerProcess,
    detect,
    read_request,
    traceback_from_our_code,
    wait_for,
    wait_lag_zero,
)
from tests.support.http_server import ImageServer
from tests.support.model import BRANDS
from tests.support.pipeline import post, produce, read_topic, rows

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

CORPUS = Path(__file__).resolve().parents[1] / "corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())
FETCH_TIMEOUT = "5"  # seconds; the slow host below answers after 30
TOTAL_TIMEOUT = 10  # seconds, twice FETCH_TIMEOUT: one deadline over each whole fetch
SLOW_HOSTS = 16  # as many as the worker's fetch threads


@dataclass
class Stream:
    bootstrap: str
    db: str
    topic: str
    group: str
    images: ImageServer
    canary: ImageServer
    slow: list[RawServer]
    worker: WorkerProcess

    def run(self, messages: list[tuple[bytes, bytes | None]]) -> None:
        """Produce, then wait until the worker has committed everything in the topic."""
        produce(self.bootstrap, self.topic, messages)  # type: ignore[arg-type]
        wait_lag_zero(self.bootstrap, self.group, self.topic, timeout=300)
        assert self.worker.alive(), self.worker.output()[-4000:]

    def letters(self, keys: set[str]) -> dict[str, str]:
        """Dead-letter reasons by key, for ``keys``."""
        found = read_topic(self.bootstrap, f"{self.topic}.dlq", limit=10_000, timeout_ms=4000)
        return {m.key.decode(): dict(m.headers)["error"].decode() for m in found
                if m.key is not None and m.key.decode() in keys}


@pytest.fixture(scope="module")
def stream(bootstrap: str, migrated_db: str, tiny_bundle: Path,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stream]:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    topic = f"inputs-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        admin.close()
    images, canary = ImageServer().start(), ImageServer().start()
    slow = [RawServer(_drip_headers) for _ in range(SLOW_HOSTS)]
    log = tmp_path_factory.mktemp("inputs") / "worker.log"
    worker = detect(tiny_bundle, bootstrap, migrated_db, topic, f"{topic}-g", log,
                    "--fetch-timeout", FETCH_TIMEOUT, "--fetch-retries", "0",
                    "--fetch-workers", str(SLOW_HOSTS),
                    allow=[images.host, *(s.hostport for s in slow)])
    try:
        yield Stream(bootstrap, migrated_db, topic, f"{topic}-g", images, canary, slow, worker)
    finally:
        worker.kill()
        images.stop()
        canary.stop()
        for server in slow:
            server.close()


def _drip_headers(conn) -> None:  # type: ignore[no-untyped-def]
    """A host that answers at once, then sends its headers a byte a second, forever: every
    read is quick, so only the fetch's total deadline ends it."""
    read_request(conn)
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: image/jpeg\r\nX-Slow: ")
    while True:
        readable, _, _ = select.select([conn], [], [], 1.0)
        if readable and not conn.recv(1):
            return  # the fetcher hung up: this is when its fetch ended
        conn.sendall(b"a")


def _statuses(db: str, ids: list[str]) -> dict[str, tuple[str, str | None]]:
    found = rows(db, "SELECT post_id, image_status, error FROM posts WHERE post_id = ANY(:ids)",
                 ids=ids)
    return {p: (s, e) for p, s, e in found}


def _key(name: str) -> bytes:
    if name.startswith("duplicate_"):
        return b"c-dup"  # same key: same partition, so the two versions keep their order
    return name.encode()


def test_every_corpus_file_ends_with_its_documented_status_or_dead_letter_reason(
    stream: Stream,
) -> None:
    server = stream.images
    for name, spec in EXPECTED["images"].items():
        server.add(f"/corpus/{name}", (CORPUS / "images" / name).read_bytes(),
                   spec["content_type"])
    server.add("/ok.jpg", (CORPUS / "images" / "ok.jpg").read_bytes())
    host = server.host.encode()
    messages: list[tuple[bytes, bytes | None]] = []
    for name in sorted(EXPECTED["records"]):
        value = (CORPUS / "records" / name).read_bytes().replace(b"IMAGE_HOST", host)
        messages.append((_key(name), value))
    for name in EXPECTED["images"]:
        messages.append(post(f"img-{name}", server.url(f"/corpus/{name}"), caption="#acme"))
    messages.append((b"tombstone", None))  # a delete marker on the posts topic
    stream.run(messages)
    db = stream.db

    # Images: each post has the status the corpus documents.
    image_ids = [f"img-{name}" for name in EXPECTED["images"]]
    statuses = _statuses(db, image_ids)
    assert {p: s for p, (s, _) in statuses.items()} == {
        f"img-{name}": spec["status"] for name, spec in EXPECTED["images"].items()}

    # Records: dead letters carry the documented reason; accepted ones store the cleaned text.
    dead = {name: spec for name, spec in EXPECTED["records"].items() if spec["outcome"] == "dlq"}
    reasons = stream.letters({*dead, "tombstone"})
    assert set(reasons) == {*dead, "tombstone"}
    for name, spec in dead.items():
        assert reasons[name].startswith(spec["reason"]), (name, reasons[name])
    assert reasons["tombstone"].startswith("record: empty message")

    accepted = {name: spec for name, spec in EXPECTED["records"].items()
                if spec["outcome"] == "post"}
    ids = {json.loads((CORPUS / "records" / n).read_bytes())["post_id"] for n in accepted}
    stored = {r[0]: r for r in rows(
        db, "SELECT post_id, image_status, caption, author, posted_at FROM posts "
        "WHERE post_id = ANY(:ids)", ids=sorted(ids))}
    assert set(stored) == ids
    for name, spec in accepted.items():
        post_id = json.loads((CORPUS / "records" / name).read_bytes())["post_id"]
        _, status, caption, author, posted_at = stored[post_id]
        assert status == spec["status"], name
        if "caption" in spec:
            assert caption == spec["caption"], name
        if "author" in spec:
            assert author == spec["author"], name
        if "posted_at" in spec:
            assert posted_at.isoformat() == spec["posted_at"], name

    ok = [p for p, (s, _) in statuses.items() if s == "ok"] + sorted(ids)
    per_post = rows(db, "SELECT post_id, count(*) FROM detections "
                        "WHERE post_id = ANY(:ids) GROUP BY post_id", ids=ok)
    assert sorted(per_post) == sorted((p, len(BRANDS)) for p in ok)


def _ssrf_urls(canary: int) -> dict[str, str]:
    return {
        "loopback": f"http://127.0.0.1:{canary}/x.jpg",
        "localhost-dns": f"http://localhost:{canary}/x.jpg",
        "ipv6-loopback": f"http://[::1]:{canary}/x.jpg",
        "v4-mapped-v6": f"http://[::ffff:127.0.0.1]:{canary}/x.jpg",
        "unspecified": f"http://0.0.0.0:{canary}/x.jpg",
        "metadata": "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "private-10": f"http://10.0.0.1:{canary}/x.jpg",
        "private-172": f"http://172.16.5.4:{canary}/x.jpg",
        "private-192": f"http://192.168.1.1:{canary}/x.jpg",
        "cgnat-100-64": f"http://100.64.0.1:{canary}/x.jpg",
        "ula-v6": f"http://[fd00::1]:{canary}/x.jpg",
        "integer-ip": f"http://2130706433:{canary}/x.jpg",
        "octal-ip": f"http://0177.0.0.1:{canary}/x.jpg",
        "hex-ip": f"http://0x7f.0.0.1:{canary}/x.jpg",
        "short-ip": f"http://127.1:{canary}/x.jpg",
        "userinfo-confusion": f"http://images.example.com@127.0.0.1:{canary}/x.jpg",
    }


REDIRECTS = {
    "redirect-loopback": "http://127.0.0.1:{canary}/x.jpg",
    "redirect-localhost": "http://localhost:{canary}/x.jpg",
    "redirect-metadata": "http://169.254.169.254/latest/meta-data/",
    "redirect-file": "file:///etc/passwd",
    "redirect-gopher": "gopher://127.0.0.1:{canary}/_GET%20/x.jpg",
    "redirect-relative-then-loopback": "/hop",
}

SCHEMES = {
    "scheme-file": "file:///etc/passwd",
    "scheme-gopher": "gopher://127.0.0.1:70/_x",
    "scheme-ftp": "ftp://127.0.0.1/x.jpg",
    "scheme-data": "data:image/png;base64,iVBORw0KGgo=",
    "scheme-dict": "dict://127.0.0.1:11211/stat",
}


def _redirect(location: str):  # type: ignore[no-untyped-def]
    def handler(req) -> None:  # type: ignore[no-untyped-def]
        req.send_response(302)
        req.send_header("Location", location)
        req.send_header("Content-Length", "0")
        req.end_headers()

    return handler


def test_ssrf_attempts_end_blocked_and_the_canary_hears_nothing(
    stream: Stream, synth_images: list[tuple[str, bytes]],
) -> None:
    image_server, canary_server = stream.images, stream.canary
    canary_server.add("/x.jpg", synth_images[0][1])
    canary = canary_server.port
    urls = _ssrf_urls(canary)
    for name, location in REDIRECTS.items():
        image_server.routes[f"/{name}"] = _redirect(location.format(canary=canary))
        urls[name] = image_server.url(f"/{name}")
    image_server.routes["/hop"] = _redirect(f"http://127.0.0.1:{canary}/x.jpg")
    control = image_server.add("/fine.jpg", synth_images[1][1])
    messages = [post(f"ssrf-{name}", url) for name, url in urls.items()]
    messages += [post(f"ssrf-{name}", url) for name, url in SCHEMES.items()]
    messages.append(post("ssrf-control", control))
    stream.run(messages)  # type: ignore[arg-type]

    statuses = _statuses(stream.db, [f"ssrf-{n}" for n in [*urls, "control"]])
    assert {p: s for p, (s, _) in statuses.items()} == {
        **{f"ssrf-{n}": "blocked" for n in urls}, "ssrf-control": "ok"}
    assert canary_server.requests == []
    # The redirects really were followed up to the allowed server's answer.
    assert {f"/{n}" for n in REDIRECTS} <= set(image_server.requests)
    # Other schemes never reach the fetcher: the record parser refuses them.
    reasons = stream.letters({f"ssrf-{n}" for n in SCHEMES})
    assert set(reasons) == {f"ssrf-{n}" for n in SCHEMES}
    assert all("must be an http or https URL" in r for r in reasons.values()), reasons


def test_a_host_that_answers_after_30s_ends_fetch_failed_while_others_flow(
    stream: Stream, synth_images: list[tuple[str, bytes]],
) -> None:
    release = threading.Event()
    answered = threading.Event()
    body = synth_images[0][1]

    def slow(req) -> None:  # type: ignore[no-untyped-def]
        release.wait(30)  # answers after 30 s (or when the test is over)
        answered.set()
        req.send_response(200)
        req.send_header("Content-Type", "image/jpeg")
        req.send_header("Content-Length", str(len(body)))
        req.end_headers()
        req.wfile.write(body)

    server = stream.images
    server.routes["/slow.jpg"] = slow
    messages = [post("slow-host", server.url("/slow.jpg"))]
    for i in range(16):
        messages.append(post(f"flow-{i}", server.add(f"/flow{i}.jpg", synth_images[i][1])))
    try:
        stream.run(messages)
        # Everything is committed while the slow host is still holding its answer: the
        # timeout (--fetch-timeout) ended that record, and it held nothing else up.
        assert not answered.is_set()
    finally:
        release.set()
    statuses = _statuses(stream.db, ["slow-host", *(f"flow-{i}" for i in range(16))])
    assert statuses.pop("slow-host") == ("fetch_failed", "timed out (after 1 tries)")
    assert {s for s, _ in statuses.values()} == {"ok"} and len(statuses) == 16


def test_sixteen_slow_hosts_at_once_end_at_their_deadline_and_every_other_record_lands(
    stream: Stream, synth_images: list[tuple[str, bytes]],
) -> None:
    messages = [post(f"drip-{i}", f"http://{server.hostport}/slow.jpg")
                for i, server in enumerate(stream.slow)]
    for i in range(32):
        body = synth_images[i % len(synth_images)][1]
        messages.append(post(f"beside-drip-{i}", stream.images.add(f"/beside{i}.jpg", body)))
    stream.run(messages)
    ids = [f"drip-{i}" for i in range(SLOW_HOSTS)]
    statuses = _statuses(stream.db, ids + [f"beside-drip-{i}" for i in range(32)])
    for i in range(32):
        assert statuses[f"beside-drip-{i}"] == ("ok", None)
    for post_id in ids:
        assert statuses[post_id] == (
            "fetch_failed", f"exceeded the total timeout of {TOTAL_TIMEOUT}s"), post_id
    # Every slow host saw its fetch hang up (each connection ended) at the deadline.
    held = wait_for(lambda: [d for s in stream.slow for d in s.durations] if sum(
        len(s.durations) for s in stream.slow) == SLOW_HOSTS else None, 60, "every hang-up")
    print(f"\n{SLOW_HOSTS} slow hosts: connections held {min(held):.2f}-{max(held):.2f}s "
          f"(total timeout {TOTAL_TIMEOUT}s)")


CODECS = ("gzip", "snappy", "lz4", "zstd")


def test_batches_compressed_with_every_kafka_codec_are_consumed(
    stream: Stream, synth_images: list[tuple[str, bytes]],
) -> None:
    from kafka import KafkaProducer, codec

    assert codec.has_gzip() and codec.has_snappy() and codec.has_lz4() and codec.has_zstd()
    ids = []
    for name in CODECS:
        producer = KafkaProducer(bootstrap_servers=stream.bootstrap, compression_type=name,
                                 linger_ms=100, acks="all")
        for i in range(4):
            post_id = f"codec-{name}-{i}"
            ids.append(post_id)
            key, value = post(post_id, stream.images.add(f"/{post_id}.jpg",
                                                         synth_images[i][1]))
            producer.send(stream.topic, key=key, value=value)
        producer.flush()
        producer.close()
    wait_lag_zero(stream.bootstrap, stream.group, stream.topic, timeout=300)
    assert stream.worker.alive(), stream.worker.output()[-4000:]
    assert _statuses(stream.db, ids) == {i: ("ok", None) for i in ids}


def test_the_worker_survived_every_input_and_exits_cleanly(stream: Stream) -> None:
    assert stream.worker.alive()
    stream.worker.signal(signal.SIGTERM)
    assert stream.worker.wait(60) == 0, stream.worker.output()[-4000:]
    assert not traceback_from_our_code(stream.worker.output())


# Found by the fuzzing in test_fuzz.py: ingest.records accepted a lone surrogate in a URL, and
# the database write then raised UnicodeEncodeError (not retried, not dead-lettered): the
# worker exited, and crash-looped on the record after every restart.
def test_a_lone_surrogate_in_the_image_url_is_a_dead_letter_not_a_crash(
    bootstrap: str, migrated_db: str, topic: str, tiny_bundle: Path, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], tmp_path: Path,
) -> None:
    value = (b'{"post_id": "poison-url", "source": "test", '
             b'"image_url": "http://' + image_server.host.encode() + b'/a\\ud800.jpg"}')
    good = post("after-poison", image_server.add("/good.jpg", synth_images[0][1]))
    produce(bootstrap, topic, [(b"poison-url", value), good])
    worker = detect(tiny_bundle, bootstrap, migrated_db, topic, f"{topic}-g",
                    tmp_path / "poison.log", "--once", allow=[image_server.host])
    try:
        code = worker.wait(300)
    finally:
        worker.kill()
    assert code == 0, worker.output()[-3000:]
    assert _statuses(migrated_db, ["after-poison", "poison-url"]) == {
        "after-poison": ("ok", None)}
    letters = read_topic(bootstrap, f"{topic}.dlq", limit=1)
    assert [m.key for m in letters] == [b"poison-url"]
    assert dict(letters[0].headers)["error"].startswith(b"image_url: contains a lone surrogate")
