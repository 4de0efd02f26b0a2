"""Detector quality benchmark: retrain.py-style vs our recipe, on random and imported weights.

    PYTHONPATH=. python -m bench.quality --out bench/results/quality.json

Synthetic set (`detector.synth`), one brand, 1:9 logo / no-logo, most logos small, distractor
marks; Inception v3 at 299, once with random weights (seeded) and once with the ImageNet-
derived weights imported from npm (`logowatch weights import nsfwjs`). Absolute numbers say
little about real photos; the benchmark compares recipes and weights on the same images.

(a) retrain.py-style: the full net's average pool (`mixed10:avg`), softmax over {no-logo,
    brand}, no class weights, no augmentation, no threshold tuning (argmax), whole image only.
(b) ours: the embedding chosen among candidate taps on validation PR-AUC, logistic heads with
    class weights, labelled tiles (negatives' tiles, boxed positives), `--search` (L2 strength
    x with/without the cached augmented positives, chosen on validation PR-AUC), threshold
    tuned on validation (precision >= 0.9); scored on the whole image, and as the max over the
    whole image and 2x2 tiles.
All read the same standardised, cached embeddings of one backbone pass per image and variant.
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
    precision_at_recall,
    recall_at_precision,
)
from detector.preprocess import TileSpec
from detector.synth import generate
from detector.train import (
    TrainConfig,
    choose_taps,
    gather,
    image_scores,
    labels,
    standardiser,
    train_heads,
)

BRAND = "acme"


def softmax_baseline(x: np.ndarray, y: np.ndarray, epochs: int, seed: int) -> Any:
    """retrain.py's final layer: dense softmax over classes, plain cross-entropy, SGD-style
    minibatches, argmax at inference; on the very same standardisation as ours."""
    import keras

    keras.utils.set_random_seed(seed)
    mean, scale = standardiser(x)
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dropout(0.3),
                              keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit((x - mean) / scale, y.astype(int), epochs=epochs, batch_size=64, verbose=0,
              shuffle=True)
    return lambda v: model.predict((v - mean) / scale, verbose=0)[:, 1]


def run_weights(args: argparse.Namespace, weights: str) -> dict[str, Any]:
    """Both recipes on one set of backbone weights."""
    from detector.model import BACKBONES, Backbone, parse_taps

    t0 = time.time()
    data = Path(args.work) / "data"
    cfg = TrainConfig(augment=args.augment, tiles=TileSpec(2, 0.25), validation_pct=20.0,
                      test_pct=35.0, seed=args.seed, search=True)
    examples, _ = list_examples(data, validation_pct=cfg.validation_pct, test_pct=cfg.test_pct)
    split = {s: [e for e in examples if e.split == s] for s in ("train", "validation", "test")}
    candidates = [parse_taps(c) for c in BACKBONES["inception_v3"].candidates]
    full = parse_taps("mixed10:avg")
    union = list(dict.fromkeys(t for c in [*candidates, full] for t in c))
    probe = Backbone("inception_v3", weights=weights, input_size=args.size, seed=args.seed,
                     batch_size=32, taps=[str(t) for t in union])
    root = Path(args.work) / "bottlenecks"
    say(f"[quality] {weights}: whole-image features of every candidate tap")
    taps, tap_scores = choose_taps(split["train"], split["validation"], [BRAND], probe,
                                   BottleneckCache.for_backbone(root, probe), candidates, cfg)
    probe_cache = BottleneckCache.for_backbone(root, probe)
    cols = probe.columns(full)
    base_train = gather(split["train"], probe, probe_cache, progress=False)
    base_test = gather(split["test"], probe, probe_cache, progress=False)
    del probe
    t_probe = time.time() - t0

    say(f"[quality] {weights}: taps {','.join(map(str, taps))}: tiles and augmentations")
    bb = Backbone("inception_v3", weights=weights, input_size=args.size, seed=args.seed,
                  batch_size=32, taps=[str(t) for t in taps])
    cache = BottleneckCache.for_backbone(root, bb)
    pos = np.array([BRAND in e.brands for e in split["train"]])
    train = gather(split["train"], bb, cache, tiles=cfg.tiles, augment=cfg.augment,
                   augment_mask=pos)
    val = gather(split["validation"], bb, cache, tiles=cfg.tiles)
    test = gather(split["test"], bb, cache, tiles=cfg.tiles)
    t_features = time.time() - t0

    base_fn = softmax_baseline(base_train.whole[:, cols], labels(base_train.examples, BRAND),
                               args.epochs, args.seed)
    base_scores = base_fn(base_test.whole[:, cols])
    t_fit = time.time()
    heads, thresholds, report = train_heads(train, val, [BRAND], cfg, progress=False)
    t_fit = time.time() - t_fit
    # the same heads scored on the whole image only, with a threshold tuned for that mode
    thr_whole = choose_threshold(labels(val.examples, BRAND),
                                 image_scores(heads, val, False)[:, 0], cfg.threshold_policy)
    ours = {"whole": (image_scores(heads, test, False)[:, 0], thr_whole),
            "tiles": (image_scores(heads, test, True)[:, 0], thresholds[BRAND])}

    y = labels(test.examples, BRAND).astype(bool)
    small = np.array([e.small for e in test.examples]) & y
    sub = small | ~y  # small-logo positives + every negative

    def row(scores: np.ndarray, thr: float) -> dict[str, Any]:
        return {"average_precision": average_precision(y, scores), **at_threshold(y, scores, thr),
                "precision_at_recall_0.8": precision_at_recall(y, scores, 0.8),
                "recall_at_precision_0.9": recall_at_precision(y, scores, 0.9),
                "small_ap": average_precision(y[sub], scores[sub]),
                "small_recall": at_threshold(y[sub], scores[sub], thr)["recall"]}

    return {
        "weights": bb.provenance, "taps": [str(t) for t in taps], "tap_selection": tap_scores,
        "retrain_py": row(base_scores, 0.5),
        "ours_whole_image": row(*ours["whole"]),
        "ours_tiles": row(*ours["tiles"]),
        "ours_chosen_on_validation": report[BRAND],
        "seconds": {"probe_features": round(t_probe, 1), "features": round(t_features, 1),
                    "head_fits": round(t_fit, 2), "total": round(time.time() - t0, 1),
                    "cache_hits": cache.stats.hits, "cache_misses": cache.stats.misses},
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    data = Path(args.work) / "data"
    if not (data / "manifest.csv").is_file():
        generate(data, n_images=args.images, brands=(BRAND,), logo_fraction=0.1, seed=args.seed,
                 small_fraction=args.small_fraction)
    examples, _ = list_examples(data, validation_pct=20.0, test_pct=35.0)
    test = [e for e in examples if e.split == "test"]
    res: dict[str, Any] = {"setup": {
        "images": args.images, "train": sum(e.split == "train" for e in examples),
        "validation": sum(e.split == "validation" for e in examples), "test": len(test),
        "test_positives": sum(BRAND in e.brands for e in test),
        "test_small_positives": sum(BRAND in e.brands and e.small for e in test),
        "backbone": "inception_v3", "input_size": args.size, "tiles": "2x2, overlap 0.25",
        "augment": args.augment, "softmax_epochs": args.epochs, "seed": args.seed}}
    for weights in args.weights.split(","):
        res[weights] = run_weights(args, weights)
    return res


def table(res: dict[str, Any]) -> str:
    rows = [
        "| weights | recipe | taps | AP | precision | recall | P at R>=0.8 | small-logo AP "
        "| small-logo recall |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for weights, r in res.items():
        if weights == "setup":
            continue
        for key, name, taps in (("retrain_py", "(a) retrain.py-style", "mixed10:avg"),
                                ("ours_whole_image", "(b) ours, whole image", None),
                                ("ours_tiles", "(b) ours, + 2x2 tiles", None)):
            m = r[key]
            rows.append(f"| {r['weights']} | {name} | {taps or ','.join(r['taps'])} | "
                        f"{m['average_precision']:.3f} | {m['precision']:.3f} | "
                        f"{m['recall']:.3f} | {m['precision_at_recall_0.8']:.3f} | "
                        f"{m['small_ap']:.3f} | {m['small_recall']:.3f} |")
    return "\n".join(rows)


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=1000, help="synthetic images (default 1000)")
    p.add_argument("--size", type=int, default=299, help="backbone input size (default 299)")
    p.add_argument("--augment", type=int, default=4, help="augmented variants per positive")
    p.add_argument("--epochs", type=int, default=80,
                   help="epochs of the retrain.py-style softmax layer (default 80)")
    p.add_argument("--weights", default="none,nsfwjs",
                   help="comma-separated backbone weights to compare (default none,nsfwjs)")
    p.add_argument("--small-fraction", type=float, default=0.6,
                   help="share of logo images whose logos are small (default 0.6)")
    p.add_argument("--seed", type=int, default=0, help="data and model seed (default 0)")
    p.add_argument("--work", default=".logowatch/bench-quality",
                   help="data + bottleneck cache folder, reused across runs")
    p.add_argument("--out", default=None, help="write the JSON result here")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)
    res = run(args)
    out = Path(args.out) if args.out else None
    if out is not None and out.is_file():  # one file, one table: keep the other weights' rows
        before = json.loads(out.read_text())
        if before.get("setup") == res["setup"]:
            res = {**before, **res}
    print(json.dumps(res, indent=2))
    print(table(res))
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
