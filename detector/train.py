"""Training recipe: cached bottlenecks → one sigmoid head per brand → tuned thresholds → bundle.

What it adds to retrain.py (and the 2016 prototype's wish list): the embedding chosen among
candidate taps (mid-level blocks, max-pooled) on validation PR-AUC, class weights in the loss
by default, cached augmented variants of the rare class (distortions without their cost),
tile embeddings of negative images as extra negatives (so max-over-tiles at inference does not
buy recall with false positives), and a per-brand threshold chosen on the validation set
instead of argmax. A head is an L2-regularised, class-weighted logistic regression fitted
full-batch (L-BFGS) on cached embeddings: convex, deterministic, and a second or two for
10,000 embeddings, so choosing taps and the L2 strength on validation costs little.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from detector.bundle import Heads, load_bundle, save_bundle
from detector.datasets import (
    AUGMENT_VERSION,
    BottleneckCache,
    Example,
    embed_files,
    fingerprint,
    image_size,
    list_examples,
)
from detector.errors import DetectorError
from detector.metrics import at_threshold, average_precision, choose_threshold
from detector.model import Tap
from detector.preprocess import TileSpec

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every knob of the recipe; the CLI flags map one to one onto these fields."""

    l2: float = 1e-2  # L2 penalty on head weights (the mean loss is weighted to 1 per row)
    max_iter: int = 500  # L-BFGS iterations per head
    class_weights: bool = True
    resample: str = "none"  # "up": repeat positives, "down": drop negatives, to 1:1
    augment: int = 4  # cached distorted variants per positive training image
    augment_all: bool = False  # also distort negatives (costs K backbone passes each)
    flip: bool = True
    tiles: TileSpec | None = field(default_factory=TileSpec)
    tile_negatives: bool = True  # train on labelled tiles (negatives' tiles, boxed positives)
    taps: tuple[str, ...] | None = None  # fixed embedding taps; None: choose on validation
    threshold_policy: str = "precision>=0.9"
    seed: int = 0
    validation_pct: float = 10.0
    test_pct: float = 10.0
    search: bool = False
    tensorboard: str | None = None
    marks: bool = True  # mine each brand's mark from its photos (`detector.mining`); used
    # in place of the brand's head where it beats the head's validation AP


L2_GRID = (1e-3, 1e-2, 1e-1, 1.0)


@dataclass
class Features:
    """Cached embeddings for a list of examples: whole image, tiles, augmented variants."""

    examples: list[Example]
    whole: np.ndarray  # (N, D)
    tiles: list[np.ndarray] | None = None  # N x (T, D)
    augmented: list[np.ndarray] | None = None  # N x (K, D), empty for unaugmented images


def gather(
    examples: list[Example],
    backbone: Any,
    cache: BottleneckCache,
    *,
    tiles: TileSpec | None = None,
    augment: int = 0,
    augment_mask: np.ndarray | None = None,
    flip: bool = True,
    progress: bool = True,
) -> Features:
    """Embeddings of `examples` from the cache (filling it in batches); drops unreadable ones."""
    def run(paths: list[Path], variant: str) -> list[np.ndarray | None]:
        return embed_files(paths, variant, cache, backbone.embed, backbone.input_size,
                           batch=backbone.batch_size, progress=progress, flip=flip)

    whole = run([e.path for e in examples], "whole")
    keep = [i for i, w in enumerate(whole) if w is not None]
    if len(keep) < len(examples):
        log.warning("skipped %d unreadable images", len(examples) - len(keep))
    examples = [examples[i] for i in keep]
    feats = Features(examples, np.concatenate([whole[i] for i in keep]))
    if tiles is not None and tiles.grid >= 2:
        t = run([e.path for e in examples], f"tiles-{tiles.key()}")
        feats.tiles = [x if x is not None else np.zeros((0, feats.whole.shape[1])) for x in t]
    if augment > 0:
        mask = np.ones(len(examples), bool) if augment_mask is None else augment_mask[keep]
        aug: list[np.ndarray] = [np.zeros((0, feats.whole.shape[1]), np.float32)] * len(examples)
        chosen = [examples[i].path for i in np.nonzero(mask)[0]]
        per_k = [run(chosen, f"aug{AUGMENT_VERSION}-{k}") for k in range(augment)]
        for j, i in enumerate(np.nonzero(mask)[0]):
            aug[i] = np.concatenate([per_k[k][j] for k in range(augment)
                                     if per_k[k][j] is not None] or [aug[i]])
        feats.augmented = aug
    return feats


def labels(examples: list[Example], brand: str) -> np.ndarray:
    return np.array([brand in e.brands for e in examples], np.float32)


def image_scores(heads: Heads, feats: Features, use_tiles: bool) -> np.ndarray:
    """(N, B) per-image scores: the whole image, or the max over whole image and tiles."""
    scores = heads.score(feats.whole)
    if use_tiles and feats.tiles is not None:
        for i, t in enumerate(feats.tiles):
            if len(t):
                scores[i] = np.maximum(scores[i], heads.score(t).max(axis=0))
    return scores


def fit_head(
    x: np.ndarray, y: np.ndarray, cfg: TrainConfig, *, desc: str = "head",
    progress: bool = True,
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Class-weighted, L2-regularised logistic regression on standardised embeddings.

    Full-batch L-BFGS on the exact loss: the optimum does not depend on a learning rate, a
    batch order or an epoch budget, so the same data always gives the same head."""
    from scipy.optimize import minimize
    from scipy.special import expit

    from detector.progress import progress as progress_bar

    pos, neg = float(y.sum()), float(len(y) - y.sum())
    if pos == 0 or neg == 0:
        raise DetectorError(f"{desc}: training set needs positives and negatives "
                            f"(got {int(pos)} / {int(neg)})")
    rng = np.random.default_rng(cfg.seed)
    if cfg.resample == "up":
        idx = np.r_[np.arange(len(y)), rng.choice(np.nonzero(y)[0], int(neg - pos))]
        x, y = x[idx], y[idx]
    elif cfg.resample == "down":
        keep = np.r_[np.nonzero(y)[0], rng.choice(np.nonzero(y == 0)[0], int(pos), False)]
        x, y = x[keep], y[keep]
    pos, neg = float(y.sum()), float(len(y) - y.sum())
    w = np.ones(len(y))
    if cfg.class_weights:  # each class weighs half of the loss
        w = np.where(y > 0.5, len(y) / (2 * pos), len(y) / (2 * neg))
    w /= w.sum()
    xd, yd = np.asarray(x, np.float64), np.asarray(y, np.float64)
    history: list[float] = []

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        kernel, bias = theta[:-1], theta[-1]
        z = xd @ kernel + bias
        value = float(w @ (np.logaddexp(0.0, z) - yd * z)) + 0.5 * cfg.l2 * float(kernel @ kernel)
        r = w * (expit(z) - yd)
        return value, np.r_[xd.T @ r + cfg.l2 * kernel, r.sum()]

    bar = progress_bar(total=cfg.max_iter, desc=desc, unit="it", enabled=progress, leave=False)

    def step(theta: np.ndarray) -> None:
        history.append(loss(theta)[0] if cfg.tensorboard else float("nan"))
        bar.update(1)

    res = minimize(loss, np.zeros(x.shape[1] + 1), jac=True, method="L-BFGS-B",
                   callback=step, options={"maxiter": cfg.max_iter})
    bar.close()
    if cfg.tensorboard:
        _write_summaries(Path(cfg.tensorboard) / desc, history)
    return (res.x[:-1].astype(np.float32), float(res.x[-1]),
            {"iterations": int(res.nit), "converged": bool(res.success),
             "train_loss": float(res.fun)})


def _write_summaries(folder: Path, history: list[float]) -> None:
    """The training loss per L-BFGS iteration, for TensorBoard."""
    import tensorflow as tf

    writer = tf.summary.create_file_writer(str(folder))
    with writer.as_default():
        for i, value in enumerate(history):
            tf.summary.scalar("loss", value, step=i)
    writer.close()


def tile_labels(example: Example, brand: str, spec: TileSpec) -> np.ndarray:
    """Per-tile label: 0 in images without the brand; with known boxes, 1 where a tile holds
    >= 60% of a logo, 0 where it holds <= 5%; NaN (unused) where it is unknown or cut."""
    n = spec.grid * spec.grid
    if brand not in example.brands:
        return np.zeros(n, np.float32)
    mine = [b for b, name in zip(example.boxes, example.brands, strict=False) if name == brand]
    if not mine:
        return np.full(n, np.nan, np.float32)
    out = np.full(n, np.nan, np.float32)
    for k, (x0, y0, x1, y1) in enumerate(spec.boxes(*image_size(example.path))):
        cover = max(max(0, min(x1, b[2]) - max(x0, b[0])) * max(0, min(y1, b[3]) - max(y0, b[1]))
                    / max(1, (b[2] - b[0]) * (b[3] - b[1])) for b in mine)
        out[k] = 1.0 if cover >= 0.6 else 0.0 if cover <= 0.05 else np.nan
    return out


def training_matrix(
    feats: Features, brand: str, cfg: TrainConfig, *, augmented: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """Whole images, their augmented variants (same label), and tiles labelled by
    `tile_labels` (all tiles of negative images; tiles of positives where boxes are known)."""
    y = labels(feats.examples, brand)
    xs, ys = [feats.whole], [y]
    if augmented and feats.augmented is not None:
        for i, a in enumerate(feats.augmented):
            if len(a):
                xs.append(a)
                ys.append(np.full(len(a), y[i], np.float32))
    if cfg.tile_negatives and feats.tiles is not None and cfg.tiles is not None:
        for i, t in enumerate(feats.tiles):
            if not len(t):
                continue
            lab = tile_labels(feats.examples[i], brand, cfg.tiles)
            keep = ~np.isnan(lab)
            xs.append(t[keep])
            ys.append(lab[keep])
    return np.concatenate(xs), np.concatenate(ys)


def standardiser(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-unit mean and spread of training embeddings, used by every head of a bundle.

    Near-dead units (common in random-init nets) must not be blown up to unit variance: a
    floor of a tenth of the median unit's spread keeps their noise small.
    """
    std = x.std(axis=0)
    floor = max(0.1 * float(np.median(std)), 1e-12)
    return x.mean(axis=0), np.sqrt(std**2 + floor**2)


def train_heads(
    train: Features, val: Features, brands: list[str], cfg: TrainConfig, *,
    base: Heads | None = None, progress: bool = True,
) -> tuple[Heads, dict[str, float], dict[str, Any]]:
    """Heads for `brands` (others kept from `base`), thresholds and validation metrics."""
    mean, scale = (base.mean, base.scale) if base is not None else standardiser(train.whole)
    zs = lambda a: (a - mean) / scale  # noqa: E731 - heads are trained on standardised input
    heads = base or Heads([], mean.astype(np.float32), scale.astype(np.float32),
                          np.zeros((len(mean), 0), np.float32), np.zeros(0, np.float32))
    report: dict[str, Any] = {}
    has_aug = train.augmented is not None
    grid = [(cfg.l2, has_aug)]
    if cfg.search:  # chosen on validation PR-AUC, the seed's "automated model selection"
        grid = [(l2, a) for l2 in L2_GRID for a in ((True, False) if has_aug else (False,))]
    for brand in brands:
        y_val = labels(val.examples, brand)
        best: tuple[float, np.ndarray, float, dict[str, Any]] | None = None
        for l2, use_aug in grid:
            trial = replace(cfg, l2=l2)
            x, y = training_matrix(train, brand, trial, augmented=use_aug)
            k, b, info = fit_head(zs(x), y, trial, progress=progress,
                                  desc=f"{brand} l2={l2:g} aug={use_aug}")
            one = Heads([brand], mean, scale, k.reshape(-1, 1), np.array([b], np.float32))
            ap = average_precision(y_val, image_scores(one, val, cfg.tiles is not None)[:, 0])
            if best is None or ap > best[0]:
                best = (ap, k, b, {**info, "l2": l2, "augmented": use_aug,
                                   "train_positives": int(y.sum()), "train_rows": len(y)})
        assert best is not None
        heads = heads.with_brand(brand, best[1], best[2])
        report[brand] = {"val_average_precision": best[0], **best[3]}
    thresholds = {}
    val_scores = image_scores(heads, val, cfg.tiles is not None)
    for j, brand in enumerate(heads.brands):
        if brand in brands or base is None:
            thresholds[brand] = choose_threshold(labels(val.examples, brand), val_scores[:, j],
                                                 cfg.threshold_policy)
            if brand in report:  # what the threshold does on validation, to compare later
                m = at_threshold(labels(val.examples, brand), val_scores[:, j], thresholds[brand])
                report[brand].update(val_precision=m["precision"], val_recall=m["recall"])
    return heads, thresholds, report


def choose_taps(
    train_ex: list[Example], val_ex: list[Example], brands: list[str], probe: Any,
    cache: BottleneckCache, candidates: list[tuple[Tap, ...]], cfg: TrainConfig, *,
    progress: bool = True,
) -> tuple[tuple[Tap, ...], dict[str, float]]:
    """The candidate embedding with the best mean validation PR-AUC over `brands`.

    `probe` is a backbone tapping every candidate's blocks, so one pass over each image (whole
    image, no augmentation) fills the cache for every candidate."""
    train = gather(train_ex, probe, cache, progress=progress)
    val = gather(val_ex, probe, cache, progress=progress)
    scores: dict[str, float] = {}
    for cand in candidates:
        cols = probe.columns(cand)
        x, xv = train.whole[:, cols], val.whole[:, cols]
        mean, scale = standardiser(x)
        aps = []
        for brand in brands:
            y, yv = labels(train.examples, brand), labels(val.examples, brand)
            best_ap = 0.0
            for l2 in L2_GRID:  # each candidate at its own best regularisation
                k, b, _ = fit_head((x - mean) / scale, y, replace(cfg, l2=l2), progress=False,
                                   desc=f"taps {','.join(map(str, cand))}")
                best_ap = max(best_ap, average_precision(yv, ((xv - mean) / scale) @ k + b))
            aps.append(best_ap)
        scores[",".join(map(str, cand))] = float(np.mean(aps))
        log.info("taps %s: validation PR-AUC %.3f", ",".join(map(str, cand)), np.mean(aps))
    best = max(candidates, key=lambda c: scores[",".join(map(str, c))])
    return best, scores


def train_bundle(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    backbone: str = "inception_v3",
    weights: str | None = None,
    input_size: int | None = None,
    progress: bool = True,
    config: TrainConfig | None = None,
    cache_dir: str | Path | None = None,
    brands: list[str] | None = None,
    base_bundle: str | Path | None = None,
    seed: int = 0,
    precision: str | None = None,
    exclude: Collection[Path] = (),
    backbone_model: Any = None,
) -> Path:
    """Train (or, with `base_bundle` and `brands`, extend) a bundle from class folders.

    `weights`: "none" (random, seeded), "imagenet", "nsfwjs" (imported from npm once), a
    weights file, or None (= nsfwjs for a new bundle, the base bundle's recorded source when
    extending one). A new bundle's taps are `config.taps`, or the backbone's candidate taps
    compared on validation PR-AUC; an extended bundle keeps its base's backbone and taps.
    `exclude`: images under `data_dir` to leave out; `backbone_model`: an already built backbone
    for the base bundle (saves building it again).
    """
    from detector.model import BACKBONES, Backbone, default_precision, parse_taps

    cfg = config or TrainConfig()
    if cfg.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise DetectorError("--tensorboard needs the 'tensorboard' package, which is not "
                                "installed (pip install tensorboard)")
    examples, found = list_examples(data_dir, validation_pct=cfg.validation_pct,
                                    test_pct=cfg.test_pct)
    skip = set(exclude)
    examples = [e for e in examples if e.path not in skip]
    targets = brands or found
    unknown = set(targets) - set(found)
    if unknown:
        raise DetectorError(f"no images for brands {sorted(unknown)} under {data_dir}")
    train_ex = [e for e in examples if e.split == "train"]
    val_ex = [e for e in examples if e.split == "validation"]
    if not val_ex:
        raise DetectorError("validation split is empty: add images or raise --validation-pct")
    cache_root = cache_dir or Path(data_dir) / ".bottlenecks"
    base_heads, base_thresholds, tap_scores, base_logos = None, {}, None, {}
    if base_bundle is not None:
        # the base bundle's own backbone source unless a weights file is given explicitly
        base = load_bundle(base_bundle, weights=None if weights in (None, "none") else weights,
                           backbone=backbone_model)
        bb, base_heads, base_thresholds = base.backbone, base.heads, base.thresholds
        base_logos = {b: logo for b, logo in base.logos.items() if b not in targets}
    else:
        if backbone not in BACKBONES:
            raise DetectorError(f"unknown backbone {backbone!r}; choose from {sorted(BACKBONES)}")
        kwargs: dict[str, Any] = {"weights": weights or "nsfwjs", "input_size": input_size,
                                  "seed": seed, "precision": precision or default_precision()}
        candidates = ([parse_taps(cfg.taps)] if cfg.taps else
                      [parse_taps(c) for c in BACKBONES[backbone].candidates])
        taps = candidates[0]
        if len(candidates) > 1:
            union = list(dict.fromkeys(t for c in candidates for t in c))
            probe = Backbone(backbone, taps=[str(t) for t in union], **kwargs)
            taps, tap_scores = choose_taps(
                train_ex, val_ex, targets, probe, BottleneckCache.for_backbone(cache_root, probe),
                candidates, cfg, progress=progress)
            del probe
        bb = Backbone(backbone, taps=[str(t) for t in taps], **kwargs)
    cache = BottleneckCache.for_backbone(cache_root, bb)
    positive = np.array([any(b in e.brands for b in targets) for e in train_ex])
    train = gather(train_ex, bb, cache, tiles=cfg.tiles if cfg.tile_negatives else None,
                   augment=cfg.augment, augment_mask=None if cfg.augment_all else positive,
                   flip=cfg.flip, progress=progress)
    val = gather(val_ex, bb, cache, tiles=cfg.tiles, progress=progress)
    heads, thresholds, report = train_heads(train, val, targets, cfg, base=base_heads,
                                            progress=progress)
    thresholds = {**base_thresholds, **thresholds}
    log.info("bottleneck cache: %d hits, %d misses", cache.stats.hits, cache.stats.misses)
    logos = dict(base_logos)
    if cfg.marks:
        import os

        from detector.mining import jobs_for, logos_from_photos
        from detector.progress import progress as bar

        scores = image_scores(heads, val, cfg.tiles is not None)  # rows: val.examples
        jobs = jobs_for(train_ex, val.examples, targets,
                        {b: scores[:, heads.brands.index(b)].tolist() for b in targets},
                        cfg.seed)
        mined = logos_from_photos(jobs, workers=os.cpu_count() or 1,
                                  progress=lambda it, **kw: bar(it, enabled=progress, **kw))
        for brand, (logo, rep) in mined.items():
            report[brand]["mark"] = rep
            if logo is not None:  # the head did not beat the mark (`mining.replaces`): it goes
                logos[brand] = logo
                heads = heads.without(brand)
                thresholds.pop(brand, None)
    cfg_doc = {k: v for k, v in asdict(cfg).items() if k != "tiles"}
    return save_bundle(out_dir, backbone=bb.describe(), heads=heads, thresholds=thresholds,
                       tiles=cfg.tiles, logos=logos, extra={
                           "training": {"config": cfg_doc, "data_fingerprint":
                                        fingerprint(train_ex + val_ex), "data_dir":
                                        str(data_dir), "brands_trained": targets,
                                        "tap_selection": tap_scores},
                           "metrics": {"validation": report},
                       })
