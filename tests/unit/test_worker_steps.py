"""The worker's step logic against the in-memory consumer (no broker, no database): pausing,
the carried message, revoke-then-reassign, ``--once``, the DLQ trip-wire, database retry,
commit ordering and the liveness guard. The same paths run against real services in
tests/integration/test_worker*.py and tests/reliability/."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from tests.support.memory_consumer import (
    MemoryConsumer,
    MemoryFetcher,
    MemoryProducer,
    MemoryWriter,
    StubBundle,
)
from tests.support.pipeline import post
from workers.commits import Committer
from workers.liveness import Stalled
from workers.metrics import WorkerMetrics
from workers.offsets import OffsetTracker
from workers.stages import TooManyFailures
from workers.worker import Worker, WorkerConfig

TOPIC = "posts"
P0, P1 = (TOPIC, 0), (TOPIC, 1)


def _feed(consumer: MemoryConsumer, n: int) -> list[str]:
    """``n`` posts, post i on partition i % 2 at offset i // 2."""
    for i in range(n):
        key, value = post(f"p{i}", "http://images.test/x.jpg")
        consumer.produce(i % 2, value, key)
    return [f"p{i}" for i in range(n)]


def _worker(consumer: MemoryConsumer, **overrides: Any) -> tuple[Worker, MemoryWriter,
                                                                  MemoryProducer, MemoryFetcher]:
    writer, producer, fetcher = MemoryWriter(consumer.journal), MemoryProducer(), MemoryFetcher()
    settings: dict[str, Any] = dict(bootstrap="memory", database_url="memory", topic=TOPIC,
                                    batch_size=4, max_wait_ms=5, fetch_workers=2,
                                    max_inflight=8, commit_interval=0.0, drain_timeout=5.0,
                                    once=True)
    settings.update(overrides)
    worker = Worker(WorkerConfig(**settings), StubBundle(), consumer=consumer,
                    producer=producer, writer=writer, fetcher=fetcher)
    return worker, writer, producer, fetcher


def _written(writer: MemoryWriter) -> list[str]:
    return sorted(p["post_id"] for p in writer.posts)


def test_once_writes_every_record_and_commits_only_offsets_whose_rows_were_written() -> None:
    consumer = MemoryConsumer(TOPIC)
    ids = _feed(consumer, 20)
    worker, writer, _, _ = _worker(consumer)
    worker.run()
    assert _written(writer) == sorted(ids)
    assert len(writer.detections) == 20 * 2 and len(writer.embeddings) == 20
    assert consumer.committed_offsets == {P0: 10, P1: 10}
    written: set[str] = set()
    for kind, what in consumer.journal:
        if kind == "write":
            written |= set(what)
            continue
        for (_, partition), offset in what.items():
            below = {f"p{2 * o + partition}" for o in range(offset)}
            assert below <= written, f"committed {offset} on {partition} before its rows"
    assert consumer.closed


def test_a_full_chain_pauses_the_partitions_and_the_carried_message_goes_in_later() -> None:
    consumer = MemoryConsumer(TOPIC)
    ids = _feed(consumer, 40)
    worker, writer, _, fetcher = _worker(consumer, max_inflight=4)
    fetcher.gate.clear()  # fetches hang: the fetch step fills up and rejects
    paused_seen: list[set[tuple[str, int]]] = []

    def release_once_paused(c: MemoryConsumer) -> None:
        if c.paused and not paused_seen:
            paused_seen.append(set(c.paused))
            assert worker.carry, "the rejected message is carried, not dropped"
            fetcher.gate.set()

    consumer.before_poll = release_once_paused
    worker.run()
    assert paused_seen == [{P0, P1}]
    assert _written(writer) == sorted(ids)  # each once: nothing dropped, nothing doubled
    assert consumer.paused == set()


def test_work_dropped_at_a_revoke_is_redone_when_the_partitions_come_back() -> None:
    consumer = MemoryConsumer(TOPIC)
    ids = _feed(consumer, 24)
    worker, writer, _, fetcher = _worker(consumer, drain_timeout=0.0)
    fetcher.gate.clear()  # in-flight work cannot finish within the (zero) drain budget
    ready_between: list[bool] = []

    def rebalance_mid_flight(c: MemoryConsumer) -> None:
        if c.join_polls == 0 and c.next_assignment is None and not ready_between \
                and worker.tracker.in_flight() >= 4:
            c.rebalance()
        elif c.next_assignment is not None and c.join_polls == 0:
            ready_between.append(worker.health.ready()[0])  # revoked, not yet reassigned
            fetcher.gate.set()

    consumer.before_poll = rebalance_mid_flight
    worker.run()
    assert ready_between == [False]
    assert sorted(set(_written(writer))) == sorted(ids)  # at least once: some twice
    assert consumer.committed_offsets == {P0: 12, P1: 12}


def test_records_returned_with_a_revoke_and_reassign_in_one_poll_are_fetched_again() -> None:
    consumer = MemoryConsumer(TOPIC, max_records=4)
    ids = _feed(consumer, 40)
    worker, writer, _, _ = _worker(consumer, once=True, stall_timeout=1.0)
    worker.lag.every = 0.0
    steps: list[str] = []

    def two_rebalances(c: MemoryConsumer) -> None:
        if not steps and any(kind == "commit" for kind, _ in c.journal):
            c.rebalance()  # the tracker forgets both partitions
            steps.append("first")
        elif steps == ["first"] and c.next_assignment is not None and c.join_polls == 0:
            # the join would complete in this poll; instead: revoked, reassigned and records
            # of partitions the tracker has forgotten, all in this one poll
            c.rebalance(join_polls=0)
            steps.append("second")

    consumer.before_poll = two_rebalances
    worker.run()  # without the rewind the dropped records never come back: Stalled
    assert steps == ["first", "second"]
    assert sorted(set(_written(writer))) == sorted(ids)
    assert consumer.committed_offsets == {P0: 20, P1: 20}


def test_a_commit_refused_by_a_rebalance_is_logged_and_redone_later() -> None:
    consumer = MemoryConsumer(TOPIC)
    tracker = OffsetTracker()
    tracker.started(P0, 0)
    tracker.finished(P0, 0)
    committer = Committer(consumer, tracker, WorkerMetrics(), interval=0.0)
    consumer.refuse_commits = True
    assert committer.commit() is False
    consumer.refuse_commits = False
    assert committer.commit() is True
    assert consumer.committed_offsets == {P0: 1}


def test_most_records_dead_stops_the_worker_instead_of_draining_the_topic() -> None:
    consumer = MemoryConsumer(TOPIC)
    for _ in range(30):
        consumer.produce(0, b"{not json")
    worker, _, producer, _ = _worker(consumer, dlq_window=10)
    with pytest.raises(TooManyFailures):
        worker.run()
    assert len(producer.sent) == 10
    assert {s.topic for s in producer.sent} == {f"{TOPIC}.dlq"}
    assert dict(producer.sent[0].headers)["source_offset"] == b"0"
    assert consumer.closed


def test_a_lost_database_connection_is_retried_and_nothing_is_committed_before_it() -> None:
    consumer = MemoryConsumer(TOPIC)
    ids = _feed(consumer, 8)
    worker, writer, _, _ = _worker(consumer)
    failures: list[bool] = []

    def fail_first_write() -> None:
        if not failures:
            failures.append(True)
            raise OperationalError("INSERT", {}, Exception(""))  # empty message: no IndexError

    writer.fail = fail_first_write
    worker.run()
    assert _written(writer) == sorted(ids)
    assert worker.metrics.db_errors._value.get() == 1
    assert worker.health.db_ok
    assert consumer.journal[0][0] == "write"


def test_records_waiting_without_progress_turn_healthz_unhealthy_then_stop_the_worker() -> None:
    consumer = MemoryConsumer(TOPIC)
    _feed(consumer, 20)
    worker, _, _, fetcher = _worker(consumer, once=False, stall_timeout=0.2,
                                    drain_timeout=0.1)
    worker.lag.every = 0.0
    fetcher.gate.clear()  # the chain never moves again
    health: list[tuple[bool, str]] = []
    consumer.before_poll = lambda c: health.append(worker.health.live())
    with pytest.raises(Stalled):
        worker.run()
    assert health[0][0]
    assert any(not ok and "no progress" in why for ok, why in health)
    assert consumer.closed


def test_a_worker_without_partitions_is_not_ready() -> None:
    consumer = MemoryConsumer(TOPIC)
    worker, *_ = _worker(consumer)
    assert worker.health.ready() == (False, "no partitions assigned")
    worker.shutdown()
