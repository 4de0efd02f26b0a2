"""The processing steps: batching, backpressure and offset tracking, without services."""

from __future__ import annotations

import time
from typing import Any

import pytest

from workers.offsets import OffsetTracker
from workers.strategy import Batch, BatchStep, Message, MessageRejected, RunInThreads


class Collect:
    """A next step that takes at most ``capacity`` messages until ``drain``."""

    def __init__(self, capacity: int = 1000) -> None:
        self.capacity = capacity
        self.got: list[Message[Any]] = []

    def submit(self, message: Message[Any]) -> None:
        if len(self.got) >= self.capacity:
            raise MessageRejected
        self.got.append(message)

    def poll(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass

    def close(self) -> None:
        pass


def _msg(offset: int, partition: int = 0) -> Message[int]:
    return Message("t", partition, offset, 0, offset)


def test_a_batch_closes_on_size() -> None:
    out = Collect()
    step = BatchStep(out, size=3, max_wait=60)
    for i in range(7):
        step.submit(_msg(i))
    assert [len(m.payload) for m in out.got] == [3, 3]
    assert step.in_flight == 1


def test_a_partial_batch_closes_on_time() -> None:
    out = Collect()
    step = BatchStep(out, size=100, max_wait=0.01)
    step.submit(_msg(0))
    step.poll()
    assert out.got == []
    time.sleep(0.02)
    step.poll()
    assert [len(m.payload) for m in out.got] == [1]


def test_while_the_next_step_is_busy_a_partial_batch_keeps_filling() -> None:
    out = Collect(capacity=0)
    step = BatchStep(out, size=4, max_wait=0.0)
    step.submit(_msg(0))
    step.poll()  # time is up but the model is busy: stay open
    for i in range(1, 4):
        step.submit(_msg(i))  # accepted, the batch is now full and waits
    with pytest.raises(MessageRejected):
        step.submit(_msg(4))
    out.capacity = 10
    step.poll()
    assert [len(m.payload) for m in out.got] == [4]
    step.submit(_msg(4))


def test_threads_reject_beyond_max_pending_and_forward_results() -> None:
    out = Collect()
    step: RunInThreads[int, int] = RunInThreads(lambda x: x * 10, out, workers=2,
                                                max_pending=2, name="t")
    step.submit(_msg(1))
    step.submit(_msg(2))
    with pytest.raises(MessageRejected):
        step.submit(_msg(3))
    step.join(5)
    assert sorted(m.payload for m in out.got) == [10, 20]
    step.close()


def test_offsets_commit_only_below_the_oldest_unfinished_record() -> None:
    tracker = OffsetTracker()
    for offset in (5, 6, 7, 9):  # 8 was compacted away
        tracker.started(("t", 0), offset)
    tracker.finished(("t", 0), 6)
    tracker.finished(("t", 0), 7)
    assert tracker.to_commit() == {}  # 5 is where the group already stands
    tracker.finished(("t", 0), 5)
    assert tracker.to_commit() == {("t", 0): 9}
    tracker.mark_committed({("t", 0): 9})
    assert tracker.to_commit() == {}
    tracker.finished(("t", 0), 9)
    assert tracker.to_commit() == {("t", 0): 10}
    tracker.forget([("t", 0)])
    tracker.finished(("t", 0), 10)  # a late result of a revoked partition is ignored
    assert tracker.to_commit() == {}


def test_batches_carry_their_messages() -> None:
    batch: Batch[int] = Batch([_msg(1), _msg(2)])
    assert len(batch) == 2
