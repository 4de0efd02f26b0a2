"""Processing steps in the style of Sentry's Arroyo: small, typed, chained by ``next_step``.

Each step has ``submit / poll / join / close``. ``submit`` either takes a message or raises
``MessageRejected`` (backpressure, an explicit signal: the consumer pauses its partitions and
keeps polling). ``poll`` moves finished work forward and is always called from the thread that
owns the Kafka consumer, so only that thread ever touches offsets. Offsets travel with the data
and the last step marks them done.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field, replace
from typing import Any, Generic, Protocol, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class MessageRejected(Exception):
    """The step is full; try the same message again after the next ``poll``."""


@dataclass(frozen=True)
class Message(Generic[T]):
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    payload: T

    def with_payload(self, payload: R) -> Message[R]:
        return replace(self, payload=payload)  # type: ignore[return-value]


@dataclass
class Batch(Generic[T]):
    messages: list[Message[T]] = field(default_factory=list)
    opened_at: float = field(default_factory=time.monotonic)

    def __len__(self) -> int:
        return len(self.messages)


class Step(Protocol[T]):
    def submit(self, message: Message[T]) -> None: ...
    def poll(self) -> None: ...
    def join(self, timeout: float | None = None) -> None: ...
    def close(self) -> None: ...


def _remaining(deadline: float | None) -> float | None:
    return None if deadline is None else max(0.0, deadline - time.monotonic())


class RunInThreads(Generic[T, R]):
    """Runs ``fn(payload)`` in a pool of threads with at most ``max_pending`` in flight.

    With ``workers=1`` it is the single owner of a resource (the model, a DB connection) and
    results leave in submission order; with more, they leave as they finish (offsets are
    tracked per record, so order does not matter downstream).
    """

    def __init__(self, fn: Callable[[T], R], next_step: Step[R], *, workers: int,
                 max_pending: int, name: str) -> None:
        self.fn = fn
        self.next_step = next_step
        self.max_pending = max_pending
        self.ordered = workers == 1
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix=name)
        self.pending: deque[tuple[Message[T], Future[R]]] = deque()
        self.ready: deque[Message[R]] = deque()

    @property
    def in_flight(self) -> int:
        return len(self.pending) + len(self.ready)

    def submit(self, message: Message[T]) -> None:
        if self.in_flight >= self.max_pending:
            raise MessageRejected
        self.pending.append((message, self.pool.submit(self.fn, message.payload)))

    def _collect(self) -> None:
        if self.ordered:
            while self.pending and self.pending[0][1].done():
                message, future = self.pending.popleft()
                self.ready.append(message.with_payload(future.result()))
        else:
            keep: deque[tuple[Message[T], Future[R]]] = deque()
            for message, future in self.pending:
                if future.done():
                    self.ready.append(message.with_payload(future.result()))
                else:
                    keep.append((message, future))
            self.pending = keep

    def poll(self) -> None:
        self._collect()
        while self.ready:
            try:
                self.next_step.submit(self.ready[0])
            except MessageRejected:
                break
            self.ready.popleft()
        self.next_step.poll()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.pending or self.ready:
            if deadline is not None and time.monotonic() >= deadline:
                break
            if self.pending:
                wait_futures([f for _, f in self.pending], timeout=min(
                    0.05, _remaining(deadline) or 0.05), return_when="FIRST_COMPLETED")
            self.poll()
            if self.ready:
                # Downstream is full: let it drain without spinning.
                self.next_step.join(0.01)
        self.next_step.join(_remaining(deadline))

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.next_step.close()


class BatchStep(Generic[T]):
    """Collects messages into a batch that closes on ``size`` or ``max_wait`` seconds."""

    def __init__(self, next_step: Step[Batch[T]], *, size: int, max_wait: float) -> None:
        self.next_step = next_step
        self.size = size
        self.max_wait = max_wait
        self.open: Batch[T] | None = None
        self.closed: Batch[T] | None = None

    @property
    def in_flight(self) -> int:
        return (len(self.open) if self.open else 0) + (len(self.closed) if self.closed else 0)

    def submit(self, message: Message[T]) -> None:
        if self.closed is not None:
            self._flush_closed()
            if self.closed is not None:
                raise MessageRejected
        if self.open is None:
            self.open = Batch()
        self.open.messages.append(message)
        if len(self.open) >= self.size:
            self.closed, self.open = self.open, None
            self._flush_closed()

    def _flush_closed(self) -> None:
        if self.closed is None:
            return
        first = self.closed.messages[0]
        try:
            self.next_step.submit(first.with_payload(self.closed))
        except MessageRejected:
            return
        self.closed = None

    def poll(self, force: bool = False) -> None:
        self._flush_closed()
        if self.closed is None and self.open is not None and (
            force or time.monotonic() - self.open.opened_at >= self.max_wait
        ):
            # Hand over a partial batch only if the next step takes it now; while the model
            # is busy the batch stays open and keeps filling up to ``size`` (fuller batches,
            # and records are not refused while a half-empty batch waits).
            first = self.open.messages[0]
            try:
                self.next_step.submit(first.with_payload(self.open))
            except MessageRejected:
                pass
            else:
                self.open = None
        self.next_step.poll()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.open is not None or self.closed is not None:
            if deadline is not None and time.monotonic() >= deadline:
                break
            self.poll(force=True)
            if self.closed is not None:
                self.next_step.join(0.01)
        self.next_step.join(_remaining(deadline))

    def close(self) -> None:
        self.next_step.close()


class Sink(Generic[T]):
    """The last step: hands every finished message's offset to ``on_done``."""

    def __init__(self, on_done: Callable[[Message[T]], Any], on_poll: Callable[[], Any]) -> None:
        self.on_done = on_done
        self.on_poll = on_poll

    def submit(self, message: Message[T]) -> None:
        self.on_done(message)

    def poll(self) -> None:
        self.on_poll()

    def join(self, timeout: float | None = None) -> None:
        self.on_poll()

    def close(self) -> None:
        pass
