"""No per-record exception ends the worker: an exception the step does not expect is injected
into each stage (parse, fetch, decode, infer, write) for chosen records, against a real broker,
Postgres and image server. Each poisoned record ends as a status (``internal_error``) or a dead
letter whose reason names the exception type, it is counted in
``logowatch_worker_unexpected_errors_total{stage}``, the offsets move on, and every other
record lands as usual. A model that fails for every record trips the worker instead.
"""

from __future__ import annotations

import io
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.reliability.harness import wait_lag_zero
from tests.support.http_server import ImageServer
from tests.support.model import BRANDS
from tests.support.pipeline import post, produce, read_topic, rows
from workers import stages
from workers.fetch import FetchConfig, Fetcher
from workers.worker import Worker, WorkerConfig

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

POISON_COLOUR = (1, 2, 3)


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path):  # type: ignore[no-untyped-def]
    from detector.bundle import load_bundle

    return load_bundle(tiny_bundle, batch_size=8)


def _worker(bootstrap: str, db: str, topic: str, bundle: Any, server: ImageServer,
            **kw: Any) -> Worker:
    config = WorkerConfig(
        bootstrap=bootstrap, database_url=db, topic=topic, group=f"{topic}-g", batch_size=8,
        max_wait_ms=100, fetch_workers=4, once=True, commit_interval=0.2,
        fetch=FetchConfig(allow_hosts=[server.host], retries=0, read_timeout=3,
                          total_timeout=5), **kw,
    )
    return Worker(config, bundle)


def _run(worker: Worker) -> BaseException | None:
    failure: list[BaseException] = []

    def target() -> None:
        try:
            worker.run()
        except BaseException as exc:
            failure.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive()
    return failure[0] if failure else None


def _solid_jpeg(colour: tuple[int, int, int]) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(out, format="PNG")  # lossless: the colour survives
    return out.getvalue()


def _counter(worker: Worker, stage: str) -> float:
    return worker.metrics.unexpected.labels(stage=stage)._value.get()


def test_an_unexpected_exception_in_any_stage_is_contained_to_its_record(
    bootstrap: str, migrated_db: str, topic: str, bundle: Any, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    real_parse, real_fetch, real_prepare = stages.parse, Fetcher.fetch, stages.prepare
    real_embed = bundle.embed

    def parse(value: Any) -> Any:
        if value and b"poison-parse" in value:
            raise ZeroDivisionError("injected into parse")
        return real_parse(value)

    def fetch(self: Fetcher, url: str) -> bytes:
        if "poison-fetch" in url:
            raise KeyError("injected into fetch")
        return real_fetch(self, url)

    def prepare(data: bytes, *args: Any, **kwargs: Any) -> Any:
        if data.endswith(b"POISON-DECODE"):
            raise RuntimeError("injected into decode")
        return real_prepare(data, *args, **kwargs)

    def embed(pixels: np.ndarray) -> np.ndarray:
        if any((tile == POISON_COLOUR).all() for tile in pixels):
            raise ArithmeticError("injected into the model")
        return real_embed(pixels)

    monkeypatch.setattr(stages, "parse", parse)
    monkeypatch.setattr(Fetcher, "fetch", fetch)
    monkeypatch.setattr(stages, "prepare", prepare)
    monkeypatch.setattr(bundle, "embed", embed)

    body = synth_images[0][1]
    good = [post(f"good-{i}", image_server.add(f"/good{i}.jpg", synth_images[i][1]))
            for i in range(12)]
    poison = [
        post("poison-parse", image_server.add("/pp.jpg", body)),
        post("poison-fetch", image_server.add("/poison-fetch.jpg", body)),
        post("poison-decode", image_server.add("/pd.jpg", body + b"POISON-DECODE")),
        post("poison-infer", image_server.add("/pi.png", _solid_jpeg(POISON_COLOUR),
                                              "image/png")),
        post("poison-write-rows", image_server.add("/pw.jpg", body)),
        post("poison-write-any", image_server.add("/pa.jpg", body)),
    ]
    produce(bootstrap, topic, good[:6] + poison + good[6:])

    worker = _worker(bootstrap, migrated_db, topic, bundle, image_server)
    real_write = worker.writer.write

    def write(posts: list[dict[str, Any]], *args: Any) -> None:
        for p in posts:
            if p["post_id"] == "poison-write-any" or (
                    p["post_id"] == "poison-write-rows" and p["image_status"] == "ok"):
                raise LookupError("injected into the database write")
        real_write(posts, *args)

    monkeypatch.setattr(worker.writer, "write", write)
    assert _run(worker) is None  # --once: it finished, nothing escaped
    wait_lag_zero(bootstrap, f"{topic}-g", topic)

    found = {p: (s, e) for p, s, e in rows(
        migrated_db, "SELECT post_id, image_status, error FROM posts")}
    for i in range(12):
        assert found[f"good-{i}"] == ("ok", None)
    expected = {"poison-fetch": "fetch: unexpected KeyError",
                "poison-decode": "decode: unexpected RuntimeError",
                "poison-infer": "infer: unexpected ArithmeticError",
                "poison-write-rows": "write: unexpected LookupError"}
    for post_id, reason in expected.items():
        status, error = found[post_id]
        assert status == "internal_error" and error.startswith(reason), (post_id, error)
    assert "poison-parse" not in found and "poison-write-any" not in found
    letters = {m.key: dict(m.headers)["error"].decode()
               for m in read_topic(bootstrap, f"{topic}.dlq", limit=2)}
    assert letters[b"poison-parse"].startswith("record: parse: unexpected ZeroDivisionError")
    assert letters[b"poison-write-any"].startswith("write: unexpected LookupError")

    detected = dict(rows(migrated_db, "SELECT post_id, count(*) FROM detections "
                                      "GROUP BY post_id"))
    assert detected == {f"good-{i}": len(BRANDS) for i in range(12)}
    for stage in ("parse", "fetch", "decode", "infer", "write"):
        assert _counter(worker, stage) >= 1, stage


def test_a_model_that_fails_for_every_record_stops_the_worker_with_one_line(
    bootstrap: str, migrated_db: str, topic: str, bundle: Any, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], monkeypatch: pytest.MonkeyPatch,
) -> None:
    def broken(pixels: np.ndarray) -> np.ndarray:
        raise MemoryError("the accelerator is gone")

    monkeypatch.setattr(bundle, "embed", broken)
    produce(bootstrap, topic, [post(f"broken-{i}", image_server.add(f"/b{i}.jpg", body))
                               for i, (_, body) in enumerate(synth_images[:24])])
    worker = _worker(bootstrap, migrated_db, topic, bundle, image_server, dlq_window=10)
    failure = _run(worker)
    assert isinstance(failure, stages.TooManyFailures), failure
    assert "failed with an unexpected error" in str(failure)
    assert "MemoryError" in str(failure)


def test_lag_gauges_of_revoked_partitions_are_dropped(
    bootstrap: str, migrated_db: str, topic: str, bundle: Any, image_server: ImageServer,
) -> None:
    worker = _worker(bootstrap, migrated_db, topic, bundle, image_server)
    try:
        for p in range(4):
            worker.metrics.lag.labels(topic=topic, partition=str(p)).set(5)
        worker._release({(topic, 0), (topic, 1)}, [])  # what the main thread does on a revoke
        left = {s.labels["partition"] for m in worker.metrics.lag.collect() for s in m.samples}
        assert left == {"2", "3"}
    finally:
        worker.shutdown()
