"""Kafka, Postgres, topics, records and result timing for the end-to-end sections.

Latency and throughput are read back from Postgres itself: with ``track_commit_timestamp`` on,
``pg_xact_commit_timestamp(xmin)`` is the exact commit time of the transaction that stored a
post, and each record carries its send time in ``extra.sent_at``. That measures "Kafka send →
database commit" without instrumenting the worker or trusting its histogram buckets. A server
the harness did not start may have the setting off; then the transaction's start time
(``ingested_at``) stands in, and the JSON says which clock was used.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np


@dataclass
class Services:
    """Starts what is not given: a KRaft broker and a private Postgres with commit times on."""

    workdir: Path
    bootstrap: str | None = None
    database_url: str | None = None
    partitions: int = 4
    commit_timestamps: bool = False
    _broker: Any = None
    _cluster: Any = None
    started_s: dict[str, float] = field(default_factory=dict)

    def start(self) -> None:
        from logowatch import migrate
        from logowatch.services import KafkaBroker, PostgresCluster, make_private_tmpdir

        if self.bootstrap is None:
            t = time.perf_counter()
            self._broker = KafkaBroker(make_private_tmpdir("bench-kafka-"),
                                       partitions=self.partitions)
            self._broker.start()
            self.bootstrap = self._broker.bootstrap
            self.started_s["kafka"] = round(time.perf_counter() - t, 1)
        if self.database_url is None:
            t = time.perf_counter()
            self._cluster = PostgresCluster(make_private_tmpdir("bench-pg-"))
            self._cluster.start()
            self._sql("ALTER SYSTEM SET track_commit_timestamp = on", admin=True)
            self._cluster.stop()  # the setting needs a restart
            self._cluster.start()
            self.database_url = self._cluster.create_database("bench")
            self.started_s["postgres"] = round(time.perf_counter() - t, 1)
        migrate.upgrade(self.database_url)
        self.commit_timestamps = self._sql("SHOW track_commit_timestamp")[0][0] == "on"

    def _sql(self, sql: str, *, admin: bool = False, **params: Any) -> list[tuple[Any, ...]]:
        import psycopg2

        if admin:
            conn = psycopg2.connect(host="127.0.0.1", port=self._cluster.port, user="postgres",
                                    dbname="postgres")
        else:
            conn = psycopg2.connect(self.database_url.replace("+psycopg2", ""))  # type: ignore[union-attr]
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params or None)
                return list(cur.fetchall()) if cur.description else []
        finally:
            conn.close()

    def stop(self) -> None:
        if self._broker is not None:
            self._broker.stop()
            shutil.rmtree(self._broker.data_dir, ignore_errors=True)
        if self._cluster is not None:
            self._cluster.stop()
            shutil.rmtree(self._cluster.data_dir, ignore_errors=True)

    def postgres_version(self) -> str:
        return str(self._sql("SHOW server_version")[0][0])

    def create_topic(self, partitions: int | None = None) -> str:
        from kafka import KafkaAdminClient
        from kafka.admin import NewTopic

        name = f"bench-{uuid.uuid4().hex[:8]}"
        count = partitions or self.partitions
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            admin.create_topics([NewTopic(name, count, 1)])
        finally:
            admin.close()
        self._wait_for_leaders(name, count)
        return name

    def _wait_for_leaders(self, topic: str, count: int, timeout: float = 30.0) -> None:
        """Creation returns before every partition has a leader; a consumer that joins in
        between is assigned nothing and waits for its next metadata refresh (5 minutes)."""
        from kafka import KafkaConsumer

        consumer = KafkaConsumer(bootstrap_servers=self.bootstrap)
        try:
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline:
                if len(consumer.partitions_for_topic(topic) or ()) == count:
                    return
                time.sleep(0.2)
        finally:
            consumer.close()
        raise RuntimeError(f"topic {topic} has no leaders for its {count} partitions")

    # -- records in, results out ----------------------------------------------------------
    def produce(self, topic: str, prefix: str, urls: list[str], *,
                rate: float | None = None) -> float:
        """Send one record per URL; at `rate` records/s when given (open loop), else at once.

        Returns the time the first record was sent.
        """
        from kafka import KafkaProducer

        producer = KafkaProducer(bootstrap_servers=self.bootstrap, acks="all", linger_ms=0
                                 if rate else 5)
        first = time.time()
        try:
            for i, url in enumerate(urls):
                if rate:
                    time.sleep(max(0.0, first + i / rate - time.time()))
                body = {"post_id": f"{prefix}-{i:06d}", "source": "bench", "image_url": url,
                        "caption": f"bench post {i} #weekend", "author": f"user{i % 50}",
                        "posted_at": "2024-05-01T12:00:00Z", "extra": {"sent_at": time.time()}}
                producer.send(topic, key=body["post_id"].encode(),
                              value=json.dumps(body).encode())
                if rate:
                    producer.flush()
            producer.flush()
        finally:
            producer.close()
        return first

    def count(self, prefix: str) -> int:
        return int(self._sql("SELECT count(*) FROM posts WHERE post_id LIKE %(p)s",
                             p=f"{prefix}-%")[0][0])

    def wait_for(self, prefix: str, n: int, timeout: float,
                 alive: Any = None) -> int:
        """Poll until `n` posts of `prefix` are stored, the timeout passes or a worker died."""
        deadline = time.monotonic() + timeout
        got = self.count(prefix)
        while got < n and time.monotonic() < deadline:
            if alive is not None and not alive():
                break
            time.sleep(0.25)
            got = self.count(prefix)
        return got

    def timings(self, prefix: str) -> tuple[np.ndarray, np.ndarray]:
        """(commit time, send time) per stored post of `prefix`, epoch seconds."""
        clock = ("pg_xact_commit_timestamp(xmin)" if self.commit_timestamps
                 else "ingested_at")
        rows = self._sql(f"SELECT extract(epoch FROM {clock})::float8, "
                         "(extra->>'sent_at')::float8 FROM posts WHERE post_id LIKE %(p)s",
                         p=f"{prefix}-%")
        arr = np.array(rows, np.float64).reshape(-1, 2)
        return arr[:, 0], arr[:, 1]

    def image_statuses(self, prefix: str) -> dict[str, int]:
        rows = self._sql("SELECT image_status, count(*) FROM posts WHERE post_id LIKE %(p)s "
                         "GROUP BY 1", p=f"{prefix}-%")
        return {str(s): int(n) for s, n in rows}


def percentiles(values: np.ndarray) -> dict[str, float | None]:
    if len(values) == 0:
        return {"p50": None, "p95": None, "p99": None, "max": None}
    p50, p95, p99 = np.percentile(values, [50, 95, 99])
    return {"p50": round(float(p50), 3), "p95": round(float(p95), 3),
            "p99": round(float(p99), 3), "max": round(float(values.max()), 3)}


@contextlib.contextmanager
def running(services: Services):  # type: ignore[no-untyped-def]
    services.start()
    try:
        yield services
    finally:
        services.stop()
