"""The producer keys by post id, counts what Kafka acknowledged, and surfaces what it refused."""

from __future__ import annotations

import uuid

import pytest
from kafka import KafkaAdminClient, KafkaConsumer
from kafka.admin import NewTopic

from ingest.producer import produce_records
from ingest.records import build

pytestmark = pytest.mark.integration


def test_produce_records_keys_by_post_id_so_a_post_keeps_its_partition(
        bootstrap: str, topic: str) -> None:
    records = [build(post_id=f"p{i}", source="demo", image_url=f"https://x.example/{i}.jpg")
               for i in range(30)]
    assert produce_records(records, bootstrap, topic).produced == 30
    assert produce_records(records[:10], bootstrap, topic).produced == 10  # again
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=2000, group_id=None)
    partitions: dict[bytes, set[int]] = {}
    for message in consumer:
        partitions.setdefault(message.key, set()).add(message.partition)
    consumer.close()
    assert len(partitions) == 30
    assert all(len(p) == 1 for p in partitions.values())
    assert len({p for ps in partitions.values() for p in ps}) > 1  # spread over partitions


def test_records_the_broker_refuses_are_counted_as_failed_not_lost(bootstrap: str) -> None:
    name = f"small-{uuid.uuid4().hex[:8]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    admin.create_topics([NewTopic(name, 1, 1, topic_configs={"max.message.bytes": "2000"})])
    admin.close()
    small = build(post_id="ok", source="demo", image_url="https://x.example/ok.jpg")
    big = build(post_id="big", source="demo", image_url="https://x.example/big.jpg",
                extra={"blob": "x" * 8000})
    options = {"compression": "none", "linger_ms": 0, "delivery_timeout_ms": 10_000}
    # Separate calls: in one batch the broker would refuse the small record along with the big.
    assert produce_records([small], bootstrap, name, **options).produced == 1
    counts = produce_records([big], bootstrap, name, **options)
    assert counts.produced == 0 and counts.failed == 1
    assert counts.errors[0].startswith("big:") and "TooLarge" in counts.errors[0]
