"""``logowatch rescore``: apply a bundle's brand heads to the stored embeddings.

Image URLs from social platforms expire within days, but every image's backbone embedding is
kept (float16), so a new brand head, or a retrained one, gets its history without fetching a
single image. The live worker scores the same float16-rounded embeddings it stores, so a
rescore of the same bundle reproduces the worker's scores exactly: with tiles, the worker keeps
each tile's embedding and box too (migration 0010), and the rescore takes the same max.
"""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime
from typing import Any

import numpy as np

from workers import config, rows
from workers.errors import WorkerError


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "rescore",
        help="score stored image embeddings with a model bundle (no image fetch)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--model", required=not config.env("LOGOWATCH_MODEL"),
                   default=config.env("LOGOWATCH_MODEL"),
                   help="model bundle directory (env LOGOWATCH_MODEL)")
    p.add_argument("--database-url", default=config.database_url(),
                   help="SQLAlchemy URL (env DATABASE_URL)")
    p.add_argument("--since", default=None,
                   help="only posts from this period: 30d, 4w or a date (default: all history)")
    p.add_argument("--brands", default=None,
                   help="comma-separated brands to write (default: every brand of the bundle)")
    p.add_argument("--batch-size", type=int, default=2048,
                   help="embeddings per read and per transaction (default 2048)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_rescore)


def run_rescore(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from analytics.report import parse_since
    from detector.bundle import load_bundle

    bundle = load_bundle(args.model, embed=False)  # heads only: no backbone, no TensorFlow
    brands = bundle.brands if not args.brands else [b.strip() for b in args.brands.split(",")]
    unknown = sorted(set(brands) - set(bundle.brands))
    if unknown:
        raise WorkerError(f"--brands {','.join(unknown)}: not in bundle {bundle.version} "
                          f"(it has {', '.join(bundle.brands)})")
    since = parse_since(args.since) if args.since else None
    try:
        done, seconds = rescore(args.database_url, bundle, brands=brands, since=since,
                                batch_size=args.batch_size, progress=not args.no_progress)
    except OperationalError as exc:
        raise WorkerError(f"cannot reach the database: {config.first_line(exc)}") from None
    rate = done / seconds if seconds else 0.0
    print(f"rescore: {done} embeddings scored for {len(brands)} brands with model "
          f"{bundle.version} in {seconds:.1f}s ({rate:,.0f}/s)")
    return 0


def rescore(database_url: str, bundle: Any, *, brands: list[str], since: Any = None,
            batch_size: int = 2048, progress: bool = True) -> tuple[int, float]:
    """Score every stored embedding of the bundle's backbone; returns (count, seconds)."""
    from sqlalchemy import text

    from detector.progress import progress as progress_bar
    from workers.sink import ResultWriter

    writer = ResultWriter(database_url)
    writer.register_model(bundle.version, bundle.backbone_id, bundle.thresholds,
                          bundle.metadata)
    where = "e.backbone = :backbone" + (" AND p.posted_at >= :since" if since else "")
    params: dict[str, Any] = {"backbone": bundle.backbone_id}
    if since:
        params["since"] = datetime(since.year, since.month, since.day, tzinfo=UTC)
    started = time.perf_counter()
    done = 0
    try:
        with writer.engine.connect() as conn:
            total = conn.execute(text(
                f"SELECT count(*) FROM embeddings e JOIN posts p USING (post_id) WHERE {where}"
            ), params).scalar_one()
        bar = progress_bar(total=total, unit="emb", desc="rescore", enabled=progress)
        last = ""
        while True:
            with writer.engine.connect() as conn:  # keyset pages: no long-held cursor
                page = conn.execute(text(
                    "SELECT e.post_id, e.dim, e.vector, e.tiles, e.tile_boxes, p.posted_at "
                    "FROM embeddings e "
                    f"JOIN posts p USING (post_id) WHERE {where} AND e.post_id > :after "
                    "ORDER BY e.post_id LIMIT :limit"
                ), {**params, "after": last, "limit": batch_size}).all()
            if not page:
                break
            writer.write([], rescore_rows(bundle, page, brands, datetime.now(UTC)), [])
            done += len(page)
            bar.update(len(page))
            last = page[-1].post_id
        bar.close()
    finally:
        writer.close()
    return done, time.perf_counter() - started


def rescore_rows(bundle: Any, page: list[Any], brands: list[str],
                 now: datetime) -> list[dict[str, Any]]:
    """Detection rows of stored embeddings (rows with ``post_id``, ``dim``, ``vector``,
    ``tiles``, ``tile_boxes``, ``posted_at``), built as the live worker builds them
    (``workers.rows``): the max over the whole image and the tiles it stored."""
    columns = [bundle.brands.index(b) for b in brands]
    stored = [rows.from_stored(r.vector, r.dim, r.tiles, r.tile_boxes) for r in page]
    scores = rows.score_stored(bundle, np.concatenate([views for views, _ in stored]))
    out, start = [], 0
    for r, (views, boxes) in zip(page, stored, strict=True):
        own = scores[start:start + len(views), columns]
        start += len(views)
        out += rows.detection_rows(bundle, r.post_id, r.posted_at,
                                   rows.best_views(brands, own, boxes), now)
    return out
