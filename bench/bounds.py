"""The two ceilings the worker is measured against: what the model can do and what the CPUs
can decode, each measured alone so the end-to-end ratio has a yardstick from the same run."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from typing import Any

import numpy as np


def rate(step: Callable[[], int], min_seconds: float, min_calls: int) -> dict[str, float]:
    """Calls `step` (returns items done) until both floors are met; items per second."""
    step()  # warm-up: tracing, allocator, caches
    items, calls, started = 0, 0, time.perf_counter()
    while calls < min_calls or time.perf_counter() - started < min_seconds:
        items += step()
        calls += 1
    elapsed = time.perf_counter() - started
    return {"per_s": items / elapsed, "items": items, "seconds": round(elapsed, 3)}


def model_bound(bundle: Any, batch_sizes: list[int], *, min_seconds: float,
                precision: str = "default") -> dict[str, Any]:
    """Backbone + every brand head on random uint8 arrays, full batches only (images/s).

    The arrays are made once, so nothing but the model is timed.
    """
    out: dict[str, Any] = {"precision": precision, "by_batch": {}}
    size = bundle.input_size
    for bs in batch_sizes:
        bundle.batch_size = bs  # retraces once for the fixed batch shape
        pixels = np.random.default_rng(bs).integers(0, 256, (bs, size, size, 3), np.uint8)

        def step(pixels: np.ndarray = pixels) -> int:
            bundle.score(bundle.embed(pixels))
            return len(pixels)

        started = time.perf_counter()
        r = rate(step, min_seconds, min_calls=2)
        r["first_call_s"] = round(time.perf_counter() - started - r["seconds"], 2)
        out["by_batch"][str(bs)] = r
    best = max(out["by_batch"].items(), key=lambda kv: kv[1]["per_s"])
    out["best_batch"], out["best_per_s"] = int(best[0]), best[1]["per_s"]
    return out


_IMAGES: list[bytes] = []


def _keep(images: list[bytes]) -> None:
    """Process-pool initializer: each process gets the JPEGs once, not with every task."""
    _IMAGES[:] = images


def _prepare_slice(start: int, step: int, size: int, tiles: bool) -> int:
    return _prepare_many(_IMAGES[start::step], size, tiles)


def _prepare_many(images: list[bytes], size: int, tiles: bool) -> int:
    from detector.preprocess import TileSpec, prepare

    spec = TileSpec(2, 0.25) if tiles else None
    for data in images:
        prepare(data, size, tiles=spec)
    return len(images)


def decode_bound(images: list[bytes], size: int, *, min_seconds: float,
                 workers: int | None = None) -> dict[str, Any]:
    """The project's own `prepare` (decode with DCT scaling, resize, pad) on realistic JPEGs.

    One core: a plain loop. All cores: one process per core, each doing a slice of the set, as
    a decode pool would. Threads: what the worker's fetch threads can get (Pillow releases
    the GIL while decoding and resizing). With tiles: the same with the 2x2 grid, which needs
    a larger decode.
    """
    workers = workers or os.cpu_count() or 1
    out: dict[str, Any] = {"workers": workers, "images": len(images),
                           "mean_kib": round(sum(map(len, images)) / len(images) / 1024, 1)}
    chunks = [images[i::workers] for i in range(workers)]
    for tiles in (False, True):
        tag = "tiles_" if tiles else ""
        out[f"{tag}one_core"] = rate(lambda t=tiles: _prepare_many(images, size, t),
                                      min_seconds, 1)
        with ProcessPoolExecutor(workers, initializer=_keep, initargs=(images,)) as pool:
            def in_processes(t: bool = tiles) -> int:
                return sum(pool.map(_prepare_slice, range(workers), [workers] * workers,
                                    [size] * workers, [t] * workers))
            out[f"{tag}all_cores"] = rate(in_processes, min_seconds, 3)
        with ThreadPoolExecutor(workers) as threads:
            def in_threads(t: bool = tiles) -> int:
                return sum(threads.map(_prepare_many, chunks, [size] * workers,
                                       [t] * workers))
            out[f"{tag}threads"] = rate(in_threads, min_seconds, 3)
    out["per_s"] = out["all_cores"]["per_s"]
    out["tiles_per_s"] = out["tiles_all_cores"]["per_s"]
    return out
