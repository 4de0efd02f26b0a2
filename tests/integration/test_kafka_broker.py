"""The local runner gives a real Apache Kafka broker: groups, commits and restarts behave."""

from __future__ import annotations

import shutil
import uuid

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.admin import KafkaAdminClient, NewTopic

from logowatch.services import KafkaBroker, make_private_tmpdir

pytestmark = pytest.mark.integration


def _produce(bootstrap: str, topic: str, n: int, start: int = 0) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for i in range(start, start + n):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode())
    producer.flush()
    producer.close()


def _consume(bootstrap: str, topic: str, group: str, limit: int) -> list[bytes]:
    consumer = KafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, enable_auto_commit=False,
        auto_offset_reset="earliest", consumer_timeout_ms=8000,
    )
    values: list[bytes] = []
    for message in consumer:
        values.append(message.value)
        if len(values) == limit:
            break
    consumer.commit()
    consumer.close()
    return values


def test_produce_consume_in_a_group_and_commit(bootstrap: str, topic: str) -> None:
    _produce(bootstrap, topic, 20)
    group = f"g-{uuid.uuid4().hex[:6]}"
    assert sorted(_consume(bootstrap, topic, group, 20)) == sorted(
        f"v{i}".encode() for i in range(20)
    )
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
    committed = sum(
        consumer.committed(TopicPartition(topic, p)) or 0 for p in range(4)
    )
    consumer.close()
    assert committed == 20
    _produce(bootstrap, topic, 5, start=20)
    assert sorted(_consume(bootstrap, topic, group, 5)) == sorted(
        f"v{i}".encode() for i in range(20, 25)
    )


def test_committed_offsets_and_unconsumed_records_survive_a_broker_restart() -> None:
    data_dir = make_private_tmpdir("logowatch-kafka-restart-")
    broker = KafkaBroker(data_dir, partitions=2)
    try:
        broker.start()
        admin = KafkaAdminClient(bootstrap_servers=broker.bootstrap)
        admin.create_topics([NewTopic("posts", num_partitions=2, replication_factor=1)])
        admin.close()
        _produce(broker.bootstrap, "posts", 10)
        assert len(_consume(broker.bootstrap, "posts", "detectors", 10)) == 10
        _produce(broker.bootstrap, "posts", 7, start=10)
        broker.stop()

        broker.start()  # same data dir, same ports
        again = _consume(broker.bootstrap, "posts", "detectors", 7)
        assert sorted(again) == sorted(f"v{i}".encode() for i in range(10, 17))
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)
