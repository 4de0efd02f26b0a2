"""Onboarding benchmark: a brand's head from its flat logo file + an unlabelled feed, next to
the same brand's head trained from labelled photos.

    PYTHONPATH=. python -m bench.onboard --out bench/results/onboard.json

1. Labelled synthetic photos (`detector.synth`, seed 0) of acme, globex and initech, split by
   name hash 45 / 20 / 35 as in `bench.quality`. A base bundle (acme, globex) is trained on
   the train + validation images that do not show initech (it never sees the new brand),
   with `bench.quality`'s recipe on imported weights.
2. From logo only: `draw_mark("initech", ...)` on a plain white background saved as PNG (no
   alpha: `load_logo` keys the border colour) + an unlabelled feed (`detector.synth` with
   another seed, some images showing initech, acme or globex: nobody labelled them) →
   `build_training_set` → `train_brand` on the base bundle (which trains twice: the second
   time without the feed images the first head finds the brand in). An ablation row keeps
   the whole feed as negatives.
3. From labelled photos: `train_bundle(base_bundle=..., brands=["initech"])` on the labelled
   train + validation split.
Both are scored on the labelled set's test split (other brands' logos in it are negatives),
on the whole image and as the max over the whole image and 2x2 tiles.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import say
from detector.datasets import BottleneckCache, list_examples
from detector.metrics import at_threshold, average_precision, pr_curve, precision_at_recall
from detector.preprocess import TileSpec
from detector.synth import _STYLES, draw_mark, generate, read_manifest, write_manifest
from detector.train import TrainConfig, gather, image_scores, labels, train_bundle

BASE_BRANDS, BRAND = ("acme", "globex"), "initech"
TAPS = ("mixed0:max", "mixed1:max")  # what bench.quality chose on the imported weights
VAL_PCT, TEST_PCT = 20.0, 35.0


def without_brand(data: Path, out: Path, brand: str) -> Path:
    """A view of `data` (symlinks) without any image that shows `brand`."""
    rows = [r for r in read_manifest(data) if brand not in r.brands]
    for r in rows:
        link = out / r.file
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to((data / r.file).resolve())
    (out / "no-logo").mkdir(parents=True, exist_ok=True)
    write_manifest(out / "manifest.csv", rows)
    return out


def flat_logo(path: Path) -> Path:
    """The brand's flat logo as a designer would send it: the mark on white, a PNG."""
    from PIL import Image

    mark = draw_mark(BRAND, *_STYLES[BRAND], 400)
    flat = Image.new("RGB", (mark.width + 40, mark.height + 40), (255, 255, 255))
    flat.paste(mark, (20, 20), mark)
    flat.save(path, "PNG")
    return path


def run(args: argparse.Namespace) -> dict[str, Any]:
    from detector.bundle import load_bundle
    from detector.onboard import build_training_set, load_logo, train_brand

    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    cache = work / "bottlenecks"
    t0 = time.time()
    labelled, feed_dir = work / "labelled", work / "feed"
    if not (labelled / "manifest.csv").is_file():
        generate(labelled, n_images=args.labelled, brands=(*BASE_BRANDS, BRAND),
                 logo_fraction=args.logo_fraction, seed=args.seed)
    if not (feed_dir / "manifest.csv").is_file():
        generate(feed_dir, n_images=args.feed, brands=(*BASE_BRANDS, BRAND),
                 logo_fraction=args.logo_fraction, seed=args.seed + 100)
    cfg = TrainConfig(augment=args.augment, tiles=TileSpec(2, 0.25), validation_pct=VAL_PCT,
                      test_pct=TEST_PCT, seed=args.seed, search=True, taps=TAPS)
    timings: dict[str, float] = {}

    def timed(name: str, since: float) -> float:
        timings[name] = round(time.time() - since, 1)
        return time.time()

    say("[onboard] base bundle (acme, globex) from labelled photos without initech")
    base = work / "bundle-base"
    if not (base / "bundle.json").is_file():
        train_bundle(without_brand(labelled, work / "labelled-base", BRAND), base,
                     weights=args.weights, input_size=args.size, config=cfg, cache_dir=cache,
                     brands=list(BASE_BRANDS), seed=args.seed)
    t = timed("base_bundle", t0)

    say("[onboard] initech head from labelled photos")
    from_photos = train_bundle(labelled, work / "bundle-labelled", base_bundle=base,
                               brands=[BRAND], config=cfg, cache_dir=cache, seed=args.seed)
    t = timed("labelled_head", t)

    say("[onboard] initech head from the flat logo + the unlabelled feed")
    logo = load_logo(flat_logo(work / f"{BRAND}.png"))
    feed = sorted(feed_dir.rglob("*.jpg"))
    render_seed = args.seed if args.render_seed is None else args.render_seed
    counts = build_training_set(work / "onboard", BRAND, [logo], feed,
                                n_positives=args.positives, seed=render_seed)
    t = timed("render", t)
    from_logo, report = train_brand(work / "onboard", base, work / "bundle-logo", BRAND,
                                    cache_dir=cache, precision=0.9, seed=render_seed)
    t = timed("logo_head", t)
    kept_all, _ = train_brand(work / "onboard", base, work / "bundle-logo-all-feed", BRAND,
                              cache_dir=cache, precision=0.9, seed=render_seed,
                              set_aside_feed=False)
    t = timed("logo_head_without_set_aside", t)
    feed_truth = {f"feed-{hashlib.sha1((feed_dir / r.file).read_bytes()).hexdigest()[:16]}"
                  f"_nohash_.jpg": r.brands for r in read_manifest(feed_dir)}

    say("[onboard] scoring the labelled test split")
    examples, _ = list_examples(labelled, validation_pct=VAL_PCT, test_pct=TEST_PCT)
    test_ex = [e for e in examples if e.split == "test"]
    b = load_bundle(from_photos)
    test = gather(test_ex, b.backbone, BottleneckCache.for_backbone(cache, b.backbone),
                  tiles=cfg.tiles)
    t = timed("test_features", t)
    y = labels(test.examples, BRAND).astype(bool)
    small = np.array([e.small for e in test.examples]) & y
    sub = small | ~y
    res: dict[str, Any] = {"setup": {
        "labelled_images": args.labelled, "feed_images": args.feed, "seed": args.seed,
        "render_seed": render_seed,
        "logo_fraction": args.logo_fraction, "synthesised_positives": args.positives,
        "weights": args.weights, "input_size": args.size, "taps": list(TAPS),
        "tiles": "2x2, overlap 0.25", "split_pct": {"validation": VAL_PCT, "test": TEST_PCT},
        "labelled_train": sum(e.split == "train" for e in examples),
        "labelled_validation": sum(e.split == "validation" for e in examples),
        "labelled_train_positives": sum(e.split == "train" and BRAND in e.brands
                                        for e in examples),
        "test": len(test.examples), "test_positives": int(y.sum()),
        "test_small_positives": int(small.sum()),
        "test_other_brand_images": sum(bool(e.brands) and BRAND not in e.brands
                                       for e in test.examples),
        "feed_with_brand": sum(BRAND in r.brands for r in read_manifest(feed_dir)),
        "feed_with_other_brands": sum(bool(r.brands) and BRAND not in r.brands
                                      for r in read_manifest(feed_dir)),
        "feed_set_aside_with_brand": sum(BRAND in feed_truth.get(n, ()) for n in
                                         report["feed_set_aside"]),
        "onboarding_counts": counts, "onboarding_report": report}}
    curves: dict[str, Any] = {}
    heads = {}
    for name, path in (("labelled_photos", from_photos), ("logo_only", from_logo),
                       ("logo_only_whole_feed_as_negatives", kept_all)):
        bundle = load_bundle(path, embed=False)
        heads[name] = bundle.heads
        j, thr = bundle.brands.index(BRAND), bundle.thresholds[BRAND]
        res[name] = {}
        for mode, tiles in (("whole_image", False), ("tiles", True)):
            s = image_scores(bundle.heads, test, tiles)[:, j]
            res[name][mode] = {
                "average_precision": average_precision(y, s), **at_threshold(y, s, thr),
                "precision_at_recall_0.8": precision_at_recall(y, s, 0.8),
                "small_ap": average_precision(y[sub], s[sub]),
                "small_recall": at_threshold(y[sub], s[sub], thr)["recall"]}
            if tiles:
                curves[name] = pr_curve(y, s)
        res[name]["validation"] = bundle.metadata["metrics"]["validation"][BRAND]
        res[name]["threshold"] = thr
    a, c = heads["labelled_photos"], heads["logo_only"]
    keep = [a.brands.index(x) for x in BASE_BRANDS]
    res["other_heads_bit_identical"] = bool(
        np.array_equal(a.kernel[:, keep], c.kernel[:, keep]) and np.array_equal(a.mean, c.mean)
        and np.array_equal(a.bias[keep], c.bias[keep]))
    timings["total"] = round(time.time() - t0, 1)
    res["seconds"] = timings
    if args.chart:
        chart(curves, Path(args.chart))
    return res


def chart(curves: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 4))
    for name, c in curves.items():
        ax.step(c.recall, c.precision, where="post", label=name.replace("_", " "))
    ax.set(xlabel="recall", ylabel="precision", xlim=(0, 1.02), ylim=(0, 1.02),
           title=f"{BRAND} on the synthetic test split (max over tiles)")
    ax.legend(loc="lower left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)


def table(res: dict[str, Any]) -> str:
    rows = ["| head trained from | scoring | AP | precision | recall | P at R>=0.8 | "
            "small-logo AP | small-logo recall |", "|---|---|---|---|---|---|---|---|"]
    for name in ("labelled_photos", "logo_only", "logo_only_whole_feed_as_negatives"):
        for mode in ("whole_image", "tiles"):
            m = res[name][mode]
            rows.append(f"| {name.replace('_', ' ')} | {mode.replace('_', ' ')} | "
                        f"{m['average_precision']:.3f} | {m['precision']:.3f} | "
                        f"{m['recall']:.3f} | {m['precision_at_recall_0.8']:.3f} | "
                        f"{m['small_ap']:.3f} | {m['small_recall']:.3f} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--labelled", type=int, default=800, help="labelled synthetic images")
    p.add_argument("--feed", type=int, default=300, help="unlabelled feed images")
    p.add_argument("--positives", type=int, default=300, help="synthesised positives")
    p.add_argument("--logo-fraction", type=float, default=0.3,
                   help="share of synthetic images (labelled and feed) with a logo")
    p.add_argument("--augment", type=int, default=4,
                   help="augmented variants per labelled positive (bench.quality's)")
    p.add_argument("--size", type=int, default=299, help="backbone input size")
    p.add_argument("--weights", default="nsfwjs", help="backbone weights (default nsfwjs)")
    p.add_argument("--seed", type=int, default=0, help="data and model seed")
    p.add_argument("--render-seed", type=int, default=None,
                   help="seed of the onboarding renders (default: --seed)")
    p.add_argument("--work", default=".logowatch/bench-onboard",
                   help="data, bundles and bottleneck cache, reused across runs")
    p.add_argument("--chart", default=None, help="write the PR curves here (PNG)")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    res = run(args)
    print(json.dumps(res, indent=2))
    print(table(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
