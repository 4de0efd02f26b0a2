"""The worker's seam to Kafka: the few consumer calls it makes, in its own types.

``KafkaClient`` adapts kafka-python 3; the step tests drive the same ``Worker`` through an
in-memory consumer (``tests/support/memory_consumer.py``), as Arroyo's tests use its
LocalBroker. Rebalances arrive as events: kafka-python calls listeners on its IO thread, and
anything slow there blocks heartbeats and the join itself, so the listener only records what
happened and the main thread acts on it after ``poll`` returns.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

Partition = tuple[str, int]
BOOTSTRAP_MS = 15_000  # an unreachable broker is an error (one line) after this long


class ConsumerError(Exception):
    """The broker did not answer a metadata or offset request in time."""


class CommitRefused(ConsumerError):
    """The commit did not go through (the group is rebalancing, the coordinator moved or did
    not answer): it is tried again later, or the partitions' next owner redoes the work."""


COMMIT_MS = 10_000  # a commit that takes longer is given up and tried again


@dataclass(frozen=True)
class Record:
    partition: Partition
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None


@dataclass
class Rebalance:
    """Revoked and newly assigned partitions since the last ``take``; ``assigned`` is the
    whole new assignment, or None when none arrived."""

    revoked: set[Partition] = field(default_factory=set)
    assigned: set[Partition] | None = None


class RebalanceEvents:
    """Written by the client's IO thread, read by the main thread."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending = Rebalance()

    def revoked(self, partitions: set[Partition]) -> None:
        with self._lock:
            self._pending.revoked |= partitions

    def assigned(self, partitions: set[Partition]) -> None:
        with self._lock:
            self._pending.assigned = set(partitions)

    def take(self) -> Rebalance:
        with self._lock:
            taken, self._pending = self._pending, Rebalance()
        return taken


class Consumer(Protocol):
    events: RebalanceEvents

    def subscribe(self, topic: str) -> None: ...
    def partitions_for(self, topic: str) -> set[int]: ...
    def poll(self, timeout_ms: int) -> list[Record]: ...
    def assignment(self) -> set[Partition]: ...
    def pause(self, partitions: set[Partition]) -> None: ...
    def resume(self, partitions: set[Partition]) -> None: ...
    def seek(self, partition: Partition, offset: int) -> None: ...
    def commit(self, offsets: dict[Partition, int]) -> None:
        from kafka.errors import KafkaError
        from kafka.structs import OffsetAndMetadata, TopicPartition

        try:
            self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                   for (t, p), o in offsets.items()}, timeout_ms=COMMIT_MS)
        except KafkaError as exc:
            raise CommitRefused(f"{type(exc).__name__}: {exc}") from exc

    def committed(self, partition: Partition) -> int | None: ...
    def end_offsets(self, partitions: set[Partition]) -> dict[Partition, int]: ...
    def close(self) -> None: ...


class KafkaClient:
    """kafka-python 3's ``KafkaConsumer`` behind the seam."""

    def __init__(self, **options: Any) -> None:
        from kafka import KafkaConsumer

        self.events = RebalanceEvents()
        self._consumer = KafkaConsumer(**options)
        _await_every_join(self._consumer)

    @classmethod
    def for_worker(cls, config: Any) -> KafkaClient:
        """The detector's consumer: manual commits, earliest, bounded bootstrap."""
        with _unreachable_is_an_error(config.bootstrap):
            return cls(bootstrap_servers=config.bootstrap, group_id=config.group,
                       enable_auto_commit=False, auto_offset_reset="earliest",
                       max_poll_records=max(config.batch_size, 64),
                       max_poll_interval_ms=300_000, session_timeout_ms=45_000,
                       bootstrap_timeout_ms=BOOTSTRAP_MS, **config.kafka_options)

    @property
    def config(self) -> dict[str, Any]:
        """kafka-python's settings of the client (security options included)."""
        return self._consumer.config  # type: ignore[no-any-return]

    def subscribe(self, topic: str) -> None:
        from kafka import ConsumerRebalanceListener

        events = self.events

        class Listener(ConsumerRebalanceListener):  # type: ignore[misc]
            def on_partitions_revoked(self, revoked: Any) -> None:
                events.revoked({(tp.topic, tp.partition) for tp in revoked})

            def on_partitions_assigned(self, assigned: Any) -> None:
                events.assigned({(tp.topic, tp.partition) for tp in assigned})

            def on_partitions_lost(self, lost: Any) -> None:
                self.on_partitions_revoked(lost)

        self._consumer.subscribe([topic], listener=Listener())

    def partitions_for(self, topic: str) -> set[int]:
        return set(self._consumer.partitions_for_topic(topic) or ())

    def poll(self, timeout_ms: int) -> list[Record]:
        batches = self._consumer.poll(timeout_ms=timeout_ms)
        return [Record((tp.topic, tp.partition), r.offset, r.timestamp, r.key, r.value)
                for tp, records in batches.items() for r in records]

    def assignment(self) -> set[Partition]:
        return {(tp.topic, tp.partition) for tp in self._consumer.assignment()}

    def pause(self, partitions: set[Partition]) -> None:
        self._consumer.pause(*_tps(partitions))

    def resume(self, partitions: set[Partition]) -> None:
        self._consumer.resume(*_tps(partitions))

    def seek(self, partition: Partition, offset: int) -> None:
        with contextlib.suppress(ValueError):  # no longer assigned: the commit says where
            self._consumer.seek(*_tps({partition}), offset)

    def commit(self, offsets: dict[Partition, int]) -> None:
        from kafka.errors import (
            CommitFailedError,
            IllegalGenerationError,
            RebalanceInProgressError,
            UnknownMemberIdError,
        )
        from kafka.structs import OffsetAndMetadata, TopicPartition

        try:
            self._consumer.commit({TopicPartition(t, p): OffsetAndMetadata(o, "", -1)
                                   for (t, p), o in offsets.items()})
        except (CommitFailedError, RebalanceInProgressError, IllegalGenerationError,
                UnknownMemberIdError) as exc:
            raise CommitRefused(f"{type(exc).__name__}: {exc}") from exc

    def committed(self, partition: Partition) -> int | None:
        from kafka.errors import KafkaError

        try:
            return self._consumer.committed(*_tps({partition}))  # type: ignore[no-any-return]
        except KafkaError as exc:
            raise ConsumerError(f"{type(exc).__name__}: {exc}") from exc

    def end_offsets(self, partitions: set[Partition]) -> dict[Partition, int]:
        from kafka.errors import KafkaError

        try:
            ends = self._consumer.end_offsets(_tps(partitions))
        except KafkaError as exc:
            raise ConsumerError(f"{type(exc).__name__}: {exc}") from exc
        return {(tp.topic, tp.partition): int(o) for tp, o in ends.items()}

    def close(self) -> None:
        self._consumer.close()


def _await_every_join(consumer: Any) -> None:
    """Keep kafka-python 3.0.12 from losing a rejoin (docs/reliability.md, bug 9).

    ``poll`` starts a JoinGroup/SyncGroup task and waits for it at most its own timeout; a later
    ``poll`` picks the task up again only while ``need_rejoin()`` is true. When the rejoin was
    caused by a metadata change (as the first metadata update after ``subscribe`` does), the
    leader's assignment makes ``need_rejoin()`` false as soon as the JoinGroup answer arrives,
    before the SyncGroup: a ``poll`` that times out in between leaves the finished join unread,
    and the member stays "rebalancing" forever (no assignment, no heartbeats, no fetches). Here
    a join counts as needed until a ``poll`` has completed it (``rejoining``).
    """
    coordinator = consumer._coordinator
    needed = coordinator.need_rejoin
    if not hasattr(coordinator, "rejoining"):  # the pinned version is the one this fixes
        raise RuntimeError("kafka-python without BaseCoordinator.rejoining; see bug 9")
    coordinator.need_rejoin = lambda: needed() or coordinator.rejoining


def dead_letter_producer(config: Any) -> Any:
    """The producer that writes ``<topic>.dlq``, with the consumer's security settings."""
    from kafka import KafkaProducer

    with _unreachable_is_an_error(config.bootstrap):
        return KafkaProducer(bootstrap_servers=config.bootstrap, acks="all",
                             bootstrap_timeout_ms=BOOTSTRAP_MS, **config.kafka_options)


@contextlib.contextmanager
def _unreachable_is_an_error(bootstrap: str) -> Iterator[None]:
    from kafka.errors import KafkaError

    from workers.errors import WorkerError

    try:
        yield
    except KafkaError as exc:
        raise WorkerError(f"cannot reach Kafka at {bootstrap}: {exc}") from None


def _tps(partitions: set[Partition]) -> list[Any]:
    from kafka import TopicPartition

    return [TopicPartition(t, p) for t, p in sorted(partitions)]
