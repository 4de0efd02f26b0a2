"""The realistic benchmark: real brand marks on real photographs (`bench.realistic`), test
photos and distractor brands that training never saw, two protocols, several seeds.

    PYTHONPATH=. python -m bench.real_logos --seeds 0,1,2 --out bench/results/real-logos.json \
        --chart bench/results/real-logos.png

Per seed: 4 target brands drawn from simple-icons (marks with enough ink to be a logo), a
training set as a user would gather it (50 photos per brand, 400 without any target brand,
folder labels only: no boxes) on the train side's photos and distractors, and a test set (40
photos per brand, 640 without; chance AP 0.05) on the test side's. The two sides share no
photo group, no distractor brand and no random stream.

(a) labelled photos: `logowatch train` with its defaults (`TrainConfig()`: heads, and each
    brand's mark mined from its photos, `detector.mining`, where it beats the head on
    validation), scored as the worker scores (a head: max over the whole image and its tiles
    when the bundle has tiles; a mined mark: `BrandLogo.find` on the image decoded at 800 px).
(b) logo file alone: each brand's mark in its colour as a 512 px transparent PNG,
    `build_training_set` over the training photos as an unlabelled feed, `train_brand` on
    (a)'s bundle as the base (so the taps were chosen with labelled photos: the one thing the
    base lends). This is what `logowatch brands add --logo` runs.

Reported per brand and as the mean: AP, precision and recall at the bundle's threshold,
precision at recall >= 0.8, small-mark AP (small positives against every negative) and
recall, and for true positives the share whose region overlaps the true mark at IoU >= 0.5.
A brand that nothing was called present for has no precision (it is left out of the mean,
not counted as 0); the pooled precision counts every brand's calls together.

`--tuning` runs protocol (c) on the training side alone, for choosing the matcher's constants
where no test photo is read (seeds 10 and 11 are the tuning seeds: no run reports them as
test numbers):

    PYTHONPATH=. python -m bench.real_logos --tuning --seeds 10,11 --out tuning.json

`--tuning --mined` does the same for (a)'s mined marks: mined from the first half as
`logowatch train` mines them, the second half scored as the worker scores (with the raw
scores, for choosing the mined threshold's rule offline).
"""

from __future__ import annotations

import argparse
import csv
import functools
import hashlib
import json
import os
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

import detector
from bench import machine
from bench import realistic as rl
from bench.quality import say

PER_BRAND_TRAIN, NEGATIVE_TRAIN = 50, 400
PER_BRAND_TEST, NEGATIVE_TEST = 40, 640


def pick_brands(all_brands: list[rl.Brand], seed: int, n: int = 4) -> list[rl.Brand]:
    """n brands whose mark is a logo at a glance: ink covers 12-75 % of its box and the box
    is at most 4:1 (not a thin rule or a filled square). Distractors are everything else."""
    rng = np.random.default_rng([seed, 7])
    out: list[rl.Brand] = []
    for i in rng.permutation(len(all_brands)):
        b = all_brands[int(i)]
        m = rl.mask(b, 64)
        if 0.12 <= float(m.mean()) <= 0.75 and max(m.shape) <= 4 * min(m.shape):
            out.append(b)
        if len(out) == n:
            return out
    raise SystemExit("not enough marks")


def build_side(out: Path, side: str, targets: list[rl.Brand], photos: list[rl.Photo],
               distractors: list[rl.Brand], seed: int, per_brand: int, negatives: int,
               boxes: bool) -> Path:
    """Writes out/<slug>/*.jpg, out/no-logo/*.jpg, the boxes in out/truth.csv and (with
    boxes, for the test side) out/manifest.csv, which training would read."""
    from PIL import Image

    done = out / "done.json"
    if done.is_file() and json.loads(done.read_text()).get("renderer") == rl.RENDERER:
        return out
    if out.is_dir():  # an older renderer's or an interrupted render: start clean
        shutil.rmtree(out)
    largest: dict[str, rl.Photo] = {}  # each group once, at its best resolution: a wallpaper
    for p in photos:                   # shipped in five sizes must not be drawn five times
        if p.side == side and (p.group not in largest or
                               p.path.stat().st_size > largest[p.group].path.stat().st_size):
            largest[p.group] = p
    pool = [largest[g] for g in sorted(largest)]
    masks: dict[str, np.ndarray] = {}
    decoded: dict[Path, Image.Image] = {}  # a side has a few dozen photos: decode each once

    def load(path: Path) -> Image.Image:
        if path not in decoded:
            with Image.open(path) as im:
                im.draft("RGB", (1600, 1600))
                img = im.convert("RGB")
            img.thumbnail((1600, 1600), Image.Resampling.LANCZOS)
            decoded[path] = img
        return decoded[path]

    def m(b: rl.Brand) -> np.ndarray:
        if b.slug not in masks:
            masks[b.slug] = rl.mask(b)
        return masks[b.slug]

    jobs = [(b, i) for b in targets for i in range(per_brand)] + [(None, i)
                                                                  for i in range(negatives)]
    rows = []
    stream = 0 if side == "train" else 1
    for k, (brand, _) in enumerate(jobs):
        rng = np.random.default_rng([seed, stream, k])
        photo = pool[int(rng.integers(len(pool)))]
        extra = [distractors[int(j)] for j in rng.integers(0, len(distractors),
                                                           int(rng.integers(0, 4)))]
        img = load(photo.path)
        small = bool(rng.random() < 0.5)
        data, size, box = rl.compose(img, (brand, m(brand)) if brand else None,
                                     [(d, m(d)) for d in extra], rng, small)
        folder = brand.slug if brand else "no-logo"
        group = hashlib.sha1(photo.group.encode()).hexdigest()[:12]
        rel = f"{folder}/{group}_nohash_s{seed}-{k:05d}.jpg"
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / rel).write_bytes(data)
        if brand is not None:
            is_small = box is not None and max(box[2] - box[0], box[3] - box[1]) < \
                rl.SMALL * max(size)
            rows.append({"file": rel, "brands": brand.slug,
                         "boxes": json.dumps([list(box)] if box else []),
                         "small": int(is_small)})
        else:
            rows.append({"file": rel, "brands": "", "boxes": "[]", "small": 0})
        if k % 100 == 99:
            say(f"[real-logos] {side} seed {seed}: {k + 1}/{len(jobs)} images")
    for name in ("truth.csv", "manifest.csv") if boxes else ("truth.csv",):
        with (out / name).open("w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=["file", "brands", "boxes", "small"])
            w.writeheader()
            w.writerows(rows)
    done.write_text(json.dumps({"images": len(rows), "renderer": rl.RENDERER}))
    return out


def iou(a: tuple[int, ...], b: tuple[int, ...]) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def logo_measures(rows: list[Any], brand: str, found: list[Any], thr: float,
                  ) -> tuple[dict[str, Any], np.ndarray, np.ndarray, np.ndarray]:
    """A logo brand's `measures` over rows (anything with .brands, .small and .boxes) from
    its (score, box) on each (None: no match), with the labels, scores and small positives
    they came from."""
    y = np.array([brand in r.brands for r in rows])
    s = np.array([-np.inf if f is None else f[0] for f in found])
    small = np.array([r.small for r in rows]) & y
    hits = [iou(f[1], r.boxes[0]) >= 0.5 for r, f, yy in zip(rows, found, y, strict=True)
            if yy and f is not None and f[0] >= thr and f[1] is not None and r.boxes]
    return measures(y, s, small, thr, hits), y, s, small


def _logo_found(job: tuple[str, Any, list[Path]]) -> list[Any]:
    """One logo brand's (score, box) on each image, as the worker finds them (a process)."""
    from detector.exemplar import find_all
    from detector.preprocess import DEFAULT_MAX_PIXELS

    brand, logo, images = job
    return [find_all({brand: logo}, p.read_bytes(), DEFAULT_MAX_PIXELS)[brand] for p in images]


def logos_found(logos: dict[str, Any], images: list[Path], workers: int,
                ) -> dict[str, list[Any]]:
    """{brand: its (score, box) on each image} for every `BrandLogo`, a brand per process
    (started afresh: the caller may hold TensorFlow's threads, which a fork would copy)."""
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    if not logos:
        return {}
    with ProcessPoolExecutor(max(1, min(workers, len(logos))),
                             mp_context=multiprocessing.get_context("spawn")) as pool:
        return dict(zip(logos, pool.map(_logo_found, [(b, lg, images)
                                                       for b, lg in logos.items()]),
                        strict=True))


def score_test(bundle_path: Path, test_dir: Path, cache: Path, workers: int = 1,
               ) -> dict[str, Any]:
    """Scores and regions of every test image as the worker computes them: each head's per
    view, each logo brand's (score, box) in "found"."""
    from detector.bundle import load_bundle
    from detector.datasets import BottleneckCache, image_size, list_examples
    from detector.train import gather

    b = load_bundle(bundle_path)
    examples, _ = list_examples(test_dir, validation_pct=0.0, test_pct=100.0)
    views: list[np.ndarray] = []
    if b.heads.brands:  # a bundle of logo brands alone needs no embedding
        feats = gather(examples, b.backbone, BottleneckCache.for_backbone(cache, b.backbone),
                       tiles=b.tiles)
        examples = feats.examples  # gather leaves out unreadable files
        for n in range(len(examples)):
            emb = feats.whole[n:n + 1]
            if b.tiles is not None and feats.tiles is not None:
                emb = np.concatenate([emb, feats.tiles[n]])
            views.append(b.score(emb))
    found = logos_found(b.logos, [e.path for e in examples], workers)
    return {"bundle": b, "examples": examples, "views": views, "found": found,
            "sizes": [image_size(e.path) for e in examples]}


def measures(y: np.ndarray, s: np.ndarray, small: np.ndarray, thr: float,
             hits: list[bool]) -> dict[str, Any]:
    """The benchmark's measures of one brand: labels y, scores s, small positives, the
    threshold, and for each true positive whether its region hit the true box."""
    from detector.metrics import at_threshold, average_precision, precision_at_recall

    sub = small | ~y
    at = at_threshold(y, s, thr)
    if at["tp"] + at["fp"] == 0:  # nothing called present: precision is undefined, not 0
        at["precision"] = None
    return {"average_precision": average_precision(y, s), **at,
            "precision_at_recall_0.8": precision_at_recall(y, s, 0.8),
            "small_ap": average_precision(y[sub], s[sub]),
            "small_recall": at_threshold(y[sub], s[sub], thr)["recall"],
            "region_iou_0.5": float(np.mean(hits)) if hits else None,
            "positives": int(y.sum()), "small_positives": int(small.sum())}


def metrics(scored: dict[str, Any], brand: str) -> dict[str, Any]:
    """One brand's measures at its threshold in the bundle, from its head or its logo."""
    ex, b = scored["examples"], scored["bundle"]
    if brand in scored["found"]:
        thr = 0.5  # a logo brand's score is centred on its threshold
        return {**logo_measures(ex, brand, scored["found"][brand], thr)[0],
                "matched_mark": True}
    y = np.array([brand in e.brands for e in ex])
    small = np.array([e.small for e in ex]) & y
    thr, j = b.thresholds[brand], b.brands.index(brand)
    s = np.array([v[:, j].max() for v in scored["views"]])
    spec = b.tiles
    hits = []
    for n, e in enumerate(ex):
        if not (y[n] and s[n] >= thr and e.boxes):
            continue
        w, h = scored["sizes"][n]
        boxes = [(0, 0, w, h), *(spec.boxes(w, h) if spec is not None else [])]
        best = boxes[int(scored["views"][n][:, j].argmax())]
        hits.append(iou(best, e.boxes[0]) >= 0.5)
    return measures(y, s, small, thr, hits)


THRESHOLD_IMAGES = 200  # feed images searched for protocol (c)'s threshold
CALIBRATION_IMAGES = 300  # feed images protocol (c) calibrates on


def _rgb(path: Path) -> Any:
    from PIL import Image

    with Image.open(path) as im:
        return im.convert("RGB")


def _threshold_feed(feed: list[Path]) -> list[Path]:
    return feed[::max(1, len(feed) // THRESHOLD_IMAGES)]


def _search_all(job: tuple[Path, list[Path], list[Path]]) -> tuple[list[float], list[Any]]:
    """(c) for one brand: calibrate on the feed, then search every test image (a process)."""
    from detector.exemplar import Exemplar, silhouette
    from detector.onboard import load_logo

    logo, feed, test = job
    ex = Exemplar(silhouette(load_logo(logo)))
    for i in range(0, len(feed), 100):  # calibrate in pieces: a feed need not fit in memory
        ex.calibrate_more([_rgb(p) for p in feed[i:i + 100]])
    # the threshold comes from the same search the test images get (refined), over a part
    feed_scores = [m.score for p in _threshold_feed(feed) if (m := ex.search(_rgb(p))) is not None]
    out = []
    for path in test:
        m = ex.search(_rgb(path))
        out.append(None if m is None else (m.score, m.box))
    return feed_scores, out


def exemplar_protocol(work: Path, targets: list[rl.Brand], feed: list[Path], eval_dir: Path,
                      rows: list[Any], workers: int, raw: bool = False) -> dict[str, Any]:
    """(c) logo file alone, no training: `detector.exemplar` calibrated on feed (an unlabelled
    feed the brand is in some of), its threshold the product's rule over the feed's scores;
    scored on rows (of eval_dir) with the matcher's own box. With raw, each brand's scores
    (feed and evaluated, with their labels) are kept for choosing a rule offline."""
    from concurrent.futures import ProcessPoolExecutor

    from detector.exemplar import threshold_of

    jobs = [(rl.logo_file(x, work / f"{x.slug}.png"), feed, [eval_dir / r.file for r in rows])
            for x in targets]
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_search_all, jobs))
    res = {}
    for x, (feed_scores, found) in zip(targets, results, strict=True):
        thr = threshold_of(feed_scores)  # the product's rule
        m, y, s, small = logo_measures(rows, x.slug, found, thr)
        res[x.slug] = {**m, "threshold": thr}
        if raw:
            in_feed = [p.parent.name == x.slug for p in _threshold_feed(feed)]
            res[x.slug]["raw"] = {"feed": feed_scores, "feed_brand": in_feed,
                                  "scores": s.tolist(), "labels": y.tolist(),
                                  "small": small.tolist()}
    return res


def _feed(train_dir: Path) -> list[Path]:
    feed = sorted(train_dir.rglob("*.jpg"))
    return [feed[i] for i in np.random.default_rng(0).permutation(len(feed))[:CALIBRATION_IMAGES]]


def tuning_seed(args: argparse.Namespace, seed: int, photos: list[rl.Photo],
                all_brands: list[rl.Brand]) -> dict[str, Any]:
    """Protocol (c) on a training side alone, for choosing the matcher's constants and its
    threshold rule where no test photo is read: use seeds no benchmark run tests (10, 11).
    The side's images are halved by source photo, as the two sides are: the images drawn on
    half of the side's photo groups are the feed (the brand in about 8 % of it, as in (c)),
    the rest are scored (about 25 a brand against 275), so no scored image shares a photo
    with the feed. They rank variants; they are not test numbers."""
    from detector.datasets import group_of
    from detector.synth import read_manifest

    work = Path(args.work) / f"seed{seed}"
    targets = pick_brands(all_brands, seed)
    slugs = {b.slug for b in targets}
    others = [b for b in all_brands if b.slug not in slugs and
              rl.distractor_side(b.slug) == "train"]
    say(f"[real-logos] tuning seed {seed}: brands {', '.join(b.title for b in targets)}")
    t = time.time()
    n = args.scale
    train_dir = build_side(work / "train", "train", targets, photos, others, seed,
                           round(PER_BRAND_TRAIN * n), round(NEGATIVE_TRAIN * n), boxes=False)
    rows = read_manifest(train_dir / "truth.csv")
    group = {r.file: group_of(Path(r.file).name) for r in rows}  # the source photo's
    groups = sorted(set(group.values()))
    order = np.random.default_rng([seed, 99]).permutation(len(groups))
    in_feed = {groups[int(i)] for i in order[:len(groups) // 2]}
    feed = [train_dir / r.file for r in rows if group[r.file] in in_feed]
    scored = [r for r in rows if group[r.file] not in in_feed]
    res: dict[str, Any] = {"brands": [b.slug for b in targets], "tuning": True, "protocols": {}}
    if args.mined:
        res["protocols"]["labelled_photos_mined"] = mined_tuning(
            work / "tuning-feed", train_dir, feed, scored, [b.slug for b in targets], seed,
            args.workers)
    else:
        res["protocols"]["logo_file_exemplar"] = exemplar_protocol(
            work, targets, feed, train_dir, scored, args.workers, raw=True)
    res["seconds"] = {"tuning": round(time.time() - t, 1)}
    return res


def mined_tuning(root: Path, train_dir: Path, feed: list[Path], rows: list[Any],
                 brands: list[str], seed: int, workers: int) -> dict[str, Any]:
    """(a)'s marks mined from the feed half as `logowatch train` mines them (its own
    train/validation split of the half; every mark replaces its head), then every scored
    image searched as the worker searches. Raw: the mined report (its negatives' scores) and
    the scored images' scores, labels and sizes, for choosing the mined threshold offline."""
    from detector.datasets import list_examples
    from detector.mining import jobs_for, logos_from_photos

    if root.is_dir():
        shutil.rmtree(root)
    for p in feed:  # the half as a user's folder: links, same names (the split hashes them)
        (root / p.parent.name).mkdir(parents=True, exist_ok=True)
        (root / p.parent.name / p.name).symlink_to(p.resolve())
    examples, _ = list_examples(root)
    mined = logos_from_photos(jobs_for([e for e in examples if e.split == "train"],
                                       [e for e in examples if e.split == "validation"],
                                       brands, {}, seed), workers=workers)
    found = logos_found({b: logo for b, (logo, _) in mined.items() if logo is not None},
                        [train_dir / r.file for r in rows], workers)
    out = {}
    for b, (logo, rep) in mined.items():
        if logo is not None:  # what was mined, to look at beside the brand's true mark
            from PIL import Image

            Image.fromarray((logo.exemplars[0].mask * 255).astype(np.uint8)).save(
                root.parent / f"tuning-mark-{b}.png")
        m, y, s, small = logo_measures(rows, b, found.get(b) or [None] * len(rows), 0.5)
        out[b] = {**m, "threshold": 0.5, "report": rep,
                  "raw": {"scores": s.tolist(), "labels": y.tolist(), "small": small.tolist()}}
    return out


@functools.cache
def trained_by() -> str:
    """A digest of the `detector` package's source: a bundle a run trained is reused by a
    later run (an interrupted one resumes) only where the code that trains it is the same."""
    h = hashlib.sha256()
    for p in sorted(Path(detector.__file__).parent.glob("*.py")):
        h.update(p.name.encode() + b"\0" + p.read_bytes())
    return h.hexdigest()[:12]


def labelled_bundle(work: Path) -> Path:
    """Where a seed's protocol (a) bundle is (`trained_by`: one per version of the code)."""
    return work / f"bundle-labelled-{trained_by()}"


def run_seed(args: argparse.Namespace, seed: int, photos: list[rl.Photo],
             all_brands: list[rl.Brand]) -> dict[str, Any]:
    from detector.onboard import build_training_set, load_logo, train_brand
    from detector.synth import read_manifest
    from detector.train import TrainConfig, train_bundle

    work = Path(args.work) / f"seed{seed}"
    cache = Path(args.work) / "bottlenecks"
    targets = pick_brands(all_brands, seed)
    slugs = {b.slug for b in targets}
    others = [b for b in all_brands if b.slug not in slugs]
    say(f"[real-logos] seed {seed}: brands {', '.join(b.title for b in targets)}")
    timings: dict[str, float] = {}
    t = time.time()
    n = args.scale
    train_dir = build_side(work / "train", "train", targets, photos,
                           [b for b in others if rl.distractor_side(b.slug) == "train"], seed,
                           round(PER_BRAND_TRAIN * n), round(NEGATIVE_TRAIN * n), boxes=False)
    test_dir = build_side(work / "test", "test", targets, photos,
                          [b for b in others if rl.distractor_side(b.slug) == "test"], seed,
                          round(PER_BRAND_TEST * n), round(NEGATIVE_TEST * n), boxes=True)
    timings["render"] = round(time.time() - t, 1)
    res: dict[str, Any] = {"brands": [b.slug for b in targets], "protocols": {}}
    if args.exemplar:
        t = time.time()
        res["protocols"]["logo_file_exemplar"] = exemplar_protocol(
            work, targets, _feed(train_dir), test_dir, read_manifest(test_dir), args.workers)
        timings["logo_file_exemplar_all_brands"] = round(time.time() - t, 1)
        if args.exemplar_only:
            res["seconds"] = timings
            return res
    t = time.time()
    bundle_a = labelled_bundle(work)
    if not (bundle_a / "bundle.json").is_file():
        train_bundle(train_dir, bundle_a, config=TrainConfig(), cache_dir=cache, seed=seed)
    timings["train_labelled"] = round(time.time() - t, 1)
    scored = score_test(bundle_a, test_dir, cache, args.workers)
    res["protocols"]["labelled_photos"] = {x.slug: metrics(scored, x.slug) for x in targets}
    res["taps"] = scored["bundle"].metadata["backbone"].get("taps")
    res["labelled_validation"] = scored["bundle"].metadata["metrics"]["validation"]
    if not args.skip_logo:
        feed = sorted(p for p in train_dir.rglob("*.jpg"))
        res["protocols"]["logo_file"] = {}
        t = time.time()
        for x in targets:
            onb, out = work / f"onboard-{x.slug}", work / f"bundle-logo-{x.slug}-{trained_by()}"
            logo = load_logo(rl.logo_file(x, work / f"{x.slug}.png"))
            if not (out / "bundle.json").is_file():
                build_training_set(onb, x.slug, [logo], feed, seed=seed,
                                   n_positives=args.positives)
                _, report = train_brand(onb, bundle_a, out, x.slug, cache_dir=cache, seed=seed)
                (out / "onboard-report.json").write_text(json.dumps(report, indent=2))
            report = json.loads((out / "onboard-report.json").read_text())
            sc = score_test(out, test_dir, cache, args.workers)
            m = metrics(sc, x.slug)
            m["printed_validation_precision"] = report.get("validation_precision")
            m["printed_validation_recall"] = report.get("validation_recall")
            res["protocols"]["logo_file"][x.slug] = m
        timings["logo_file_all_brands"] = round(time.time() - t, 1)
    res["seconds"] = timings
    return res


MEASURES = ("average_precision", "precision", "recall", "precision_at_recall_0.8", "small_ap",
            "small_recall", "region_iou_0.5")


def summary(seeds: dict[str, Any]) -> dict[str, Any]:
    """Mean over brands per seed, then mean and range over seeds, per protocol."""
    out: dict[str, Any] = {}
    protocols = {p for r in seeds.values() for p in r["protocols"]}
    for p in sorted(protocols):
        per_seed = []
        for r in seeds.values():
            if p not in r["protocols"]:
                continue
            rows = list(r["protocols"][p].values())
            per_seed.append({k: float(np.mean([x[k] for x in rows if x[k] is not None]))
                             if any(x[k] is not None for x in rows) else None
                             for k in MEASURES})
            called = sum(x["tp"] + x["fp"] for x in rows)  # every brand's calls together
            per_seed[-1]["pooled_precision"] = (sum(x["tp"] for x in rows) / called
                                                if called else None)
        out[p] = {k: {"mean": float(np.mean([s[k] for s in per_seed if s[k] is not None])),
                      "min": float(np.min([s[k] for s in per_seed if s[k] is not None])),
                      "max": float(np.max([s[k] for s in per_seed if s[k] is not None]))}
                  for k in (*MEASURES, "pooled_precision")
                  if any(s[k] is not None for s in per_seed)}
    return out


def table(res: dict[str, Any]) -> str:
    rows = ["| protocol | AP | precision | recall | P at R>=0.8 | small AP | small recall | "
            "region IoU>=0.5 | pooled precision |", "|---|---|---|---|---|---|---|---|---|"]
    for p, m in res["summary"].items():
        cells = [f"{m[k]['mean']:.2f} ({m[k]['min']:.2f}-{m[k]['max']:.2f})" if k in m else "–"
                 for k in (*MEASURES, "pooled_precision")]
        rows.append(f"| {p.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(rows)


def chart(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    protocols = list(res["summary"])
    fig, axes = plt.subplots(1, len(protocols), figsize=(5 * len(protocols), 3.6), squeeze=False)
    for ax, p in zip(axes[0], protocols, strict=True):
        for seed, r in res["seeds"].items():
            for slug, m in r["protocols"].get(p, {}).items():
                ax.bar(f"{slug[:10]}\ns{seed}", m["average_precision"], color="tab:blue")
        ax.axhline(0.05, color="grey", ls="--", lw=1, label="chance")
        ax.set(ylim=(0, 1), ylabel="test AP", title=p.replace("_", " "))
        ax.tick_params(axis="x", labelsize=7, labelrotation=70)
        ax.legend(loc="upper right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def marks_sheet(work: Path, res: dict[str, Any], all_brands: list[rl.Brand], path: Path,
                px: int = 160) -> None:
    """Protocol (a)'s marks: per seed and brand, the brand's true mark, the photo crop
    `logowatch train` mined it from, the silhouette it kept (or "head kept") and the second
    one where it kept two, so a reader sees what the labels alone gave the matcher."""
    from PIL import Image, ImageDraw

    from detector.bundle import load_bundle

    by_slug = {b.slug: b for b in all_brands}
    tiles: list[list[Image.Image]] = []
    for seed, r in res["seeds"].items():
        bundle_dir = labelled_bundle(work / f"seed{seed}")
        if not (bundle_dir / "bundle.json").is_file():
            continue
        b = load_bundle(bundle_dir, embed=False)
        for slug in r["brands"]:
            truth = Image.fromarray((rl.mask(by_slug[slug], px) * 255).astype(np.uint8))
            row = [truth.convert("RGB")]
            if slug in b.logos:
                info = b.logos[slug].info
                with Image.open(info["mined_from"]) as im:
                    photo = im.convert("RGB")
                photo.thumbnail((800, 800))
                row.append(photo.crop(tuple(info["box"])))
                row += [Image.fromarray((e.mask * 255).astype(np.uint8)).convert("RGB")
                        for e in b.logos[slug].exemplars[:2]]
            else:
                row.append(Image.new("RGB", (px, px), "white"))
                row.append(Image.new("RGB", (px, px), "white"))
                ImageDraw.Draw(row[-1]).text((8, px // 2), "head kept", fill="black")
            row += [Image.new("RGB", (px, px), "white")] * (4 - len(row))  # no second mark
            for i, t in enumerate(row):
                t = t.copy()
                t.thumbnail((px - 8, px - 8))
                cell = Image.new("RGB", (px, px), (235, 235, 235))
                cell.paste(t, ((px - t.width) // 2, (px - t.height) // 2))
                ImageDraw.Draw(cell).text((4, 2), f"s{seed} {slug[:14]}" if i == 0 else "",
                                          fill="red")
                row[i] = cell
            tiles.append(row)
    out = Image.new("RGB", (4 * px, px * max(1, len(tiles))), "white")
    for y, row in enumerate(tiles):
        for x, t in enumerate(row):
            out.paste(t, (x * px, y * px))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.save(path)


def sheet(test_dir: Path, path: Path, per_row: int = 6, px: int = 220) -> None:
    """A contact sheet of test images: the first positives of each brand (their true box in
    red) and some negatives, so a reader sees what the benchmark asks."""
    from PIL import Image, ImageDraw

    from detector.synth import read_manifest

    rows = read_manifest(test_dir)
    brands = sorted({b for r in rows for b in r.brands})
    picks = [r for b in brands for r in [x for x in rows if b in x.brands][:per_row]]
    picks += [r for r in rows if not r.brands][:per_row]
    out = Image.new("RGB", (per_row * px, -(-len(picks) // per_row) * px), (255, 255, 255))
    for i, r in enumerate(picks):
        img = Image.open(test_dir / r.file).convert("RGB")
        for box in r.boxes:
            ImageDraw.Draw(img).rectangle(box, outline=(255, 0, 0), width=4)
        img.thumbnail((px - 6, px - 6))
        out.paste(img, ((i % per_row) * px + 3, (i // per_row) * px + 3))
    path.parent.mkdir(parents=True, exist_ok=True)
    out.quantize(256).save(path, optimize=True)  # a palette: a quarter of the bytes in git


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", default="0,1,2", help="comma-separated seeds (brands, renders)")
    p.add_argument("--work", default=".logowatch/bench-real-logos",
                   help="sources, data sets, bundles and bottleneck cache, reused across runs")
    p.add_argument("--cache", default=None,
                   help="where the marks and photos are unpacked (default: under --work)")
    p.add_argument("--skip-logo", action="store_true", help="protocol (a) only")
    p.add_argument("--scale", type=float, default=1.0,
                   help="multiplies every image count (0.1 for a quick check of the harness)")
    p.add_argument("--positives", type=int, default=300,
                   help="renders per brand for protocol (b) (build_training_set's default)")
    p.add_argument("--exemplar", action=argparse.BooleanOptionalAction, default=True,
                   help="protocol (c): the logo file matched by detector.exemplar, no training")
    p.add_argument("--exemplar-only", action="store_true", help="protocol (c) only")
    p.add_argument("--tuning", action="store_true",
                   help="protocol (c) on the training side alone, halved into feed and scored "
                        "photos, with the raw scores: for choosing constants (seeds 10, 11)")
    p.add_argument("--mined", action="store_true",
                   help="with --tuning: protocol (a)'s mined marks instead of (c)")
    p.add_argument("--orient-weight", type=float, default=None,
                   help="a variant of detector.exemplar.ORIENT_WEIGHT, for tuning")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="processes for protocol (c) (one brand each)")
    p.add_argument("--out", default=None, help="write the JSON result here")
    p.add_argument("--chart", default=None, help="write the per-brand AP chart here (PNG)")
    p.add_argument("--marks-sheet", default=None,
                   help="write protocol (a)'s mined marks beside the true ones here (PNG)")
    p.add_argument("--sheet", default=None,
                   help="write a contact sheet of the first seed's test images here (PNG)")
    args = p.parse_args(argv)
    try:
        seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError:
        p.error(f"--seeds: comma-separated integers, got {args.seeds!r}")
    if args.orient_weight is not None:  # read at call time; the worker processes fork after
        import detector.exemplar

        detector.exemplar.ORIENT_WEIGHT = args.orient_weight
    cache = Path(args.cache or Path(args.work) / "sources")
    t0 = time.time()
    marks = rl.fetch_marks(cache)
    photos = rl.photo_groups(rl.fetch_photos(cache))
    all_brands = rl.brands(marks)
    groups = {(ph.group, ph.side) for ph in photos}
    setup = {"photos": len(photos), "photo_groups": len(groups),
             "test_groups": sum(s == "test" for _, s in groups),
             "marks": len(all_brands), "simple_icons": rl.SIMPLE_ICONS[:2],
             "photo_packages": rl.PHOTO_PACKAGES, "test_pct": rl.TEST_PCT}
    say(f"[real-logos] {setup['photos']} photos in {setup['photo_groups']} groups "
        f"({setup['test_groups']} on the test side), {setup['marks']} marks")
    # the machine too: mining's marks, and so a brand's number, can differ from one CPU to
    # another (docs/benchmarks.md, "mining made deterministic")
    res: dict[str, Any] = {"setup": setup, "machine": machine.describe(), "seeds": {}}
    for seed in seeds:
        res["seeds"][str(seed)] = (tuning_seed if args.tuning else run_seed)(
            args, seed, photos, all_brands)
        res["summary"] = summary(res["seeds"])
        if args.out:
            Path(args.out).parent.mkdir(parents=True, exist_ok=True)
            Path(args.out).write_text(json.dumps(res, indent=2, default=str) + "\n")
    res["seconds"] = round(time.time() - t0, 1)
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2, default=str) + "\n")
    if args.chart:
        chart(res, Path(args.chart))
    if args.marks_sheet:
        marks_sheet(Path(args.work), res, all_brands, Path(args.marks_sheet))
    if args.sheet:
        sheet(Path(args.work) / f"seed{seeds[0]}" / "test", Path(args.sheet))
    print(table(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
