"""Faults injected into a running pipeline: real worker processes, a real broker, a real
Postgres, a loopback image server. Every scenario ends the same way: each produced record has
exactly one post row and one detection row per brand, and the group's lag is back to zero.

Postgres and Kafka outages use private instances (own data dir, own ports) so stopping them
does not disturb the session's shared services.
"""

from __future__ import annotations

import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy.engine import make_url

from logowatch.services import KafkaBroker, PostgresCluster, free_port, make_private_tmpdir
from tests.reliability.harness import (
    check_complete,
    committed,
    count,
    detect,
    http_status,
    image_posts,
    lag,
    traceback_from_our_code,
    wait_for,
    wait_lag_zero,
)
from tests.support.http_server import ImageServer
from tests.support.pipeline import produce

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

# Secrets handed to the worker in the Postgres outage run; none may appear in its logs.
PG_PASSWORD = "pg-Secret-7f3a9c"
IG_TOKEN = "IGQVJ-secret-token-5b2e"
SASL_PASSWORD = "sasl-Secret-0d4e"


def _ids(records: list[tuple[bytes, bytes]]) -> list[str]:
    return [k.decode() for k, _ in records]


def _assigned(log: str) -> list[set[int]]:
    """Partition sets from each "partitions assigned" line of a worker's log."""
    return [set(map(int, re.findall(r", (\d+)\)", m)))
            for m in re.findall(r"partitions assigned: \[(.*)\]", log)]


def test_a_worker_sigkilled_mid_batch_then_restarted_loses_and_duplicates_nothing(
    tiny_bundle: Path, bootstrap: str, migrated_db: str, topic: str, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], tmp_path: Path,
) -> None:
    n, group = 40, f"{topic}-g"
    records = image_posts(image_server, synth_images, n, "kill", delay=0.5)
    produce(bootstrap, topic, records)
    # Two slow fetches at a time: about 10 s of work, so the kill lands mid-stream however
    # fast the machine is.
    first = detect(tiny_bundle, bootstrap, migrated_db, topic, group, tmp_path / "first.log",
                   "--fetch-workers", "2", "--max-inflight", "4", allow=[image_server.host])
    try:
        done = wait_for(lambda: count(migrated_db, "kill") >= 8 and count(migrated_db, "kill"),
                        240, "the first worker to write 8 posts")
        first.signal(signal.SIGKILL)
        first.wait(30)
    finally:
        first.kill()
    assert done < n, f"the kill came too late to prove anything ({done} of {n} done)"
    assert lag(bootstrap, group, topic) > 0

    second = detect(tiny_bundle, bootstrap, migrated_db, topic, group, tmp_path / "second.log",
                    "--once", allow=[image_server.host])
    try:
        assert second.wait(300) == 0, second.output()[-4000:]
    finally:
        second.kill()
    check_complete(migrated_db, _ids(records))
    assert lag(bootstrap, group, topic) == 0


def test_two_workers_one_killed_the_survivor_takes_its_partitions(
    tiny_bundle: Path, bootstrap: str, migrated_db: str, topic: str, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], tmp_path: Path,
) -> None:
    n, group = 48, f"{topic}-g"
    records = image_posts(image_server, synth_images, n, "pair", delay=0.3)
    workers = [detect(tiny_bundle, bootstrap, migrated_db, topic, group, tmp_path / f"w{i}.log",
                      allow=[image_server.host]) for i in range(2)]
    victim, survivor = workers
    try:
        # Both members hold part of the topic before any record arrives.
        wait_for(lambda: all(any(0 < len(a) < 4 for a in _assigned(w.output()))
                             for w in workers), 240, "both workers to share the partitions")
        produce(bootstrap, topic, records)
        wait_for(lambda: count(migrated_db, "pair") >= 8, 240, "8 posts written")
        victim.signal(signal.SIGKILL)
        victim.wait(30)
        assert count(migrated_db, "pair") < n, "the kill came too late to prove anything"
        # The group notices the dead member (session timeout) and the survivor gets all four.
        wait_for(lambda: any(len(a) == 4 for a in _assigned(survivor.output())), 240,
                 "the survivor to be assigned every partition")
        wait_lag_zero(bootstrap, group, topic)
        check_complete(migrated_db, _ids(records))
        assert survivor.alive()
        survivor.signal(signal.SIGTERM)
        assert survivor.wait(60) == 0, survivor.output()[-4000:]
        assert not traceback_from_our_code(survivor.output())
    finally:
        for w in workers:
            w.kill()


@pytest.fixture
def private_postgres() -> Iterator[PostgresCluster]:
    data_dir = make_private_tmpdir("logowatch-pg-outage-")
    cluster = PostgresCluster(data_dir)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_postgres_down_20s_worker_is_unhealthy_commits_nothing_and_loses_nothing(
    tiny_bundle: Path, bootstrap: str, topic: str, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], tmp_path: Path, private_postgres: PostgresCluster,
) -> None:
    from logowatch import migrate

    owner_url = private_postgres.create_database("outage")
    migrate.upgrade(owner_url)
    # The worker connects as its least-privilege role, with a password in the URL (trust
    # auth ignores it) so the log check below has something to look for.
    worker_url = make_url(owner_url).set(username="logowatch_worker", password=PG_PASSWORD)
    group, port = f"{topic}-g", free_port()
    before = image_posts(image_server, synth_images, 16, "pgA")
    during = image_posts(image_server, synth_images, 16, "pgB")
    produce(bootstrap, topic, before)
    worker = detect(tiny_bundle, bootstrap, worker_url.render_as_string(hide_password=False),
                    topic, group, tmp_path / "worker.log", "--metrics-port", str(port),
                    allow=[image_server.host],
                    env={"INSTAGRAM_ACCESS_TOKEN": IG_TOKEN, "KAFKA_SASL_PASSWORD": SASL_PASSWORD,
                         "KAFKA_SASL_USERNAME": "worker", "LOGOWATCH_LOG_LEVEL": "DEBUG"})
    healthz = f"http://127.0.0.1:{port}/healthz"
    try:
        wait_lag_zero(bootstrap, group, topic)
        assert http_status(healthz) == 200
        settled = committed(bootstrap, group)

        private_postgres.stop()
        stopped = time.monotonic()
        produce(bootstrap, topic, during)
        wait_for(lambda: http_status(healthz) == 503, 120, "/healthz to report the outage")
        assert committed(bootstrap, group) == settled
        time.sleep(max(0.0, 20 - (time.monotonic() - stopped)))  # the outage lasts 20 s
        assert committed(bootstrap, group) == settled, "offsets moved while Postgres was down"
        assert worker.alive() and http_status(healthz) == 503
        private_postgres.start()

        wait_lag_zero(bootstrap, group, topic)
        wait_for(lambda: http_status(healthz) == 200, 60, "/healthz to recover")
        check_complete(owner_url, _ids(before) + _ids(during))
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.output()[-4000:]
    finally:
        worker.kill()
    log = worker.output()
    assert "database write failed, retrying" in log
    assert not traceback_from_our_code(log)
    for secret in (PG_PASSWORD, IG_TOKEN, SASL_PASSWORD):
        assert secret not in log


@pytest.fixture
def private_broker() -> Iterator[KafkaBroker]:
    data_dir = make_private_tmpdir("logowatch-kafka-restart-")
    broker = KafkaBroker(data_dir)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


def test_broker_stopped_and_started_mid_stream_worker_and_producer_recover(
    tiny_bundle: Path, migrated_db: str, image_server: ImageServer,
    synth_images: list[tuple[str, bytes]], tmp_path: Path, private_broker: KafkaBroker,
) -> None:
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    from ingest.producer import RecordProducer
    from ingest.records import parse

    bootstrap, topic = private_broker.bootstrap, "posts-restart"
    group = f"{topic}-g"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=4, replication_factor=1)])
    finally:
        admin.close()
    phases = [image_posts(image_server, synth_images, 12, f"kr{p}") for p in "ABC"]
    producer = RecordProducer(bootstrap, topic)
    worker = detect(tiny_bundle, bootstrap, migrated_db, topic, group, tmp_path / "worker.log",
                    allow=[image_server.host])
    try:
        assert not producer.send_batch([parse(v) for _, v in phases[0]]).failed
        wait_for(lambda: count(migrated_db, "krA") == 12, 240, "phase A to be written")
        wait_lag_zero(bootstrap, group, topic)

        private_broker.stop()
        outcome: dict[str, object] = {}
        sender = threading.Thread(target=lambda: outcome.update(
            delivery=producer.send_batch([parse(v) for _, v in phases[1]])))
        sender.start()  # buffers, then waits for the broker to come back
        time.sleep(5)  # the broker stays down a while with the worker and producer running
        assert sender.is_alive() and worker.alive()
        private_broker.start()
        sender.join(timeout=180)
        assert not sender.is_alive()
        assert not outcome["delivery"].failed  # type: ignore[attr-defined]
        assert not producer.send_batch([parse(v) for _, v in phases[2]]).failed

        wait_lag_zero(bootstrap, group, topic)
        check_complete(migrated_db, [i for p in phases for i in _ids(p)])
        worker.signal(signal.SIGTERM)
        assert worker.wait(60) == 0, worker.output()[-4000:]
        assert not traceback_from_our_code(worker.output())
    finally:
        producer.close(timeout=5)
        worker.kill()
