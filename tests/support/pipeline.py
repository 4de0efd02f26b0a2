"""Helpers for end-to-end worker tests: feed records into Kafka, read results from Postgres."""

from __future__ import annotations

import json
from typing import Any

from kafka import KafkaConsumer, KafkaProducer
from sqlalchemy import create_engine, text


def produce(bootstrap: str, topic: str, values: list[tuple[bytes, bytes]]) -> None:
    producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all")
    for key, value in values:
        producer.send(topic, key=key, value=value)
    producer.flush()
    producer.close()


def post(post_id: str, url: str, caption: str = "", author: str = "someone") -> tuple[bytes, bytes]:
    body = {"post_id": post_id, "source": "test", "image_url": url, "caption": caption,
            "author": author, "posted_at": "2024-05-01T12:00:00Z"}
    return post_id.encode(), json.dumps(body).encode()


def rows(database_url: str, sql: str, **params: Any) -> list[tuple[Any, ...]]:
    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text(sql), params)]
    finally:
        engine.dispose()


def read_topic(bootstrap: str, topic: str, limit: int, timeout_ms: int = 8000) -> list[Any]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=timeout_ms, group_id=None)
    out = []
    for message in consumer:
        out.append(message)
        if len(out) >= limit:
            break
    consumer.close()
    return out


def event_loop_warnings(log: str) -> list[str]:
    """kafka-python 3's warnings that something blocked its IO thread (a slow rebalance
    listener, a task over its threshold); a worker's log must never have one."""
    return [line for line in log.splitlines()
            if "blocking the event loop" in line or "Sync listeners block" in line]
