"""Training-side speed: how fast bottlenecks are extracted, and how long one head takes.

Extraction is the expensive, cached part of the recipe (decode + backbone per image, once);
a head is trained many times on cached embeddings (new brands, threshold policies, searches),
so its cost decides how interactive retraining feels.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def extraction(bundle: Any, images: list[bytes], batch_size: int) -> dict[str, Any]:
    """`embed_files` over the benchmark JPEGs on disk into an empty bottleneck cache."""
    from detector.datasets import BottleneckCache, embed_files

    bundle.batch_size = batch_size
    with tempfile.TemporaryDirectory(prefix="bench-bottlenecks-") as tmp:
        paths = []
        for i, data in enumerate(images):
            path = Path(tmp) / f"img{i}.jpg"
            path.write_bytes(data)
            paths.append(path)
        warm = BottleneckCache.for_backbone(Path(tmp) / "warm", bundle.backbone)
        embed_files(paths[:batch_size], "whole", warm, bundle.embed, bundle.input_size,
                    batch=batch_size, progress=False)  # traces; its own cache, so no hits
        cache = BottleneckCache.for_backbone(Path(tmp) / "cache", bundle.backbone)
        started = time.perf_counter()
        out = embed_files(paths, "whole", cache, bundle.embed, bundle.input_size,
                          batch=batch_size, progress=False)
        elapsed = time.perf_counter() - started
    done = sum(x is not None for x in out)
    return {"images": done, "batch_size": batch_size, "seconds": round(elapsed, 2),
            "images_per_s": done / elapsed}


def head(n: int = 10_000, dim: int = 2048, positives: float = 0.1,
         seed: int = 0) -> dict[str, Any]:
    """Write `n` embeddings to a bottleneck cache, read them back, train one head.

    The embeddings are synthetic but not trivial: a weak planted direction plus noise, so the
    solver needs as many iterations as on real data (neither instant nor never). The default
    width is the widest embedding (Inception's `mixed10`), a worst case for the fit.
    """
    from detector.datasets import BottleneckCache
    from detector.train import TrainConfig, fit_head

    rng = np.random.default_rng(seed)
    y = (rng.random(n) < positives).astype(np.float32)
    direction = rng.normal(0, 1, dim).astype(np.float32)
    x = rng.normal(0, 1, (n, dim)).astype(np.float32) + 0.08 * y[:, None] * direction
    with tempfile.TemporaryDirectory(prefix="bench-heads-") as tmp:
        cache = BottleneckCache(tmp, "bench")
        for i in range(n):
            cache.put(f"{i:064x}", "whole", x[i : i + 1])
        started = time.perf_counter()
        loaded = np.concatenate([cache.get(f"{i:064x}", "whole") for i in range(n)])  # type: ignore[misc]
        read_s = time.perf_counter() - started
    cfg = TrainConfig()
    started = time.perf_counter()
    _, _, info = fit_head(loaded, y, cfg, progress=False)
    fit_s = time.perf_counter() - started
    return {"embeddings": n, "dim": dim, "cache_read_s": round(read_s, 2),
            "fit_s": round(fit_s, 2), "iterations": info["iterations"],
            "converged": info["converged"], "solver": "L-BFGS, full batch"}
