"""Getting records onto the ``posts`` topic without losing or silently dropping any.

``acks=all`` with idempotence means a broker retry never writes a record twice within one
producer session; the key is the post id so a post always lands on the same partition (the
worker's ordering and upserts rely on that). Every send's future is checked after the flush, so
a record Kafka did not take is counted and reported, never assumed delivered.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ingest.errors import IngestError
from ingest.records import PostRecord

log = logging.getLogger(__name__)


@dataclass
class Delivery:
    """What one flush achieved: ids Kafka acknowledged, and ids it did not (with why)."""

    delivered: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


@dataclass
class ProduceCounts:
    produced: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)


KAFKA_SECURITY_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "security_protocol",
    "KAFKA_SASL_MECHANISM": "sasl_mechanism",
    "KAFKA_SASL_USERNAME": "sasl_plain_username",
    "KAFKA_SASL_PASSWORD": "sasl_plain_password",
    "KAFKA_SSL_CAFILE": "ssl_cafile",
    "KAFKA_SSL_CERTFILE": "ssl_certfile",
    "KAFKA_SSL_KEYFILE": "ssl_keyfile",
}


def kafka_security_from_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """Kafka client security settings from the environment (never flags, so passwords stay
    out of process listings and logs); every logowatch Kafka client passes them through."""
    env = os.environ if environ is None else environ
    return {opt: value for var, opt in KAFKA_SECURITY_ENV.items() if (value := env.get(var))}


class RecordProducer:
    """A KafkaProducer configured for safe delivery of post records, sent batch by batch."""

    def __init__(
        self,
        bootstrap: str,
        topic: str,
        *,
        compression: str = "auto",
        linger_ms: int = 20,
        max_block_ms: int = 15_000,
        delivery_timeout_ms: int = 120_000,
        flush_timeout: float = 150.0,
        client_id: str = "logowatch-ingest",
        **extra: Any,
    ) -> None:
        from kafka import KafkaProducer
        from kafka.errors import KafkaError

        self.topic = topic
        self.flush_timeout = flush_timeout
        codec = "zstd" if compression == "auto" else compression  # every codec is installed
        try:
            self._producer = KafkaProducer(
                bootstrap_servers=bootstrap.split(","),
                client_id=client_id,
                acks="all",
                enable_idempotence=True,
                retries=2**31 - 1,  # bounded in time by delivery_timeout_ms instead
                delivery_timeout_ms=delivery_timeout_ms,
                request_timeout_ms=min(30_000, delivery_timeout_ms),
                compression_type=None if codec == "none" else codec,
                linger_ms=linger_ms,
                max_block_ms=max_block_ms,
                bootstrap_timeout_ms=max_block_ms,
                **extra,
            )
        except KafkaError as exc:
            raise IngestError(f"cannot reach Kafka at {bootstrap}: {exc}") from None
        self.compression = codec

    def send_batch(self, records: Iterable[PostRecord]) -> Delivery:
        """Send every record, flush, and report per record whether Kafka acknowledged it."""
        from kafka.errors import KafkaError, KafkaTimeoutError

        delivery = Delivery()
        futures = []
        for record in records:
            try:
                futures.append((record.post_id,
                                self._producer.send(self.topic, key=record.key,
                                                    value=record.to_bytes())))
            except KafkaTimeoutError as exc:
                # The broker cannot be reached (no metadata within max_block_ms).
                delivery.failed[record.post_id] = f"not sent: {exc}"
            except KafkaError as exc:
                delivery.failed[record.post_id] = f"not sent: {exc}"
        try:
            self._producer.flush(timeout=self.flush_timeout)
        except KafkaTimeoutError:
            log.error("Kafka did not acknowledge every record within %.0f s", self.flush_timeout)
        for post_id, future in futures:
            if future.succeeded():
                delivery.delivered.append(post_id)
            else:
                exc = future.exception
                delivery.failed[post_id] = str(exc) if future.is_done else "not acknowledged"
        for post_id, reason in list(delivery.failed.items())[:5]:
            log.error("record %s was not delivered: %s", post_id, reason)
        return delivery

    def close(self, timeout: float = 30.0) -> None:
        """Flush what is buffered and close; safe to call twice."""
        try:
            self._producer.close(timeout=timeout)
        except Exception as exc:  # closing must never mask the real outcome
            log.warning("closing the Kafka producer: %s", exc)

    def __enter__(self) -> RecordProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def produce_records(
    records: Iterable[PostRecord], bootstrap: str, topic: str, **options: Any
) -> ProduceCounts:
    """Produce ``records`` to ``topic`` (no checkpoints, no dedup) and count the outcome.

    The entry point for demos and scripts that already hold records; sources with checkpoints
    go through :mod:`ingest.pipeline` instead.
    """
    counts = ProduceCounts()
    with RecordProducer(bootstrap, topic, **options) as producer:
        delivery = producer.send_batch(records)
    counts.produced = len(delivery.delivered)
    counts.failed = len(delivery.failed)
    counts.errors = [f"{pid}: {why}" for pid, why in delivery.failed.items()]
    return counts
