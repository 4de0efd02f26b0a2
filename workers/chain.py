"""The detector chain, wired once: parse → fetch+decode (threads) → batch → infer (the
model's thread) → write (the database's thread) → done. ``Worker`` only submits, polls and
joins the first step; what each step does lives in ``workers.stages`` and ``workers.sink``."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

from workers import stages
from workers.metrics import Health, StageMetrics, WorkerMetrics
from workers.offsets import OffsetTracker
from workers.sink import DatabaseStage
from workers.strategy import BatchStep, RunInThreads, Sink


def build_chain(config: Any, bundle: Any, metrics: WorkerMetrics, *, fetcher: Any,
                producer: Any, writer: Any, health: Health, should_stop: Callable[[], bool],
                tracker: OffsetTracker, commit: Callable[[], Any],
                ) -> tuple[stages.ParseStep, DatabaseStage]:
    """The first step, and the write step (whose tripwire the worker checks). The last step
    marks each written batch's offsets done and lets the committer run."""
    c = config
    dead_letters = stages.DeadLetters(producer, c.dlq_topic or f"{c.topic}.dlq", metrics,
                                      window=c.dlq_window, max_ratio=c.dlq_max_ratio)
    database = DatabaseStage(writer, bundle, metrics, health, should_stop=should_stop,
                             dead_letters=dead_letters, pseudonymise=c.pseudonymise,
                             window=c.dlq_window, max_ratio=c.dlq_max_ratio)
    done = Sink(tracker.finished_batch, commit)
    write = RunInThreads(database, done, workers=1, max_pending=2, name="db")
    fetch = scoring_steps(write, bundle, metrics, fetcher=fetcher, tiles=c.tiles,
                          batch_size=c.batch_size, max_wait=c.max_wait_ms / 1000,
                          fetch_workers=c.fetch_workers, max_inflight=c.max_inflight,
                          max_pixels=c.max_pixels)
    return stages.ParseStep(dead_letters, fetch), database


def scoring_steps(next_step: Any, bundle: Any, metrics: StageMetrics, *, fetcher: Any,
                  tiles: Any, batch_size: int, max_wait: float, fetch_workers: int,
                  max_inflight: int, max_pixels: int) -> RunInThreads[Any, Any]:
    """fetch+decode (threads) → batch (closes on size or ``max_wait``) → infer (the model's
    one thread) → ``next_step``: the worker's scoring, also what `classify` and `serve` run."""
    infer = RunInThreads(partial(stages.infer, bundle=bundle, metrics=metrics),
                         next_step, workers=1, max_pending=2, name="model")
    batch = BatchStep(infer, size=batch_size, max_wait=max_wait)
    return RunInThreads(
        partial(stages.fetch_and_prepare, fetcher=fetcher, size=bundle.input_size,
                tiles=tiles, max_pixels=max_pixels, metrics=metrics,
                logos=bundle.logos),
        batch, workers=fetch_workers, max_pending=max_inflight, name="fetch",
    )
