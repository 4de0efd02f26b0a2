"""Soak: one worker process through many records. After warm-up its resident memory grows by
less than 10% and its open file descriptors stay flat.

CI runs ``LOGOWATCH_SOAK_RECORDS`` (default 1,500) records; the issue's full soak is
``LOGOWATCH_SOAK_RECORDS=20000 pytest tests/reliability/test_soak.py``. With
``LOGOWATCH_SOAK_LOGO=1`` the worker also matches one brand from its logo file
(``bench.data.with_bench_logo``), whose template cache must stay bounded too.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import psutil
import pytest
from kafka import KafkaProducer

from tests.reliability.harness import count, detect, lag, wait_for, wait_lag_zero
from tests.support.http_server import ImageServer
from tests.support.pipeline import event_loop_warnings, post

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

RECORDS = int(os.environ.get("LOGOWATCH_SOAK_RECORDS", "1500"))
WARM_UP = max(200, RECORDS // 5)
LOGO = os.environ.get("LOGOWATCH_SOAK_LOGO") == "1"


def test_soak_memory_and_file_descriptors_stay_flat_after_warm_up(
    tiny_bundle: Path, bootstrap: str, migrated_db: str, topic: str, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], tmp_path: Path,
) -> None:
    urls = [image_server.add(f"/soak/{i}.jpg", body) for i, (_, body) in enumerate(synth_images)]
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=20)
    for i in range(RECORDS):
        key, value = post(f"soak-{i}", f"{urls[i % len(urls)]}?n={i}", caption=f"#acme {i}")
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()

    group = f"{topic}-g"
    if LOGO:
        from bench.data import with_bench_logo

        tiny_bundle = with_bench_logo(tiny_bundle, tmp_path / "with-logo",
                                      [body for _, body in synth_images[:40]])
    worker = detect(tiny_bundle, bootstrap, migrated_db, topic, group, tmp_path / "soak.log",
                    "--batch-size", "32", "--fetch-workers", "8", allow=[image_server.host])
    try:
        proc = psutil.Process(worker.pid)
        wait_for(lambda: count(migrated_db, "soak") >= WARM_UP, 600, f"{WARM_UP} warm-up posts",
                 interval=1.0)
        warm_rss, warm_fds = proc.memory_info().rss, proc.num_fds()
        samples: list[tuple[int, int, int]] = []

        def finished() -> bool:
            samples.append((count(migrated_db, "soak"), proc.memory_info().rss,
                            proc.num_fds()))
            return samples[-1][0] >= RECORDS and lag(bootstrap, group, topic) == 0

        wait_for(finished, 60 + RECORDS * 0.2, f"all {RECORDS} soak posts", interval=2.0)
        wait_lag_zero(bootstrap, group, topic)
        end_rss, end_fds = proc.memory_info().rss, proc.num_fds()
        peak_fds = max(f for _, _, f in samples)
        print(f"soak {RECORDS}: rss {warm_rss / 2**20:.0f} -> {end_rss / 2**20:.0f} MiB, "
              f"fds {warm_fds} -> {end_fds} (peak {peak_fds})")
        assert end_rss < warm_rss * 1.10, (warm_rss, end_rss)
        assert end_fds <= warm_fds + 4, (warm_fds, end_fds, samples[-5:])
        assert worker.alive()
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.output()[-4000:]
        assert event_loop_warnings(worker.output()) == []
    finally:
        worker.kill()
    assert count(migrated_db, "soak") == RECORDS
