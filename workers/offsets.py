"""Which offsets may be committed: the lowest record not yet finished, per partition.

Records finish out of order (fetches race), but a commit says "everything below this is done",
so the committable offset is that of the oldest record still in flight, or one past the newest
consumed record when nothing is in flight.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

Partition = tuple[str, int]


@dataclass
class _PartitionState:
    in_order: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    last: int = -1
    committed: int | None = None


class OffsetTracker:
    def __init__(self) -> None:
        self._parts: dict[Partition, _PartitionState] = {}

    def started(self, partition: Partition, offset: int) -> None:
        # The first offset consumed is where the group already stands: nothing to commit yet.
        state = self._parts.setdefault(partition, _PartitionState(committed=offset))
        state.in_order.append(offset)
        state.last = max(state.last, offset)

    def finished(self, partition: Partition, offset: int) -> None:
        state = self._parts.get(partition)
        if state is None:  # revoked meanwhile: the new owner redoes it, upserts make that safe
            return
        state.done.add(offset)
        while state.in_order and state.in_order[0] in state.done:
            state.done.discard(state.in_order.popleft())

    def finished_batch(self, message: Any) -> None:
        """The chain's last step: every record of a written batch is done."""
        for m in message.payload.messages:
            self.finished((m.topic, m.partition), m.offset)

    def committable(self, partition: Partition) -> int | None:
        state = self._parts.get(partition)
        if state is None or state.last < 0:
            return None
        return state.in_order[0] if state.in_order else state.last + 1

    def committed(self, partition: Partition) -> int | None:
        """Where the group stands: the last offset committed, or the first one consumed."""
        state = self._parts.get(partition)
        return state.committed if state is not None else None

    def to_commit(self) -> dict[Partition, int]:
        """Offsets that moved since the last ``mark_committed``."""
        out = {}
        for partition, state in self._parts.items():
            offset = self.committable(partition)
            if offset is not None and offset != state.committed:
                out[partition] = offset
        return out

    def mark_committed(self, offsets: dict[Partition, int]) -> None:
        for partition, offset in offsets.items():
            if partition in self._parts:
                self._parts[partition].committed = offset

    def in_flight(self, partition: Partition | None = None) -> int:
        if partition is not None:
            state = self._parts.get(partition)
            return len(state.in_order) if state else 0
        return sum(len(s.in_order) for s in self._parts.values())

    def forget(self, partitions: list[Partition]) -> None:
        for partition in partitions:
            self._parts.pop(partition, None)
