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


def embedding_row(bundle: Any, post_id: str, vector: np.ndarray,
                  now: datetime) -> dict[str, Any]:
    kept = stored(vector)
    return {"post_id": post_id, "backbone": bundle.backbone_id, "dim": int(kept.shape[0]),
            "vector": kept.tobytes(), "created_at": now}


def from_stored(vector: bytes, dim: int) -> np.ndarray:
    return np.frombuffer(vector, dtype=np.float16, count=dim)


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
        if work.status != ImageStatus.OK or work.embedding is None:
            continue
        detections += detection_rows(
            bundle, record.post_id, record.posted_at,
            [(brand, score, box) for brand, (score, box) in work.scores.items()], now)
        embeddings.append(embedding_row(bundle, record.post_id, work.embedding, now))
    return posts, detections, embeddings
