"""The detector chain, wired once: parse → fetch+decode (threads) → batch → infer (the
model's thread) → write (the database's thread) → done. ``Worker`` only submits, polls and
joins the first step; what each step does lives in ``workers.stages`` and ``workers.sink``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from workers import stages
from workers.metrics import WorkerMetrics
from workers.offsets import OffsetTracker
from workers.sink import DatabaseStage
from workers.strategy import BatchStep, RunInThreads, Sink


def build_chain(config: Any, bundle: Any, metrics: WorkerMetrics, *, fetcher: Any,
                dead_letters: stages.DeadLetters, database: DatabaseStage,
                tracker: OffsetTracker, commit: Callable[[], Any]) -> stages.ParseStep:
    """The last step marks each written batch's offsets done and lets the committer run."""
    done = Sink(tracker.finished_batch, commit)
    write = RunInThreads(database, done, workers=1, max_pending=2, name="db")
    infer = RunInThreads(partial(stages.infer, bundle=bundle, metrics=metrics),
                         write, workers=1, max_pending=2, name="model")
    batch = BatchStep(infer, size=config.batch_size, max_wait=config.max_wait_ms / 1000)
    fetch = RunInThreads(
        partial(stages.fetch_and_prepare, fetcher=fetcher, size=bundle.input_size,
                tiles=config.tiles, max_pixels=config.max_pixels, metrics=metrics),
        batch, workers=config.fetch_workers, max_pending=config.max_inflight, name="fetch",
    )
    return stages.ParseStep(dead_letters, fetch)
