"""The detection and embedding contract: how a stored embedding is scored and how its rows
look. The live worker and ``logowatch rescore`` both go through here, because the product
promises that a rescore of the same bundle reproduces the live rows byte for byte."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from workers.config import ImageStatus

Box = tuple[int, int, int, int]


def stored(embeddings: np.ndarray) -> np.ndarray:
    """What is kept of an embedding: float16."""
    return np.asarray(embeddings, dtype=np.float16)


def score_stored(bundle: Any, vectors: np.ndarray) -> np.ndarray:
    """Scores of stored (float16) embeddings; the live path scores the same rounded values."""
    return np.asarray(bundle.score(stored(vectors).astype(np.float32)))


def best_views(brands: list[str], scores: np.ndarray,
               boxes: list[Box | None]) -> list[tuple[str, float, Box | None]]:
    """Each brand's best view of one image: ``scores`` is (views, brands), view 0 the whole
    image and the others its tiles (``boxes`` aligned, None for the whole image)."""
    best = np.argmax(scores, axis=0)
    return [(brand, float(scores[best[j], j]), boxes[best[j]])
            for j, brand in enumerate(brands)]


def detection(bundle: Any, brand: str, score: float, box: Box | None) -> dict[str, Any]:
    """One brand's result for one image, as stored and as `classify` and `serve` report it."""
    return {"brand": brand, "score": min(1.0, max(0.0, float(score))),
            "present": bool(score >= bundle.thresholds[brand]),
            "region": list(box) if box else None}


def detection_rows(bundle: Any, post_id: str, posted_at: datetime,
                   scores: Iterable[tuple[str, float, Box | None]],
                   now: datetime) -> list[dict[str, Any]]:
    return [
        {"post_id": post_id, "model_version": bundle.version,
         **detection(bundle, brand, score, box), "posted_at": posted_at, "detected_at": now}
        for brand, score, box in scores
    ]


def embedding_row(bundle: Any, post_id: str, views: np.ndarray, boxes: list[Box | None],
                  now: datetime) -> dict[str, Any]:
    """The stored embeddings of one image: the whole image (view 0) and, when tiles were
    scored, every tile with its box."""
    kept = stored(views)
    tiles = kept[1:]
    return {"post_id": post_id, "backbone": bundle.backbone_id, "dim": int(kept.shape[1]),
            "vector": kept[0].tobytes(), "created_at": now,
            "tiles": tiles.tobytes() if len(tiles) else None,
            "tile_boxes": [int(v) for box in boxes[1:] for v in box or ()] if len(tiles)
            else None}


def from_stored(vector: bytes, dim: int, tiles: bytes | None = None,
                tile_boxes: list[int] | None = None) -> tuple[np.ndarray, list[Box | None]]:
    """(views, boxes) of a stored row, as ``embedding_row`` took them apart."""
    views = np.frombuffer(vector, dtype=np.float16, count=dim).reshape(1, dim)
    boxes: list[Box | None] = [None]
    if tiles is not None and tile_boxes:
        views = np.concatenate([views, np.frombuffer(tiles, dtype=np.float16).reshape(-1, dim)])
        flat = list(tile_boxes)
        boxes += [tuple(flat[i:i + 4]) for i in range(0, len(flat), 4)]  # type: ignore[misc]
    return views, boxes


def batch_rows(batch: Any, bundle: Any, pseudonymise: Any = None,
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """The posts, detections and embeddings rows of a finished batch (one transaction)."""
    posts, detections, embeddings = [], [], []
    now = datetime.now(UTC)
    for message in batch.messages:
        work = message.payload
        record = work.record
        if record is None:
            continue
        author = record.author
        if author is not None and pseudonymise is not None:
            author = pseudonymise(author)
        posts.append({
            "post_id": record.post_id, "source": record.source, "author": author,
            "caption": record.caption, "hashtags": record.hashtags,
            "mentions": record.mentions, "image_url": record.image_url,
            "permalink": record.permalink, "posted_at": record.posted_at,
            "image_status": str(work.status), "error": work.error, "extra": record.extra,
        })
        if work.status != ImageStatus.OK or work.views is None:
            continue
        detections += detection_rows(
            bundle, record.post_id, record.posted_at,
            [(brand, score, box) for brand, (score, box) in work.scores.items()], now)
        embeddings.append(embedding_row(bundle, record.post_id, work.views, work.boxes, now))
    return posts, detections, embeddings
