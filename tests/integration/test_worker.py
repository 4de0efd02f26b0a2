"""The detector worker against a real broker, a real Postgres and a local image server."""

from __future__ import annotations

import threading
import urllib.request
from pathlib import Path

import pytest

from tests.support.http_server import ImageServer
from tests.support.model import BRANDS
from tests.support.pipeline import post, produce, read_topic, rows
from workers.fetch import FetchConfig
from workers.services import free_port
from workers.worker import Worker, WorkerConfig

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path):  # type: ignore[no-untyped-def]
    from detector.bundle import load_bundle

    return load_bundle(tiny_bundle, batch_size=8)


def _worker(bootstrap: str, db: str, topic: str, bundle, server: ImageServer,  # type: ignore[no-untyped-def]
            **kw) -> Worker:
    config = WorkerConfig(
        bootstrap=bootstrap, database_url=db, topic=topic, group=f"{topic}-g", batch_size=8,
        max_wait_ms=100, fetch_workers=4, once=True, commit_interval=0.2,
        fetch=FetchConfig(allow_hosts=[server.host], retries=0, read_timeout=3,
                          total_timeout=5),
        **kw,
    )
    return Worker(config, bundle)


def test_every_record_lands_once_with_its_status_and_bad_ones_in_the_dlq(
    bootstrap: str, migrated_db: str, topic: str, bundle, image_server: ImageServer,  # type: ignore[no-untyped-def]
    canary_server: ImageServer, synth_images: list[tuple[str, bytes]],
) -> None:
    good = []
    for i, (rel, body) in enumerate(synth_images[:20]):
        good.append(post(f"p{i}", image_server.add(f"/{rel}", body), caption=f"#acme post {i}"))
    image_server.add("/page.jpg", b"<html>not an image</html>", "text/html")
    image_server.add("/broken.jpg", b"\xff\xd8\xff\xe0garbage", "image/jpeg")
    canary_server.add("/x.jpg", synth_images[0][1])
    broken = [
        post("missing", image_server.url("/nope.jpg")),
        post("html", image_server.url("/page.jpg")),
        post("corrupt", image_server.url("/broken.jpg")),
        post("ssrf", canary_server.url("/x.jpg")),
    ]
    dead = [(b"bad1", b"{not json"), (b"bad2", b'{"post_id": "x"}')]
    produce(bootstrap, topic, good + broken + dead)

    worker = _worker(bootstrap, migrated_db, topic, bundle, image_server, metrics_port=free_port())
    thread = threading.Thread(target=worker.run)
    thread.start()
    scrape = urllib.request.urlopen(f"http://127.0.0.1:{worker.config.metrics_port}/metrics")
    assert scrape.status == 200
    thread.join(timeout=240)
    assert not thread.is_alive()

    statuses = dict(rows(migrated_db, "SELECT post_id, image_status FROM posts"))
    assert len(statuses) == 24
    assert all(statuses[f"p{i}"] == "ok" for i in range(20))
    assert statuses["missing"] == "fetch_failed"
    assert statuses["html"] == "not_image"
    assert statuses["corrupt"] == "decode_failed"
    assert statuses["ssrf"] == "blocked"
    assert canary_server.requests == []

    counts = rows(migrated_db, "SELECT post_id, count(*) FROM detections GROUP BY post_id")
    assert sorted(counts) == sorted((f"p{i}", len(BRANDS)) for i in range(20))
    assert rows(migrated_db, "SELECT count(*), min(dim) FROM embeddings") == [(20, 2048)]
    assert rows(migrated_db, "SELECT count(*) FROM models") == [(1,)]

    letters = read_topic(bootstrap, f"{topic}.dlq", limit=2)
    assert sorted(m.key for m in letters) == [b"bad1", b"bad2"]
    headers = dict(letters[0].headers)
    assert set(headers) >= {"error", "source_topic", "source_partition", "source_offset"}
    assert headers["source_topic"] == topic.encode()
    assert b"not JSON" in headers["error"] or b"required" in headers["error"]
