"""``logowatch brands add NAME --logo FILE``: watch a new brand from its logo file alone, with
its history, in minutes; ``logowatch brands review NAME``: a person checks what it finds.

``brands add`` with ``--logo`` runs five steps, each idempotent, so a rerun after a failure
resumes where it stopped (files already fetched are reused):

1. **catalogue**: the brand and its text aliases (``analytics.catalogue``), so step 2 can tell
   which posts already name it;
2. **feed**: recent posts' images fetched again through the worker's SSRF-safe fetcher (images
   are never stored by the pipeline), minus posts whose caption or tags name the brand and
   posts a person labelled; or ``--backgrounds DIR``;
3. **calibrate**: the logo's silhouette searched for in every feed image
   (``detector.exemplar``): how well it matches where the brand (mostly) is not, per size,
   and the brand's threshold, the feed's 99th percentile (no label needed). Posts a person
   confirmed or rejected (``brands review``) are scored and the precision and recall on them
   printed;
4. **bundle**: a new bundle version next to the model, every head and other logo unchanged;
5. **backfill**: the new version registered, every stored embedding rescored with its heads,
   every stored post's image fetched again and matched against its logo files (the history
   of every brand under one version), the brand pinned to it, and a ``--model`` symlink
   repointed to it.

Until issue 22, step 3 was "draw the logo onto the feed and train a head on the backbone's
embedding": on real marks in photographs that measured AP 0.08-0.12 (chance 0.05), the logo
file matched by its outline, edges and colour 0.72 (docs/benchmarks.md). Images are kept in
the work folder only while the command runs; a successful run deletes them.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import logging
import os
import shutil
import time
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from logowatch import commands
from workers import config
from workers.errors import WorkerError

log = logging.getLogger(__name__)

MIN_FEED = 20  # feed images needed to calibrate a logo on


def extend_brands(actions: Any, add: argparse.ArgumentParser) -> None:
    """The onboarding flags of ``brands add`` and the ``brands review`` action."""
    g = add.add_argument_group("onboarding from a logo file (with --logo)")
    g.add_argument("--logo", action="append", type=Path, default=[], metavar="FILE",
                   help="the brand's logo: SVG, PNG or WebP with transparency, or JPEG "
                   "(repeatable: each is searched for). Matches the brand's logo in every "
                   "image and backfills its history")
    g.add_argument("--model", default=config.env("LOGOWATCH_MODEL"),
                   help="the bundle the detectors run (env LOGOWATCH_MODEL); the new bundle is "
                   "written next to it, and a symlink is repointed to it")
    g.add_argument("--backgrounds", type=Path, metavar="DIR",
                   help="images to calibrate the logo on, instead of the feed's")
    g.add_argument("--feed-images", type=commands._positive, default=200,
                   help="recent feed images to fetch and calibrate the logo on (default 200)")
    g.add_argument("--work-dir", type=Path,
                   help="where the steps keep their files (default .logowatch/onboard/NAME)")
    g.add_argument("--dry-run", action="store_true",
                   help="say what would happen, change nothing")
    g.add_argument("--no-progress", action="store_true", help="no progress bars")
    commands.add_fetch_flags(g, fetch_workers=8)  # type: ignore[arg-type]
    add.set_defaults(func=run_add)

    review = actions.add_parser(
        "review", help="contact sheet of a brand's top and borderline posts; record verdicts",
        description="Fetches the images of the brand's highest-scoring and borderline posts "
        "(current model) again and writes sheet.png and index.html. --confirm and --reject "
        "record a person's verdicts; the next 'brands add --logo' measures its precision "
        "and recall on them.")
    review.add_argument("brand")
    review.add_argument("--database-url", default=config.database_url(),
                        help="SQLAlchemy URL (env DATABASE_URL)")
    review.add_argument("--out", type=Path, help="folder for the sheet (default review-NAME)")
    review.add_argument("--top", type=int, default=24, help="highest-scoring posts (default 24)")
    review.add_argument("--borderline", type=int, default=24,
                        help="posts scored nearest the threshold (default 24)")
    review.add_argument("--confirm", default="", metavar="IDS",
                        help="comma-separated post ids that show the brand's logo")
    review.add_argument("--reject", default="", metavar="IDS",
                        help="comma-separated post ids that do not")
    review.add_argument("--no-progress", action="store_true", help="no progress bar")
    commands.add_fetch_flags(review, fetch_workers=8)
    review.set_defaults(func=run_review)


@dataclass
class Feed:
    """Images fetched to calibrate on and to measure with, and what could not be fetched."""

    negatives: list[Path] = field(default_factory=list)
    positives: list[Path] = field(default_factory=list)  # confirmed by a person
    failed: dict[str, int] = field(default_factory=dict)


def run_add(args: argparse.Namespace) -> int:
    from analytics import cli as analytics_cli

    if not args.logo:
        stray = [flag for flag, value in (("--dry-run", args.dry_run),
                                          ("--backgrounds", args.backgrounds)) if value]
        if stray:
            raise WorkerError(f"{' and '.join(stray)} only go with --logo FILE")
        return analytics_cli.run_brands(args)
    from detector.onboard import check_brand_name

    brand = check_brand_name(args.brand.strip())
    try:
        return _onboard(args, brand)
    except OSError as exc:  # a read-only models folder, a full disk, a vanished work folder
        raise WorkerError(f"{exc.strerror or type(exc).__name__}: "
                          f"{exc.filename or config.first_line(exc)}") from None


def _onboard(args: argparse.Namespace, brand: str) -> int:
    started = time.perf_counter()
    if not args.model:
        raise WorkerError("--logo needs --model (or env LOGOWATCH_MODEL): the bundle the new "
                          "brand is added to")
    if not args.database_url:
        raise WorkerError("--logo needs --database-url (or env DATABASE_URL)")
    from detector.bundle import load_bundle
    from detector.onboard import load_logo

    base = load_bundle(args.model, embed=False)
    logos = [load_logo(p) for p in args.logo]
    work = (args.work_dir or commands.DEFAULT_STATE / "onboard" / brand).resolve()
    spec = _spec(args, brand)
    if args.dry_run:
        return _dry_run(args, brand, spec, base, work)

    _step(started, 1, f"catalogue: brand {brand} with aliases {_aliases(spec)}")
    _catalogue(args.database_url, spec)
    _step(started, 2, "feed: " + (f"images under {args.backgrounds}" if args.backgrounds else
                            f"up to {args.feed_images} recent posts' images, fetched again"))
    feed = (_folder_images(args.backgrounds) if args.backgrounds
            else _fetch_feed(args, brand, work))
    labelled = _fetch_labelled(args, brand, work)
    failed = Counter(feed.failed) + Counter(labelled.failed)
    skipped = ", ".join(f"{n} {why}" for why, n in sorted(failed.items()))
    print(f"  {len(feed.negatives)} feed images; from 'brands review': "
          f"{len(labelled.positives)} confirmed, {len(labelled.negatives)} rejected"
          + (f"; not fetched: {skipped}" if skipped else ""))
    _step(started, 3, f"calibrate: the silhouette of {len(logos)} logo file(s) searched for in "
             "every feed image")
    logo = _calibrate(args, brand, logos, feed.negatives)
    print(f"  threshold {logo.threshold:.2f} standard deviations above the feed's typical best "
          f"match: {logo.info['feed_above']} of {logo.info['feed_images']} feed images are "
          "above it. On real marks in photographs (bench.real_logos, 12 brands) this rule "
          "measured precision 1.00 (1.00-1.00 by brand) and recall 0.14 (0.03-0.35) "
          "(docs/benchmarks.md); your own posts are measured only by 'logowatch brands "
          f"review {brand}'")
    if labelled.positives or labelled.negatives:
        print(f"  on the posts a person reviewed: {_on_reviewed(logo, labelled)}")
    from detector.bundle import with_logo

    _step(started, 4, f"bundle: {brand} matched from its logo file, "
             f"{len(base.heads.without(brand).brands)} heads and the other logos unchanged")
    bundle_dir = _publish(with_logo(args.model, work / "bundle", brand, logo), Path(args.model))
    new = load_bundle(bundle_dir, embed=False)
    print(f"  bundle {new.version} in {bundle_dir}")
    _step(started, 5, "backfill: stored embeddings rescored, stored posts' images fetched "
             "again and matched")
    done = _backfill(args, new, brand)
    moved = _repoint(Path(args.model), bundle_dir)
    for images in ("feed", "labelled"):
        shutil.rmtree(work / images, ignore_errors=True)
    print(f"brands add {brand}: model {new.version}, {done} posts scored, brand pinned to it, "
          f"in {time.perf_counter() - started:.0f}s")
    if moved:
        print(f"  {args.model} now points to {bundle_dir.name}: restart the detectors to run "
              f"it, then 'logowatch rescore --model {args.model}' scores what they processed "
              "in between")
    else:
        print(f"  run the detectors with --model {bundle_dir}, then 'logowatch rescore --model "
              f"{bundle_dir}' scores what the old ones processed in between")
    return 0


def _decoded(path: Path) -> tuple[Any, tuple[int, int]]:
    """A file decoded as the worker decodes it before it matches logos, so that a threshold
    is set on the very pixels it is applied to (`detector.exemplar.decoded`)."""
    from detector.exemplar import decoded

    return decoded(path.read_bytes())


class _Images(Sequence[Any]):
    """Image files decoded on each access (`_decoded`): a feed of hundreds is read twice by
    `BrandLogo.calibrated` and need not be held in memory at full size."""

    def __init__(self, paths: list[Path]) -> None:
        self.paths = paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: Any) -> Any:
        return _decoded(self.paths[i])[0]


def _calibrate(args: argparse.Namespace, brand: str, logos: list[Any], feed: list[Path]) -> Any:
    from detector.exemplar import THRESHOLD_QUANTILE, BrandLogo
    from detector.progress import progress

    images = _Images(feed)  # each fetched or given file decoded once already, to vet it
    if len(images) < MIN_FEED:
        raise WorkerError(f"only {len(images)} images to calibrate the logo on (need "
                          f"{MIN_FEED} or more): process more posts first, or pass "
                          "--backgrounds DIR")
    try:
        logo, zs = BrandLogo.calibrated(
            logos, images, progress=lambda it, **kw: progress(
                it, total=len(images), enabled=not args.no_progress, **kw))
    except ValueError as exc:
        raise WorkerError(f"{brand}: {exc}") from None
    logo.info = {"feed_images": len(zs), "quantile": THRESHOLD_QUANTILE,
                 "feed_above": sum(z >= logo.threshold for z in zs),
                 "logo_sha256": [hashlib.sha256(p.read_bytes()).hexdigest() for p in args.logo]}
    return logo


def _on_reviewed(logo: Any, labelled: Feed) -> str:
    """Precision and recall at the threshold on the posts a person confirmed or rejected."""
    hit = {p: logo.find(_decoded(p)[0])[0] >= 0.5 for p in labelled.positives + labelled.negatives}
    tp = sum(hit[p] for p in labelled.positives)
    fp = sum(hit[p] for p in labelled.negatives)
    precision = f"{tp / (tp + fp):.2f}" if tp + fp else "n/a (nothing called present)"
    recall = f"{tp / len(labelled.positives):.2f}" if labelled.positives else "n/a"
    return (f"precision {precision}, recall {recall} ({tp} of {len(labelled.positives)} "
            f"confirmed and {fp} of {len(labelled.negatives)} rejected called present)")


def _aliases(spec: Any) -> str:
    shown = {"word": "{}", "hashtag": "#{}", "mention": "@{}"}
    return ", ".join(shown[kind].format(alias) for kind, alias in spec.aliases())


def _step(started: float, n: int, what: str) -> None:
    print(f"[{n}/5 {time.perf_counter() - started:5.0f}s] {what}", flush=True)


def _spec(args: argparse.Namespace, brand: str) -> Any:
    from analytics.catalogue import BrandSpec

    return BrandSpec(brand, args.display_name, args.word, args.hashtag, args.handle)


def _catalogue(database_url: str, spec: Any) -> None:
    from analytics import catalogue
    from analytics.db import transaction

    with transaction(database_url) as conn:
        catalogue.add(conn, spec)


FEED_SQL = """
SELECT p.post_id, p.image_url FROM posts p
WHERE p.image_status = 'ok'
  AND NOT EXISTS (SELECT 1 FROM brand_text_matches t
                  WHERE t.post_id = p.post_id AND t.brand = :brand)
  AND NOT EXISTS (SELECT 1 FROM brand_labels l WHERE l.post_id = p.post_id AND l.brand = :brand)
ORDER BY p.day DESC, p.post_id DESC
LIMIT :n
"""


def _dry_run(args: argparse.Namespace, brand: str, spec: Any, base: Any, work: Path) -> int:
    """What ``brands add`` would do, read in a transaction that is rolled back."""
    from sqlalchemy import text

    from analytics import catalogue
    from analytics.db import transaction

    with transaction(args.database_url, commit=False) as conn:
        catalogue.add(conn, spec)  # so the text matches below include the new aliases
        feed = conn.execute(text(FEED_SQL), {"brand": brand, "n": args.feed_images}).all()
        labels = conn.execute(text("SELECT present, count(*) FROM brand_labels WHERE "
                                   "brand = :b GROUP BY present"), {"b": brand}).all()
        stored = conn.execute(text("SELECT count(*) FROM embeddings WHERE backbone = :b"),
                              {"b": base.backbone_id}).scalar_one()
        posts = conn.execute(text("SELECT count(*) FROM posts WHERE image_status = 'ok'"),
                             ).scalar_one()
    confirmed = dict((bool(p), n) for p, n in labels)
    source = (f"the images under {args.backgrounds}" if args.backgrounds else
              f"{len(feed)} recent posts' images fetched again (posts naming {brand} excluded)")
    print(f"brands add {brand} --dry-run: nothing is changed\n"
          f"  1 catalogue: add {brand} with aliases {_aliases(spec)}\n"
          f"  2 feed: {source}; {confirmed.get(True, 0)} confirmed and "
          f"{confirmed.get(False, 0)} rejected posts from 'brands review'\n"
          f"  3 calibrate: {len(args.logo)} logo file(s) searched for in the feed (files in "
          f"{work})\n"
          f"  4 bundle: model {base.version} + {brand} matched from its logo file "
          f"({len(base.heads.without(brand).brands)} heads and {len(base.logos)} logos kept)\n"
          f"  5 backfill: rescore {stored} stored embeddings, fetch {posts} stored posts' "
          f"images again and match every logo, pin {brand}")
    return 0


def _folder_images(folder: Path) -> Feed:
    from detector.datasets import EXTENSIONS

    if not folder.is_dir():
        raise WorkerError(f"--backgrounds {folder}: not a folder")
    files = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in EXTENSIONS):
        try:
            _decoded(path)
        except Exception as exc:  # a file Pillow cannot read, or one the decoder refuses
            log.warning("%s: not used (%s)", path, config.first_line(exc))
        else:
            files.append(path)
    return Feed(negatives=files)


def _fetch_feed(args: argparse.Namespace, brand: str, work: Path) -> Feed:
    from sqlalchemy import text

    from analytics.db import transaction

    with transaction(args.database_url) as conn:
        rows = conn.execute(text(FEED_SQL), {"brand": brand, "n": args.feed_images}).all()
    fetched, failed = _fetch(args, [(r.post_id, r.image_url) for r in rows], work / "feed",
                             "feed")
    return Feed(negatives=list(fetched.values()), failed=failed)


def _fetch_labelled(args: argparse.Namespace, brand: str, work: Path) -> Feed:
    from sqlalchemy import text

    from analytics.db import transaction

    with transaction(args.database_url) as conn:
        rows = conn.execute(text(
            "SELECT l.post_id, l.present, p.image_url FROM brand_labels l JOIN posts p "
            "USING (post_id) WHERE l.brand = :b ORDER BY l.post_id"), {"b": brand}).all()
    if not rows:
        return Feed()
    present = {r.post_id: r.present for r in rows}
    fetched, failed = _fetch(args, [(r.post_id, r.image_url) for r in rows],
                             work / "labelled", "labelled posts")
    return Feed(negatives=[p for pid, p in fetched.items() if not present[pid]],
                positives=[p for pid, p in fetched.items() if present[pid]], failed=failed)


def _fetch(args: argparse.Namespace, items: list[tuple[str, str]], folder: Path,
           what: str) -> tuple[dict[str, Path], dict[str, int]]:
    """(post id → file of each image that could be fetched and decoded, as fetched; failures
    by kind); files already in ``folder`` (an earlier run) are not fetched again."""
    from detector.progress import progress
    from workers.fetch import Fetcher

    folder.mkdir(parents=True, exist_ok=True)
    try:
        fetcher = Fetcher(commands.fetch_config(args))
    except (OSError, ValueError) as exc:
        raise WorkerError(f"--allow-host: {exc}") from None

    def one(item: tuple[str, str]) -> Path | str:
        """The image's file, or why it could not be had."""
        post_id, url = item
        path = folder / (hashlib.sha1(post_id.encode()).hexdigest()[:16] + ".img")
        if not path.exists():
            try:
                _save_fetched(fetcher.fetch(url), path)
            except Exception as exc:  # a dead URL, a hostile server, an undecodable image
                log.debug("%s: %s", post_id, config.first_line(exc))
                return type(exc).__name__
        return path

    out: dict[str, Path] = {}
    errors: Counter[str] = Counter()
    try:
        with ThreadPoolExecutor(max_workers=args.fetch_workers) as pool:
            for (post_id, _), got in progress(zip(items, pool.map(one, items), strict=True),
                                              total=len(items), desc=f"fetch {what}",
                                              unit="img",
                                              enabled=not getattr(args, "no_progress", False)):
                if isinstance(got, Path):
                    out[post_id] = got
                else:
                    errors[got] += 1
    finally:
        fetcher.close()
    return out, dict(errors)


def _save_fetched(data: bytes, path: Path) -> None:
    """The image's bytes as fetched (atomically), once the worker's guarded decoder has read
    them: calibration and review then decode what the worker decodes (`_decoded`). A copy
    re-encoded smaller scored differently from the post the worker scores, so the feed's own
    images could land above the threshold set on them."""
    from detector.exemplar import decoded

    decoded(data)  # raises ImageError: the file is not kept
    tmp = path.with_suffix(".part")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _publish(trained: Path, model: Path) -> Path:
    """The trained bundle, copied next to the model as <models folder>/<version>."""
    from detector.bundle import read_metadata

    version = read_metadata(trained)["version"]
    target = model.parent / version
    if not (target / "bundle.json").exists():
        tmp = model.parent / f".{version}.part"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(trained, tmp)
        os.replace(tmp, target)
    return target


def _backfill(args: argparse.Namespace, bundle: Any, brand: str) -> int:
    from analytics import catalogue
    from analytics.db import transaction
    from logowatch.rescore import rematch, report, rescore

    done, _ = rescore(args.database_url, bundle, brands=bundle.heads.brands,
                      progress=not args.no_progress)
    result = rematch(args.database_url, bundle, brands=list(bundle.logos),
                     fetch=commands.fetch_config(args), workers=args.fetch_workers,
                     progress=not args.no_progress)
    report(result, list(bundle.logos), bundle)
    with transaction(args.database_url) as conn:
        catalogue.pin(conn, brand, bundle.version)
    return max(done, result[0] + result[1])


def _repoint(model: Path, bundle_dir: Path) -> bool:
    """Point the ``--model`` symlink at the new bundle (atomically); False if not a link."""
    if not model.is_symlink():
        return False
    tmp = model.with_name(f".{model.name}.new")
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(bundle_dir.name if bundle_dir.parent == model.parent else bundle_dir)
    os.replace(tmp, model)
    return True


def run_review(args: argparse.Namespace) -> int:
    """Record --confirm/--reject verdicts, then write the contact sheet."""
    from sqlalchemy import text

    from analytics.db import transaction

    if not args.database_url:
        raise WorkerError("needs --database-url (or env DATABASE_URL)")
    brand = args.brand.strip()
    verdicts = {**{p: False for p in _ids(args.reject)}, **{p: True for p in _ids(args.confirm)}}
    both = set(_ids(args.reject)) & set(_ids(args.confirm))
    if both:
        raise WorkerError(f"post(s) both confirmed and rejected: {', '.join(sorted(both))}")
    if verdicts:
        with transaction(args.database_url) as conn:
            known = {r[0] for r in conn.execute(text(
                "SELECT post_id FROM posts WHERE post_id = ANY(:ids)"), {"ids": list(verdicts)})}
            missing = sorted(set(verdicts) - known)
            if missing:
                raise WorkerError(f"no post(s) {', '.join(missing)} in the database")
            for post_id, present in verdicts.items():
                conn.execute(text(
                    "INSERT INTO brand_labels (post_id, brand, present) VALUES (:p, :b, :v) "
                    "ON CONFLICT (post_id, brand) DO UPDATE SET present = EXCLUDED.present, "
                    "labelled_at = now()"), {"p": post_id, "b": brand, "v": present})
        print(f"brands review {brand}: {sum(verdicts.values())} confirmed, "
              f"{len(verdicts) - sum(verdicts.values())} rejected; the next 'brands add "
              f"{brand} --logo ...' measures its precision and recall on them")
    with transaction(args.database_url) as conn:
        current = conn.execute(text(
            "SELECT model_version, threshold FROM brand_current_model WHERE brand = :b"),
            {"b": brand}).first()
        if current is None:
            raise WorkerError(f"no model detects {brand!r} (see: logowatch brands list)")
        picked = conn.execute(text(REVIEW_SQL), {
            "b": brand, "v": current.model_version, "t": current.threshold,
            "top": args.top, "near": args.borderline}).all()
    out = (args.out or Path(f"review-{brand}")).resolve()
    images, _ = _fetch(args, [(r.post_id, r.image_url) for r in picked], out / ".images",
                       "review")
    sheet = _contact_sheet(brand, current, picked, images, out)
    shutil.rmtree(out / ".images", ignore_errors=True)
    print(f"brands review {brand}: {len(images)} of {len(picked)} posts' images in {sheet} and "
          f"{out / 'index.html'}; record verdicts with --confirm ID,ID --reject ID,ID")
    return 0


REVIEW_SQL = """
(SELECT 'top' AS pick, d.post_id, d.score, d.present, d.region, p.image_url, p.caption,
        l.present AS label
 FROM detections d JOIN posts p USING (post_id)
 LEFT JOIN brand_labels l ON l.post_id = d.post_id AND l.brand = d.brand
 WHERE d.brand = :b AND d.model_version = :v
 ORDER BY d.score DESC, d.post_id LIMIT :top)
UNION ALL
(SELECT 'borderline', d.post_id, d.score, d.present, d.region, p.image_url, p.caption,
        l.present
 FROM detections d JOIN posts p USING (post_id)
 LEFT JOIN brand_labels l ON l.post_id = d.post_id AND l.brand = d.brand
 WHERE d.brand = :b AND d.model_version = :v AND l.post_id IS NULL
   AND d.post_id NOT IN (SELECT post_id FROM detections WHERE brand = :b AND model_version = :v
                         ORDER BY score DESC, post_id LIMIT :top)
 ORDER BY abs(d.score - :t), d.post_id LIMIT :near)
"""


def _ids(text: str) -> list[str]:
    return [p.strip() for p in text.split(",") if p.strip()]


def _contact_sheet(brand: str, current: Any, picked: list[Any],
                   images: dict[str, Path], out: Path) -> Path:
    """sheet.png (thumbnails with post id and score) and index.html (the same, with captions
    and the command that records verdicts)."""
    import base64
    import html

    from PIL import Image, ImageDraw

    cell, cols = 200, 6
    shown = [r for r in picked if r.post_id in images]
    rows_n = max(1, -(-len(shown) // cols))
    sheet = Image.new("RGB", (cols * cell, rows_n * (cell + 28)), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    cards = []
    for i, r in enumerate(shown):
        thumb, full = _decoded(images[r.post_id])
        thumb.thumbnail((cell - 8, cell - 8))
        x, y = (i % cols) * cell, (i // cols) * (cell + 28)
        colour = (0, 130, 0) if r.present else (160, 0, 0)
        if r.region and full:  # where the detection is: the mark's box, or the best tile
            k = thumb.width / full[0]
            x0, y0, x1, y1 = (round(v * k) for v in r.region)
            ImageDraw.Draw(thumb).rectangle((x0, y0, max(x0, x1 - 1), max(y0, y1 - 1)),
                                            outline=(255, 200, 0), width=2)
        sheet.paste(thumb, (x + 4, y + 4))
        draw.rectangle((x + 2, y + 2, x + cell - 3, y + cell - 3), outline=colour, width=2)
        draw.text((x + 4, y + cell + 2), f"{r.post_id[:26]}", fill=(0, 0, 0))
        draw.text((x + 4, y + cell + 14), f"{r.pick} {r.score:.3f}", fill=colour)
        buf = io.BytesIO()
        thumb.save(buf, "JPEG", quality=80)
        label = "" if r.label is None else (" (confirmed)" if r.label else " (rejected)")
        cards.append(
            f'<figure><img alt="post {html.escape(r.post_id)}" src="data:image/jpeg;base64,'
            f'{base64.b64encode(buf.getvalue()).decode()}"><figcaption><code>'
            f'{html.escape(r.post_id)}</code> {r.pick} {r.score:.3f}{label}<br>'
            f'{html.escape((r.caption or "")[:120])}</figcaption></figure>')
    out.mkdir(parents=True, exist_ok=True)
    sheet.save(out / "sheet.png")
    (out / "index.html").write_text(
        f"<!doctype html><meta charset=utf-8><title>review {html.escape(brand)}</title>"
        "<style>body{font:14px sans-serif;margin:1em}figure{display:inline-block;width:200px;"
        "margin:4px;vertical-align:top}img{max-width:196px}figcaption{overflow-wrap:anywhere}"
        "</style>"
        f"<h1>{html.escape(brand)}: model {html.escape(current.model_version)}, threshold "
        f"{current.threshold:.3f}</h1><p>Highest-scoring posts, then those nearest the "
        "threshold; a yellow box is where the detection is. Record what you see with "
        "<code>logowatch brands review "
        f"{html.escape(brand)} --confirm ID,ID --reject ID,ID</code>.</p>" + "".join(cards))
    return out / "sheet.png"
