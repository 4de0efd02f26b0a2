"""The worker's Kafka seam (``workers.consumer.KafkaClient``) against the real broker."""

from __future__ import annotations

import time

import pytest
from kafka import KafkaProducer
from kafka.admin import KafkaAdminClient, NewPartitions

from workers.consumer import KafkaClient

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, keys: range) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in keys:
        producer.send(topic, key=str(i).encode(), value=b"x")
    producer.flush()
    producer.close()


def _poll_until(client: KafkaClient, seen: set[bytes | None], n: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while len(seen) < n and time.monotonic() < deadline:
        # one-millisecond polls: a join always outlasts several of them (bug 9's window; the
        # worker's 50-100 ms polls are as short next to a join on a loaded machine)
        seen.update(r.key for r in client.poll(timeout_ms=1))


def test_partitions_added_to_a_live_topic_are_picked_up_by_short_polls(
    bootstrap: str, topic: str,
) -> None:
    """Scaling out adds partitions. The metadata change makes the group's leader rejoin, and a
    ``poll`` that timed out between the JoinGroup and SyncGroup answers used to leave it
    rebalancing forever with kafka-python 3.0.12 (bug 9 in docs/reliability.md: without the
    seam's fix no record arrived after the partitions were added, in 5 of 5 runs)."""
    _produce(bootstrap, topic, range(10))
    client = KafkaClient(bootstrap_servers=bootstrap, group_id=f"{topic}-g",
                         enable_auto_commit=False, auto_offset_reset="earliest",
                         metadata_max_age_ms=1000)
    try:
        while not client.partitions_for(topic):
            time.sleep(0.2)
        client.subscribe(topic)
        seen: set[bytes | None] = set()
        _poll_until(client, seen, 10, timeout=60)
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        try:
            admin.create_partitions({topic: NewPartitions(total_count=6)})
        finally:
            admin.close()
        _produce(bootstrap, topic, range(10, 40))
        _poll_until(client, seen, 40, timeout=60)
        assert seen == {str(i).encode() for i in range(40)}
        assert client.assignment() == {(topic, p) for p in range(6)}
    finally:
        client.close()
