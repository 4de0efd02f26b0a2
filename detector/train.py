"""Training recipe: cached bottlenecks → one sigmoid head per brand → tuned thresholds → bundle.

What it adds to retrain.py (and the 2016 prototype's wish list): class weights in the loss by
default, cached augmented variants of the rare class (distortions without their cost), tile
embeddings of negative images as extra negatives (so max-over-tiles at inference does not buy
recall with false positives), early stopping on validation PR-AUC, and a per-brand threshold
chosen on the validation set instead of argmax.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, field
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
from detector.metrics import average_precision, choose_threshold
from detector.preprocess import TileSpec

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    """Every knob of the recipe; the CLI flags map one to one onto these fields."""

    epochs: int = 60
    batch_size: int = 64
    learning_rate: float = 1e-3
    dropout: float = 0.3
    class_weights: bool = True
    resample: str = "none"  # "up": repeat positives, "down": drop negatives, to 1:1
    augment: int = 4  # cached distorted variants per positive training image
    augment_all: bool = False  # also distort negatives (costs K backbone passes each)
    flip: bool = True
    tiles: TileSpec | None = field(default_factory=TileSpec)
    tile_negatives: bool = True  # train on labelled tiles (negatives' tiles, boxed positives)
    l2: float = 0.0  # L2 penalty on head weights
    threshold_policy: str = "precision>=0.9"
    patience: int = 10
    seed: int = 0
    validation_pct: float = 10.0
    test_pct: float = 10.0
    search: bool = False
    tensorboard: str | None = None


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
    x: np.ndarray, y: np.ndarray, x_val: np.ndarray, y_val: np.ndarray, cfg: TrainConfig,
    *, desc: str = "head", progress: bool = True,
) -> tuple[np.ndarray, float, dict[str, Any]]:
    """Train dropout + dense + sigmoid on standardised embeddings; early stop on val PR-AUC."""
    import keras
    from tqdm import tqdm

    keras.utils.set_random_seed(cfg.seed)
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
    weights = {0: len(y) / (2 * neg), 1: len(y) / (2 * pos)} if cfg.class_weights else None
    model = keras.Sequential([keras.Input((x.shape[1],)), keras.layers.Dropout(cfg.dropout),
                              keras.layers.Dense(1, kernel_regularizer=keras.regularizers.L2(
                                  cfg.l2) if cfg.l2 else None)])
    model.compile(optimizer=keras.optimizers.Adam(cfg.learning_rate),
                  loss=keras.losses.BinaryCrossentropy(from_logits=True),
                  metrics=[keras.metrics.AUC(curve="PR", from_logits=True, name="pr_auc")])
    bar = tqdm(total=cfg.epochs, desc=desc, unit="epoch", disable=not progress, leave=False)

    class Progress(keras.callbacks.Callback):
        def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
            logs = logs or {}
            bar.set_postfix(loss=f"{logs.get('loss', 0):.3f}",
                            val_pr_auc=f"{logs.get('val_pr_auc', 0):.3f}")
            bar.update(1)

    callbacks: list[Any] = [Progress(), keras.callbacks.EarlyStopping(
        monitor="val_pr_auc", mode="max", patience=cfg.patience, restore_best_weights=True)]
    if cfg.tensorboard:
        callbacks.append(keras.callbacks.TensorBoard(str(Path(cfg.tensorboard) / desc)))
    hist = model.fit(x, y, validation_data=(x_val, y_val), epochs=cfg.epochs,
                     batch_size=cfg.batch_size, class_weight=weights, verbose=0,
                     callbacks=callbacks, shuffle=True)
    bar.close()
    kernel, bias = model.layers[-1].get_weights()
    best = float(np.max(hist.history.get("val_pr_auc", [float("nan")])))
    return kernel[:, 0], float(bias[0]), {"epochs_run": len(hist.history["loss"]),
                                          "val_pr_auc_keras": best}


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
    grid = [(cfg.learning_rate, cfg.dropout, has_aug)]
    if cfg.search:  # chosen on validation PR-AUC, the seed's "automated model selection"
        grid = [(lr, d, a) for lr in (3e-4, 1e-3) for d in (0.3, 0.5)
                for a in ((True, False) if has_aug else (False,))]
    for brand in brands:
        y_val = labels(val.examples, brand)
        best: tuple[float, np.ndarray, float, dict[str, Any]] | None = None
        for lr, dropout, use_aug in grid:
            trial = TrainConfig(**{**asdict(cfg), "learning_rate": lr, "dropout": dropout,
                                   "tiles": cfg.tiles})
            x, y = training_matrix(train, brand, trial, augmented=use_aug)
            k, b, info = fit_head(zs(x), y, zs(val.whole), y_val, trial, progress=progress,
                                  desc=f"{brand} lr={lr:g} dropout={dropout:g} aug={use_aug}")
            one = Heads([brand], mean, scale, k.reshape(-1, 1), np.array([b], np.float32))
            ap = average_precision(y_val, image_scores(one, val, cfg.tiles is not None)[:, 0])
            if best is None or ap > best[0]:
                best = (ap, k, b, {**info, "learning_rate": lr, "dropout": dropout,
                                   "augmented": use_aug, "train_positives": int(y.sum()),
                                   "train_rows": len(y)})
        assert best is not None
        heads = heads.with_brand(brand, best[1], best[2])
        report[brand] = {"val_average_precision": best[0], **best[3]}
    thresholds = {}
    val_scores = image_scores(heads, val, cfg.tiles is not None)
    for j, brand in enumerate(heads.brands):
        if brand in brands or base is None:
            thresholds[brand] = choose_threshold(labels(val.examples, brand), val_scores[:, j],
                                                 cfg.threshold_policy)
    return heads, thresholds, report


def train_bundle(
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    backbone: str = "inception_v3",
    weights: str | None = "none",
    input_size: int | None = None,
    epochs: int | None = None,
    progress: bool = True,
    config: TrainConfig | None = None,
    cache_dir: str | Path | None = None,
    brands: list[str] | None = None,
    base_bundle: str | Path | None = None,
    seed: int = 0,
) -> Path:
    """Train (or, with `base_bundle` and `brands`, extend) a bundle from class folders.

    `weights`: "none" (random, seeded), "imagenet", a weights file, or None (= imagenet for a
    new bundle, the base bundle's recorded source when extending one).

    The demo uses this with weights="none" at a small input size to get a model in seconds.
    """
    from detector.model import Backbone

    cfg = config or TrainConfig()
    if cfg.tensorboard:
        import importlib.util

        if importlib.util.find_spec("tensorboard") is None:
            raise DetectorError("--tensorboard needs the 'tensorboard' package, which is not "
                                "installed (pip install tensorboard)")
    if epochs is not None:
        cfg.epochs = epochs
    examples, found = list_examples(data_dir, validation_pct=cfg.validation_pct,
                                    test_pct=cfg.test_pct)
    base_heads, base_thresholds = None, {}
    if base_bundle is not None:
        # the base bundle's own backbone source unless a weights file is given explicitly
        base = load_bundle(base_bundle, weights=None if weights in (None, "none") else weights)
        bb, base_heads, base_thresholds = base.backbone, base.heads, base.thresholds
    else:
        bb = Backbone(backbone, weights=weights or "imagenet", input_size=input_size, seed=seed)
    targets = brands or found
    unknown = set(targets) - set(found)
    if unknown:
        raise DetectorError(f"no images for brands {sorted(unknown)} under {data_dir}")
    cache = BottleneckCache(cache_dir or Path(data_dir) / ".bottlenecks", bb.backbone_id)
    train_ex = [e for e in examples if e.split == "train"]
    val_ex = [e for e in examples if e.split == "validation"]
    if not val_ex:
        raise DetectorError("validation split is empty: add images or raise --validation-pct")
    positive = np.array([any(b in e.brands for b in targets) for e in train_ex])
    train = gather(train_ex, bb, cache, tiles=cfg.tiles if cfg.tile_negatives else None,
                   augment=cfg.augment, augment_mask=None if cfg.augment_all else positive,
                   flip=cfg.flip, progress=progress)
    val = gather(val_ex, bb, cache, tiles=cfg.tiles, progress=progress)
    heads, thresholds, report = train_heads(train, val, targets, cfg, base=base_heads,
                                            progress=progress)
    thresholds = {**base_thresholds, **thresholds}
    log.info("bottleneck cache: %d hits, %d misses", cache.stats.hits, cache.stats.misses)
    cfg_doc = {k: v for k, v in asdict(cfg).items() if k != "tiles"}
    return save_bundle(out_dir, backbone=bb.describe(), heads=heads, thresholds=thresholds,
                       tiles=cfg.tiles, extra={
                           "training": {"config": cfg_doc, "data_fingerprint":
                                        fingerprint(train_ex + val_ex), "data_dir":
                                        str(data_dir), "brands_trained": targets},
                           "metrics": {"validation": report},
                       })
