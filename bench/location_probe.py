"""A probe, not a product path: does a head that scores every location of a frozen feature
map, trained with the boxes renders give, hold on the realistic benchmark's test photos?

    PYTHONPATH=. python -m bench.location_probe --work .logowatch/bench-real-logos --seed 0

It reads what `bench.real_logos` left for one seed: the protocol (b) training sets
(`onboard-<brand>/`: renders of the logo file on the training photos, with boxes, and the
training photos as negatives) and the test side. For each tapped block it fits, per brand, a
logistic regression on single feature-map cells (cells whose centre lies in a mark's box are
positives; every cell of a no-logo image, sampled, is a negative; other cells of a positive
are left out), then scores a test image as the max over its cells. Input: the whole image at
`--size` pixels (padded square, as `detector.preprocess` does), one pass, no tiles. The region
is the best cell's receptive field centre grown to the mean box size; reported as IoU >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality import say

NEG_CELLS = 24  # sampled cells per negative image


def maps_of(paths: list[Path], net: Any, size: int, batch: int = 16) -> list[list[np.ndarray]]:
    """Feature maps (one array (h, w, c) per tapped layer) of every image, float16."""
    import tensorflow as tf

    from detector.preprocess import decode, fit_square

    out: list[list[np.ndarray]] = []
    for start in range(0, len(paths), batch):
        chunk = np.stack([fit_square(decode(p.read_bytes()), size)
                          for p in paths[start:start + batch]])
        maps = net(tf.cast(chunk, tf.float32) / 127.5 - 1.0, training=False)
        maps = maps if isinstance(maps, list | tuple) else [maps]
        for i in range(len(chunk)):
            out.append([m[i].numpy().astype(np.float16) for m in maps])
        if start % (batch * 10) == 0:
            say(f"[probe] feature maps {start + len(chunk)}/{len(paths)}")
    return out


def cell_boxes(shape: tuple[int, int], size: int, img_wh: tuple[int, int]) -> np.ndarray:
    """Each cell's centre in the original image's coordinates: (h, w, 2)."""
    h, w = shape
    scale = size / max(img_wh)
    ox, oy = (size - img_wh[0] * scale) / 2, (size - img_wh[1] * scale) / 2
    cx = ((np.arange(w) + 0.5) * size / w - ox) / scale
    cy = ((np.arange(h) + 0.5) * size / h - oy) / scale
    return np.stack(np.meshgrid(cx, cy), axis=-1)


def inside(centres: np.ndarray, box: tuple[int, ...]) -> np.ndarray:
    x, y = centres[..., 0], centres[..., 1]
    return (x >= box[0]) & (x < box[2]) & (y >= box[1]) & (y < box[3])


def fit(x: np.ndarray, y: np.ndarray, l2: float) -> tuple[np.ndarray, float, np.ndarray,
                                                          np.ndarray]:
    from detector.train import TrainConfig, fit_head

    mean, std = x.mean(axis=0), x.std(axis=0) + 1e-3
    w, b, _ = fit_head((x - mean) / std, y.astype(np.float32),
                       TrainConfig(l2=l2, max_iter=300), progress=False)
    return w, b, mean, std


def run(args: argparse.Namespace) -> dict[str, Any]:
    import keras

    from bench.real_logos import iou
    from detector.datasets import image_size, list_examples
    from detector.metrics import at_threshold, average_precision, choose_threshold
    from detector.model import Backbone
    from detector.synth import read_manifest

    work = Path(args.work) / f"seed{args.seed}"
    layers = args.layers.split(",")
    bb = Backbone("inception_v3", taps=[f"{t}:max" for t in layers], weights="nsfwjs",
                  input_size=args.size, precision="float32")
    net = keras.Model(bb.model.input, bb.model.outputs)
    test, _ = list_examples(work / "test", validation_pct=0.0, test_pct=100.0)
    say(f"[probe] test: {len(test)} images")
    test_maps = maps_of([e.path for e in test], net, args.size)
    test_wh = [image_size(e.path) for e in test]
    res: dict[str, Any] = {"layers": layers, "size": args.size, "brands": {}}
    neg_cache: dict[str, list[np.ndarray]] = {}  # feed copies share names across brands
    for brand in sorted({b for e in test for b in e.brands}):
        if args.train == "renders":
            ex, _ = list_examples(work / f"onboard-{brand}", validation_pct=20.0, test_pct=0.0)
        else:  # the labelled photos of protocol (a), with the boxes a user could draw
            ex, _ = list_examples(work / "train", validation_pct=20.0, test_pct=0.0)
            truth = {r.file: r for r in read_manifest(work / "train" / "truth.csv")}
            ex = [replace(e, boxes=truth[f"{e.path.parent.name}/{e.name}"].boxes) for e in ex]
        pos = [e for e in ex if brand in e.brands and e.boxes]
        neg = [e for e in ex if not e.brands]
        todo = [e.path for e in neg if e.path.name not in neg_cache]
        for p, m in zip(todo, maps_of(todo, net, args.size), strict=True):
            neg_cache[p.name] = m
        pos_maps = maps_of([e.path for e in pos], net, args.size)
        rng = np.random.default_rng(args.seed)
        res["brands"][brand] = {}
        for li, layer in enumerate(layers):
            xs, ys, val_idx = [], [], []
            for e, m in zip(pos, pos_maps, strict=True):
                fm = m[li].astype(np.float32)
                c = cell_boxes(fm.shape[:2], args.size, image_size(e.path))
                hit = np.zeros(fm.shape[:2], bool)
                for box in e.boxes:
                    hit |= inside(c, box)
                if hit.any():
                    xs.append(fm[hit])
                    ys.append(np.ones(int(hit.sum())))
                    val_idx.append(np.full(int(hit.sum()), e.split == "validation"))
            for e in neg:
                fm = neg_cache[e.path.name][li].astype(np.float32).reshape(-1, bb.tap_dims[li])
                pick = rng.choice(len(fm), min(NEG_CELLS, len(fm)), replace=False)
                xs.append(fm[pick])
                ys.append(np.zeros(len(pick)))
                val_idx.append(np.full(len(pick), e.split == "validation"))
            x, y, v = np.concatenate(xs), np.concatenate(ys), np.concatenate(val_idx)
            w, b, mean, std = fit(x[~v], y[~v], args.l2)

            def image_score(maps: list[np.ndarray], li: int = li, w: np.ndarray = w,
                            b: float = b, mean: np.ndarray = mean,
                            std: np.ndarray = std) -> tuple[float, tuple[int, int]]:
                fm = maps[li].astype(np.float32)
                logit = ((fm - mean) / std) @ w + b
                k = int(np.argmax(logit))
                return float(logit.flat[k]), divmod(k, fm.shape[1])

            val_pos = [(e, m) for e, m in zip(pos, pos_maps, strict=True)
                       if e.split == "validation"]
            val_neg = [e for e in neg if e.split == "validation"]
            vs = np.array([image_score(m)[0] for _, m in val_pos]
                          + [image_score(neg_cache[e.path.name])[0] for e in val_neg])
            vy = np.array([1] * len(val_pos) + [0] * len(val_neg))
            thr = choose_threshold(vy, vs, "precision>=0.9")
            scored = [image_score(m) for m in test_maps]
            s = np.array([sc for sc, _ in scored])
            yt = np.array([brand in e.brands for e in test])
            small = np.array([e.small for e in test]) & yt
            sub = small | ~yt
            hits = []
            for n, e in enumerate(test):
                if yt[n] and s[n] >= thr and e.boxes:
                    fm = test_maps[n][li]
                    c = cell_boxes(fm.shape[:2], args.size, test_wh[n])[scored[n][1]]
                    tb = e.boxes[0]
                    half = max(tb[2] - tb[0], tb[3] - tb[1]) / 2  # an oracle size: centre only
                    guess = (c[0] - half, c[1] - half, c[0] + half, c[1] + half)
                    hits.append(iou(guess, tb) >= 0.5)
            at = at_threshold(yt, s, thr)
            res["brands"][brand][layer] = {
                "average_precision": average_precision(yt, s),
                "precision": at["precision"], "recall": at["recall"],
                "validation_average_precision": average_precision(vy, vs),
                "small_ap": average_precision(yt[sub], s[sub]),
                "centre_in_mark_iou_0.5_oracle_size": float(np.mean(hits)) if hits else None,
                "train_cells": int((~v).sum()), "positive_cells": int(y[~v].sum())}
            say(f"[probe] {brand} {layer}: test AP "
                f"{res['brands'][brand][layer]['average_precision']:.3f}")
    for layer in layers:
        res[f"mean_ap_{layer}"] = float(np.mean([r[layer]["average_precision"]
                                                 for r in res["brands"].values()]))
    return res


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--work", default=".logowatch/bench-real-logos")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layers", default="mixed2,mixed5", help="blocks to probe, comma-separated")
    p.add_argument("--size", type=int, default=448, help="input side in pixels")
    p.add_argument("--l2", type=float, default=1e-2)
    p.add_argument("--train", choices=["renders", "labelled"], default="renders",
                   help="renders: protocol (b)'s onboarding renders; labelled: protocol (a)'s "
                   "photos with their true boxes (bench.real_logos writes them to truth.csv)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)
    res = run(args)
    print(json.dumps(res, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(res, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
