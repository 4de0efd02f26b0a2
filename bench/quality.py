"""Detector quality benchmark: retrain.py-style head vs our recipe on the same cached features.

    PYTHONPATH=. python -m bench.quality --out bench/results/quality.json

Synthetic set (`detector.synth`), one brand, 1:9 logo / no-logo, most logos small; random-init
Inception v3 at 299 (no downloads), so absolute numbers say nothing about real photos: the
benchmark compares recipes, which all read the very same cached embeddings.

(a) baseline, retrain.py-style: softmax over {no-logo, brand}, no class weights, no
    augmentation, no threshold tuning (argmax, i.e. p >= 0.5), whole image only.
(b) ours: sigmoid head, class weights, labelled tiles (negatives' tiles, boxed positives),
    early stop on validation PR-AUC, `--search` (learning rate x dropout x with/without the
    cached augmented positives, chosen on validation PR-AUC), threshold tuned on validation
    (precision >= 0.9), score = max over the whole image and 2x2 tiles.
Both get the same standardised embeddings and the same optimiser and epoch budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from detector.datasets import BottleneckCache, list_examples
from detector.metrics import (
    at_threshold,
    average_precision,
    choose_threshold,
    recall_at_precision,
)
from detector.preprocess import TileSpec
from detector.synth import generate
from detector.train import (
    Features,
    TrainConfig,
    gather,
    image_scores,
    labels,
    standardiser,
    train_heads,
)

BRAND = "acme"


def softmax_baseline(train: Features, val: Features, cfg: TrainConfig) -> Any:
    """retrain.py's final layer: dense softmax over classes, plain cross-entropy."""
    import keras

    keras.utils.set_random_seed(cfg.seed)
    mean, scale = standardiser(train.whole)  # the very same input transform as ours
    y = labels(train.examples, BRAND).astype(int)
    model = keras.Sequential([keras.Input((train.whole.shape[1],)),
                              keras.layers.Dropout(cfg.dropout),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss="sparse_categorical_crossentropy")
    model.fit((train.whole - mean) / scale, y, epochs=cfg.epochs, batch_size=cfg.batch_size,
              verbose=0, shuffle=True)
    return lambda x: model.predict((x - mean) / scale, verbose=0)[:, 1]


def run(args: argparse.Namespace) -> dict[str, Any]:
    from detector.model import Backbone

    t0 = time.time()
    data = Path(args.work) / "data"
    if not (data / "manifest.csv").is_file():
        generate(data, n_images=args.images, brands=(BRAND,), logo_fraction=0.1, seed=args.seed,
                 small_fraction=args.small_fraction)
    cfg = TrainConfig(epochs=args.epochs, augment=args.augment, tiles=TileSpec(2, 0.25),
                      validation_pct=20.0, test_pct=35.0, seed=args.seed, search=True)
    examples, _ = list_examples(data, validation_pct=cfg.validation_pct, test_pct=cfg.test_pct)
    bb = Backbone("inception_v3", weights="none", input_size=args.size, seed=args.seed,
                  batch_size=32)
    cache = BottleneckCache(Path(args.work) / "bottlenecks", bb.backbone_id)
    split = {s: [e for e in examples if e.split == s] for s in ("train", "validation", "test")}
    pos = np.array([BRAND in e.brands for e in split["train"]])
    train = gather(split["train"], bb, cache, tiles=cfg.tiles, augment=cfg.augment,
                   augment_mask=pos)
    val = gather(split["validation"], bb, cache, tiles=cfg.tiles)
    test = gather(split["test"], bb, cache, tiles=cfg.tiles)
    t_features = time.time() - t0

    base_fn = softmax_baseline(train, val, cfg)
    base_scores = base_fn(test.whole)
    heads, thresholds, report = train_heads(train, val, [BRAND], cfg, progress=False)
    # the same heads scored on the whole image only, with a threshold tuned for that mode
    thr_whole = {BRAND: choose_threshold(labels(val.examples, BRAND),
                                         image_scores(heads, val, False)[:, 0],
                                         cfg.threshold_policy)}
    ours_tiles = image_scores(heads, test, True)[:, 0]
    ours_whole = image_scores(heads, test, False)[:, 0]

    y = labels(test.examples, BRAND).astype(bool)
    small = np.array([e.small for e in test.examples]) & y
    sub = small | ~y  # small-logo positives + every negative
    base_at = at_threshold(y, base_scores, 0.5)
    p_base = base_at["precision"]
    res: dict[str, Any] = {
        "setup": {
            "images": args.images, "train": len(train.examples), "validation":
            len(val.examples), "test": len(test.examples), "test_positives": int(y.sum()),
            "test_small_positives": int(small.sum()), "backbone": "inception_v3 random init",
            "input_size": args.size, "tiles": "2x2, overlap 0.25", "augment": args.augment,
            "epochs": args.epochs, "seed": args.seed,
        },
        "baseline_retrain_py": {
            "average_precision": average_precision(y, base_scores), **base_at,
        },
        "ours_whole_image": {
            "average_precision": average_precision(y, ours_whole),
            "recall_at_baseline_precision": recall_at_precision(y, ours_whole, p_base),
            **at_threshold(y, ours_whole, thr_whole[BRAND]),
        },
        "ours_tiles": {
            "average_precision": average_precision(y, ours_tiles),
            "recall_at_baseline_precision": recall_at_precision(y, ours_tiles, p_base),
            **at_threshold(y, ours_tiles, thresholds[BRAND]),
        },
        "small_logo_subset": {
            "baseline_recall": at_threshold(y[sub], base_scores[sub], 0.5)["recall"],
            "ours_whole_recall": at_threshold(y[sub], ours_whole[sub], thr_whole[BRAND])["recall"],
            "ours_tiles_recall": at_threshold(y[sub], ours_tiles[sub], thresholds[BRAND])["recall"],
            "baseline_ap": average_precision(y[sub], base_scores[sub]),
            "ours_whole_ap": average_precision(y[sub], ours_whole[sub]),
            "ours_tiles_ap": average_precision(y[sub], ours_tiles[sub]),
        },
        "ours_chosen_on_validation": report[BRAND],
        "seconds": {"features": round(t_features, 1), "total": round(time.time() - t0, 1),
                    "cache_hits": cache.stats.hits, "cache_misses": cache.stats.misses},
    }
    return res


def table(res: dict[str, Any]) -> str:
    b, w, t = res["baseline_retrain_py"], res["ours_whole_image"], res["ours_tiles"]
    s = res["small_logo_subset"]
    rows = [
        "| recipe | PR-AUC (AP) | precision | recall | recall at baseline precision |",
        "|---|---|---|---|---|",
        f"| (a) retrain.py-style | {b['average_precision']:.3f} | {b['precision']:.3f} | "
        f"{b['recall']:.3f} | {b['recall']:.3f} |",
        f"| (b) ours, whole image | {w['average_precision']:.3f} | {w['precision']:.3f} | "
        f"{w['recall']:.3f} | {w['recall_at_baseline_precision']:.3f} |",
        f"| (b) ours, + 2x2 tiles | {t['average_precision']:.3f} | {t['precision']:.3f} | "
        f"{t['recall']:.3f} | {t['recall_at_baseline_precision']:.3f} |",
        "",
        "| small-logo subset | baseline | ours whole | ours + tiles |",
        "|---|---|---|---|",
        f"| recall at own threshold | {s['baseline_recall']:.3f} | {s['ours_whole_recall']:.3f} "
        f"| {s['ours_tiles_recall']:.3f} |",
        f"| AP | {s['baseline_ap']:.3f} | {s['ours_whole_ap']:.3f} | {s['ours_tiles_ap']:.3f} |",
    ]
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="synthetic images (default 1000)")
    p.add_argument("--size", type=int, default=299, help="backbone input size (default 299)")
    p.add_argument("--augment", type=int, default=4, help="augmented variants per positive")
    p.add_argument("--epochs", type=int, default=80, help="head training epochs (default 80)")
    p.add_argument("--small-fraction", type=float, default=0.6,
                   help="share of logo images whose logos are small (default 0.6)")
    p.add_argument("--seed", type=int, default=0, help="data and model seed (default 0)")
    p.add_argument("--work", default=".logowatch/bench-quality",
                   help="data + bottleneck cache folder, reused across runs")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = run(args)
    print(json.dumps(res, indent=2))
    print(table(res))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
