"""``logowatch brands add NAME --logo FILE`` end to end: a worker has processed posts (with
tiles) against a real broker, Postgres and image server; the command onboards a new brand from
a logo file, and its rows are in ``brand_mentions`` for those posts, with the scores a fresh
worker running the new bundle gives them. The brand is matched from its logo file, which
needs no backbone: the one post that shows the logo is found, with its box. The tiny
random-weight bundle makes the heads' scores meaningless and the run fast."""

from __future__ import annotations

import io
import shutil
import threading
from contextlib import redirect_stdout
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.real_logos import iou
from tests.support.http_server import ImageServer
from tests.support.pipeline import post, produce, rows
from workers.fetch import FetchConfig
from workers.worker import Worker, WorkerConfig

pytestmark = pytest.mark.integration

BRAND = "initech"


def _worker(bootstrap: str, db: str, topic: str, bundle, server: ImageServer) -> Worker:  # type: ignore[no-untyped-def]
    return Worker(WorkerConfig(
        bootstrap=bootstrap, database_url=db, topic=topic, group=f"{topic}-g", batch_size=8,
        max_wait_ms=100, fetch_workers=4, once=True, commit_interval=0.2, tiles=bundle.tiles,
        fetch=FetchConfig(allow_hosts=[server.host], retries=0, read_timeout=3,
                          total_timeout=5)), bundle)


def _run(worker: Worker) -> None:
    thread = threading.Thread(target=worker.run)
    thread.start()
    thread.join(timeout=300)
    assert not thread.is_alive()


def _cli(*argv: str) -> tuple[int, str]:
    from logowatch.cli import main

    out = io.StringIO()
    with redirect_stdout(out):
        code = main(list(argv))
    return code, out.getvalue()


def _detections(db: str, version: str) -> dict[str, tuple[float, bool, object]]:
    found = rows(db, "SELECT post_id, score, present, region FROM detections "
                 "WHERE brand = :b AND model_version = :v", b=BRAND, v=version)
    return {p: (s, present, region) for p, s, present, region in found}


def _logo_file(folder: Path, brand: str) -> Path:
    """One colour over transparency, as brand marks are published (simple-icons): the
    matcher searches for the alpha's shape."""
    from PIL import Image

    from detector.synth import _style, draw_mark

    shape, colour = _style(brand)
    alpha = draw_mark(brand, shape, colour, 160).getchannel("A")
    mark = Image.new("RGBA", alpha.size, (*colour, 255))
    mark.putalpha(alpha)
    mark.save(folder / f"{brand}.png")
    return folder / f"{brand}.png"


@pytest.fixture(scope="module")
def logo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _logo_file(tmp_path_factory.mktemp("logo"), BRAND)


def _showing(body: bytes, logo: Path, box: tuple[int, int, int, int]) -> bytes:
    """The logo printed dark blue on a photo (grey matching cannot see a mark as bright as
    its surround: the brand's orange on this light paper; docs/detector.md)."""
    from PIL import Image

    with Image.open(io.BytesIO(body)) as im, Image.open(logo) as mark:
        img = im.convert("RGB")
        alpha = mark.getchannel("A")
        alpha = alpha.crop(alpha.getbbox()).resize((box[2] - box[0], box[3] - box[1]))
    img.paste((20, 30, 110), box, alpha)
    out = io.BytesIO()
    img.save(out, "JPEG", quality=90)
    return out.getvalue()


def test_brands_add_from_a_logo_backfills_history_with_a_fresh_workers_scores(
    bootstrap: str, migrated_db: str, topic: str, tiny_bundle: Path,
    image_server: ImageServer, synth_images: list[tuple[str, bytes]], logo: Path,
    tmp_path: Path,
) -> None:
    from detector.bundle import load_bundle

    models = tmp_path / "models"
    models.mkdir()
    first = load_bundle(tiny_bundle, embed=False)
    shutil.copytree(tiny_bundle, models / first.version)
    (models / "current").symlink_to(first.version)
    base = load_bundle(models / "current", batch_size=8)
    assert base.tiles is not None and BRAND not in base.brands

    records = []
    for i, (rel, body) in enumerate(synth_images[:32]):
        caption = f"new kit from #{BRAND}" if i % 8 == 0 else f"post {i}"
        records.append(post(f"o{i}", image_server.add(f"/o/{rel}", body), caption=caption))
    shown = (60, 30, 150, 120)  # the logo on a photo whose caption names the brand
    records.append(post("o32", image_server.add("/o/shows.jpg", _showing(
        synth_images[-1][1], logo, shown)), caption=f"#{BRAND} day"))
    produce(bootstrap, topic, records)
    _run(_worker(bootstrap, migrated_db, topic, base, image_server))
    assert rows(migrated_db, "SELECT count(*) FROM embeddings WHERE post_id LIKE 'o%' AND "
                "tiles IS NOT NULL") == [(33,)]

    psql_url = migrated_db.replace("postgresql+psycopg2://", "postgresql://")  # as psql takes it
    flags = ("--model", str(models / "current"), "--database-url", psql_url,
             "--allow-host", image_server.host, "--feed-images", "40",
             "--work-dir", str(tmp_path / "work"), "--no-progress")
    code, said = _cli("brands", "add", BRAND, "--logo", str(logo), "--dry-run", *flags)
    assert code == 0 and "nothing is changed" in said, said
    assert rows(migrated_db, "SELECT count(*) FROM brands WHERE brand = :b", b=BRAND) == [(0,)]

    code, said = _cli("brands", "add", BRAND, "--logo", str(logo), *flags)
    assert code == 0, said
    new = load_bundle(models / "current", batch_size=8)
    assert new.version != base.version and (models / "current").resolve().name == new.version
    assert new.brands == [*base.brands, BRAND] and list(new.logos) == [BRAND]
    assert new.heads.brands == base.heads.brands
    for b in base.brands:  # the other heads are untouched, so are their scores
        assert new.thresholds[b] == base.thresholds[b]
    # the brand's views use the new version (pinned), and its text aliases are catalogued
    assert rows(migrated_db, "SELECT model_version, pinned FROM brand_current_model "
                "WHERE brand = :b", b=BRAND) == [(new.version, True)]
    assert sorted(rows(migrated_db, "SELECT kind, alias FROM brand_aliases WHERE brand = :b",
                       b=BRAND)) == [("hashtag", BRAND), ("mention", BRAND), ("word", BRAND)]
    # the posts whose caption names the brand were no negatives, and are text hits now
    backfilled = _detections(migrated_db, new.version)
    assert {f"o{i}" for i in range(33)} <= backfilled.keys()
    score, present, region = backfilled["o32"]
    assert present and iou(region, shown) >= 0.5, backfilled["o32"]
    assert sum(p for _, p, _ in backfilled.values()) <= 3, backfilled  # few false alarms
    assert all(r is not None for _, _, r in backfilled.values())
    mentions = rows(migrated_db, "SELECT post_id, model_version, score, in_image FROM "
                    "brand_mentions WHERE brand = :b AND post_id LIKE 'o%'", b=BRAND)
    assert {p for p, *_ in mentions} >= {f"o{i}" for i in range(0, 32, 8)}
    for post_id, version, score, in_image in mentions:
        assert version == new.version
        assert score == backfilled[post_id][0] and in_image == backfilled[post_id][1]
    assert not [p for p in (tmp_path / "work").rglob("*")  # fetched images are not kept
                if p.suffix in (".img", ".jpg", ".part")]
    code, again = _cli("brands", "add", BRAND, "--logo", str(logo), *flags)  # idempotent
    assert code == 0 and f"model {new.version}" in again, again

    # a fresh worker running the new bundle on the same posts writes the same rows
    produce(bootstrap, f"{topic}-fresh", records)
    _run(_worker(bootstrap, migrated_db, f"{topic}-fresh", new, image_server))
    fresh = _detections(migrated_db, new.version)
    for post_id in (f"o{i}" for i in range(33)):
        score, present, region = fresh[post_id]
        assert abs(backfilled[post_id][0] - score) < 1e-6, post_id
        assert (backfilled[post_id][1], backfilled[post_id][2]) == (present, region), post_id

    # another brand from its logo: the first one's rows are copied to the newer version (the
    # same matcher), not matched again
    code, said = _cli("brands", "add", "hooli", "--logo", str(_logo_file(tmp_path, "hooli")),
                      *flags)
    assert code == 0, said
    newer = load_bundle(models / "current", embed=False)
    assert list(newer.logos) == [BRAND, "hooli"] and newer.version != new.version
    assert f"{len(fresh)} rows copied" in said, said
    assert _detections(migrated_db, newer.version) == fresh

    # review: verdicts go to brand_labels (the next brands add measures on them), the sheet
    # shows the top and borderline posts
    code, said = _cli("brands", "review", BRAND, "--database-url", psql_url,
                      "--allow-host", image_server.host, "--out", str(tmp_path / "review"),
                      "--top", "6", "--borderline", "6", "--confirm", "o0,o8",
                      "--reject", "o1", "--no-progress")
    assert code == 0, said
    assert sorted(rows(migrated_db, "SELECT post_id, present FROM brand_labels WHERE "
                       "brand = :b", b=BRAND)) == [("o0", True), ("o1", False), ("o8", True)]
    page = (tmp_path / "review" / "index.html").read_text()
    with Image.open(tmp_path / "review" / "sheet.png") as sheet:  # each match's box drawn
        yellow = (np.asarray(sheet.convert("RGB")) == (255, 200, 0)).all(axis=2)
    assert yellow.sum() > 12 * 40, "the sheet draws no detection boxes"
    assert page.count("<figure>") == 12 and "--confirm" in page
