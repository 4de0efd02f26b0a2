"""The detector worker against a real broker, a real Postgres and a local image server."""

from __future__ import annotations

import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from logowatch.services import free_port
from tests.support.http_server import ImageServer
from tests.support.model import BRANDS
from tests.support.pipeline import post, produce, read_topic, rows
from workers.fetch import FetchConfig
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
    # one embedding per scored image, all of the bundle's one width (its taps decide it)
    assert rows(migrated_db, "SELECT count(*), count(DISTINCT dim) FROM embeddings") == [(20, 1)]
    # the model row carries the bundle's training time and weights provenance (random here)
    assert rows(migrated_db, "SELECT count(*), min(trained_at) IS NOT NULL, min(weights), "
                "bool_and(random_weights) FROM models") == \
        [(1, True, bundle.metadata["backbone"]["weights"], True)]

    letters = read_topic(bootstrap, f"{topic}.dlq", limit=2)
    assert sorted(m.key for m in letters) == [b"bad1", b"bad2"]
    headers = dict(letters[0].headers)
    assert set(headers) >= {"error", "source_topic", "source_partition", "source_offset"}
    assert headers["source_topic"] == topic.encode()
    assert b"not JSON" in headers["error"] or b"required" in headers["error"]


def _feed(server: ImageServer, images: list[tuple[str, bytes]], prefix: str,
          n: int) -> list[tuple[bytes, bytes]]:
    return [post(f"{prefix}{i}", server.add(f"/{prefix}/{rel}", body))
            for i, (rel, body) in enumerate(images[:n])]


def _run(worker: Worker) -> None:
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(timeout=240)
    assert not thread.is_alive()


def _scores(db: str, prefix: str) -> dict[tuple[str, str], tuple[float, object]]:
    found = rows(db, "SELECT post_id, brand, score, region FROM detections WHERE post_id LIKE :p",
                 p=f"{prefix}%")
    return {(p, b): (s, r) for p, b, s, r in found}


def test_metrics_are_served_over_http_and_the_counters_move(
    bootstrap: str, migrated_db: str, topic: str, bundle, image_server: ImageServer,  # type: ignore[no-untyped-def]
    synth_images: list[tuple[str, bytes]],
) -> None:
    port = free_port()
    worker = _worker(bootstrap, migrated_db, topic, bundle, image_server, metrics_port=port)
    worker.config.once = False
    thread = threading.Thread(target=worker.run)
    thread.start()
    try:
        def scrape(path: str = "/metrics") -> tuple[int, str]:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}") as r:
                    return r.status, r.read().decode()
            except urllib.error.HTTPError as exc:
                return exc.code, exc.read().decode()

        def value(text: str, name: str) -> float:
            return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                       if line.startswith(name) and not line.startswith("#"))

        status, before = scrape()
        assert status == 200 and "logowatch_worker_model_info" in before
        produce(bootstrap, topic, _feed(image_server, synth_images, "m", 8))
        deadline = time.monotonic() + 120
        after = before
        while time.monotonic() < deadline:
            _, after = scrape()
            # the offsets go out at the next commit (about once a second) after the write
            if (value(after, 'logowatch_worker_records_total{outcome="ok"}') >= 8
                    and value(after, "logowatch_worker_offset_commits_total") >= 1):
                break
            time.sleep(0.5)
        assert value(after, 'logowatch_worker_records_total{outcome="ok"}') == 8
        assert value(after, "logowatch_worker_batch_size_count") >= 1
        assert value(after, 'logowatch_worker_stage_seconds_count{stage="inference"}') >= 1
        assert value(after, "logowatch_worker_end_to_end_seconds_count") == 8
        assert value(after, "logowatch_worker_offset_commits_total") >= 1
        assert scrape("/healthz")[0] == 200
        assert scrape("/readyz")[0] == 200
    finally:
        worker.request_stop()
        thread.join(timeout=60)


def test_tiles_keep_the_best_score_per_brand_and_its_region(
    bootstrap: str, migrated_db: str, bundle, image_server: ImageServer,  # type: ignore[no-untyped-def]
    synth_images: list[tuple[str, bytes]],
) -> None:
    from kafka.admin import KafkaAdminClient, NewTopic

    from detector.preprocess import TileSpec

    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(t, num_partitions=2, replication_factor=1)
                         for t in ("whole-only", "with-tiles")])
    admin.close()
    produce(bootstrap, "whole-only", _feed(image_server, synth_images, "w", 10))
    produce(bootstrap, "with-tiles", _feed(image_server, synth_images, "t", 10))
    _run(_worker(bootstrap, migrated_db, "whole-only", bundle, image_server))
    _run(_worker(bootstrap, migrated_db, "with-tiles", bundle, image_server,
                 tiles=TileSpec(grid=2, overlap=0.25)))
    whole, tiled = _scores(migrated_db, "w"), _scores(migrated_db, "t")
    assert len(whole) == len(tiled) == 10 * len(BRANDS)
    regions = 0
    for (post_id, brand), (score, region) in tiled.items():
        whole_score, whole_region = whole[("w" + post_id[1:], brand)]
        assert whole_region is None
        assert score >= whole_score - 1e-6  # the whole image is one of the candidates
        if region is not None:
            regions += 1
            x0, y0, x1, y1 = region
            assert 0 <= x0 < x1 and 0 <= y0 < y1
    assert regions > 0


def test_rescore_of_stored_embeddings_reproduces_the_live_scores(
    bootstrap: str, migrated_db: str, topic: str, bundle, image_server: ImageServer,  # type: ignore[no-untyped-def]
    synth_images: list[tuple[str, bytes]], tiny_bundle: Path,
) -> None:
    from detector.bundle import load_bundle
    from logowatch.rescore import rescore

    produce(bootstrap, topic, _feed(image_server, synth_images, "r", 12))
    _run(_worker(bootstrap, migrated_db, topic, bundle, image_server))
    live = _scores(migrated_db, "r")
    rows(migrated_db, "SELECT 1")  # connection sanity
    heads_only = load_bundle(tiny_bundle, embed=False)
    done, _ = rescore(migrated_db, heads_only, brands=heads_only.brands, progress=False)
    assert done >= 12
    again = _scores(migrated_db, "r")
    assert again.keys() == live.keys()
    for key, (score, _) in live.items():
        assert abs(again[key][0] - score) < 1e-6, key
