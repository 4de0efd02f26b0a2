"""``logowatch rescore``: apply a bundle's brand heads to the stored embeddings.

Image URLs from social platforms expire within days, but every image's backbone embedding is
kept (float16), so a new brand head, or a retrained one, gets its history without fetching a
single image. The live worker scores the same float16-rounded embeddings it stores, so a
rescore of the same bundle reproduces the worker's scores exactly: with tiles, the worker keeps
each tile's embedding and box too (migration 0010), and the rescore takes the same max.

A brand the bundle matches from its logo file (``brands add --logo``) is found on the image,
not the embedding. Its rows are copied from any model version that matched it with the same
matcher (equal digests in ``models.logos``: the same scores, byte for byte); the images of
the posts left are fetched again (with the worker's fetcher, on the bytes as fetched, so the
rows are the worker's), and a post whose image is gone keeps no row for that brand under
the new version. ``--brands`` with heads only fetches nothing.
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any

import numpy as np

from logowatch import commands
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
    commands.add_fetch_flags(p, fetch_workers=8)
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
    heads = [b for b in brands if b not in bundle.logos]
    logos = [b for b in brands if b in bundle.logos]
    try:
        if heads:
            done, seconds = rescore(args.database_url, bundle, brands=heads, since=since,
                                    batch_size=args.batch_size, progress=not args.no_progress)
            rate = done / seconds if seconds else 0.0
            print(f"rescore: {done} embeddings scored for {len(heads)} brands with model "
                  f"{bundle.version} in {seconds:.1f}s ({rate:,.0f}/s)")
        if logos:
            report(rematch(args.database_url, bundle, brands=logos,
                           fetch=commands.fetch_config(args), workers=args.fetch_workers,
                           since=since, progress=not args.no_progress), logos, bundle)
    except OperationalError as exc:
        raise WorkerError(f"cannot reach the database: {config.first_line(exc)}") from None
    return 0


def report(result: tuple[int, int, Counter[str], float], logos: list[str], bundle: Any) -> None:
    copied, done, failed, seconds = result
    lost = ", ".join(f"{n} {why}" for why, n in sorted(failed.items()))
    print(f"rescore: {', '.join(logos)} (matched from logo files) with model {bundle.version}: "
          f"{copied} rows copied from versions with the same matcher, {done} images fetched "
          f"again and matched, in {seconds:.1f}s"
          + (f"; not fetched, so not scored: {lost}" if lost else ""))


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
    columns = [bundle.heads.brands.index(b) for b in brands]
    stored = [rows.from_stored(r.vector, r.dim, r.tiles, r.tile_boxes) for r in page]
    scores = rows.score_stored(bundle, np.concatenate([views for views, _ in stored]))
    out, start = [], 0
    for r, (views, boxes) in zip(page, stored, strict=True):
        own = scores[start:start + len(views), columns]
        start += len(views)
        out += rows.detection_rows(bundle, r.post_id, r.posted_at,
                                   rows.best_views(brands, own, boxes), now)
    return out


COPY_SQL = """
INSERT INTO detections (post_id, brand, model_version, score, present, region, posted_at,
                        detected_at)
SELECT DISTINCT ON (d.post_id) d.post_id, d.brand, :version, d.score, d.present, d.region,
       d.posted_at, now()
FROM detections d JOIN models m ON m.model_version = d.model_version
WHERE d.brand = :brand AND m.logos ->> :brand = :digest AND d.model_version <> :version
ORDER BY d.post_id
ON CONFLICT (post_id, brand, model_version) DO NOTHING
"""


def rematch(database_url: str, bundle: Any, *, brands: list[str], fetch: Any, workers: int,
            since: Any = None, batch_size: int = 256, progress: bool = True,
            ) -> tuple[int, int, Counter[str], float]:
    """The rows of the brands the bundle matches from their logo files: copied where another
    version matched the brand alike, else from the post's image, fetched again
    (``detector.exemplar.find_all``, what the worker runs); returns (rows copied, images
    matched, failures by kind, seconds)."""
    from sqlalchemy import text

    from detector.exemplar import find_all
    from detector.preprocess import DEFAULT_MAX_PIXELS
    from detector.progress import progress as progress_bar
    from workers.fetch import Fetcher
    from workers.sink import ResultWriter

    logos = {b: bundle.logos[b] for b in brands}
    digests = {d["brand"]: d["digest"] for d in bundle.metadata["logos"]["brands"]}
    writer = ResultWriter(database_url)
    writer.register_model(bundle.version, bundle.backbone_id, bundle.thresholds,
                          bundle.metadata)
    started = time.perf_counter()
    writer.write([], [], [])  # the models row, which the copied rows refer to
    copied = 0
    with writer.engine.begin() as conn:
        for b in brands:
            copied += conn.execute(text(COPY_SQL), {"version": bundle.version, "brand": b,
                                                    "digest": digests[b]}).rowcount
    missing = " OR ".join(f"NOT EXISTS (SELECT 1 FROM detections d WHERE d.post_id = p.post_id "
                          f"AND d.model_version = :version AND d.brand = :b{i})"
                          for i in range(len(brands)))
    where = (f"p.image_status = 'ok' AND ({missing})"
             + (" AND p.posted_at >= :since" if since else ""))
    params: dict[str, Any] = {"version": bundle.version,
                              **{f"b{i}": b for i, b in enumerate(brands)}}
    if since:
        params["since"] = datetime(since.year, since.month, since.day, tzinfo=UTC)
    fetcher = Fetcher(fetch)
    failed: Counter[str] = Counter()
    done = 0

    def one(r: Any) -> list[dict[str, Any]] | str:
        try:
            found = find_all(logos, fetcher.fetch(r.image_url), DEFAULT_MAX_PIXELS)
        except Exception as exc:  # gone, refused, undecodable: the post keeps no row
            return type(exc).__name__
        return rows.detection_rows(bundle, r.post_id, r.posted_at,
                                   [(b, s, box) for b, (s, box) in found.items()],
                                   datetime.now(UTC))

    try:
        with writer.engine.connect() as conn:
            total = conn.execute(text(f"SELECT count(*) FROM posts p WHERE {where}"),
                                 params).scalar_one()
        bar = progress_bar(total=total, unit="img", desc="match logos", enabled=progress)
        last = ""
        with ThreadPoolExecutor(max_workers=workers) as pool:
            while True:
                with writer.engine.connect() as conn:  # keyset pages past those written
                    page = conn.execute(text(
                        f"SELECT p.post_id, p.image_url, p.posted_at FROM posts p WHERE {where} "
                        "AND p.post_id > :after ORDER BY p.post_id LIMIT :limit"),
                        {**params, "after": last, "limit": batch_size}).all()
                if not page:
                    break
                out: list[dict[str, Any]] = []
                for got in pool.map(one, page):
                    if isinstance(got, str):
                        failed[got] += 1
                    else:
                        out += got
                        done += 1
                writer.write([], out, [])
                bar.update(len(page))
                last = page[-1].post_id
        bar.close()
    finally:
        fetcher.close()
        writer.close()
    return copied, done, failed, time.perf_counter() - started
