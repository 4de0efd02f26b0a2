"""Labelled images on disk, their stable split, and the bottleneck cache.

Layout (retrain.py's): one folder per class, `data/<brand>/` and `data/no-logo/`, plus an
optional `data/manifest.csv` (file, brands) that gives the full brand list of images showing
several brands. The split hashes the file name (ignoring anything after `_nohash_`, so
variants of one photo stay together): adding images never moves an old image between sets.

The cache stores one embedding array per (image content, variant, tap) under
`<cache>/<features_id>/` (weights, input size, preprocessing, precision), so it survives
renames, is shared by every head and every tap choice on the same weights, and cannot mix
embeddings of different weights or preprocessing. Augmented
variants are computed once and cached too: every epoch after the first costs only the head.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageEnhance

from detector.errors import DetectorError
from detector.preprocess import ImageError, TileSpec, decode, fit_square, prepare

NO_LOGO = "no-logo"
EXTENSIONS = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
SPLITS = ("train", "validation", "test")
_MAX_PER_CLASS = 2**27 - 1


@dataclass(frozen=True)
class Example:
    """One labelled image; `brands` empty means no logo."""

    path: Path
    brands: tuple[str, ...]
    split: str
    small: bool = False
    # Logo boxes aligned with `brands` when a manifest gives them (synthetic data does): they
    # let training label each tile, not just the whole image.
    boxes: tuple[tuple[int, int, int, int], ...] = ()

    @property
    def name(self) -> str:
        return self.path.name


def group_of(file_name: str) -> str:
    """The group a file belongs to: its name before `_nohash_` (images drawn on one source
    photo share it, so they land in one split)."""
    return re.sub(r"_nohash_.*$", "", file_name)


def split_of(file_name: str, validation_pct: float = 10.0, test_pct: float = 10.0) -> str:
    """retrain.py's scheme: a SHA-1 of the name's group (`group_of`) picks the set, forever."""
    digest = int(hashlib.sha1(group_of(file_name).encode("utf-8")).hexdigest(), 16)
    pct = (digest % (_MAX_PER_CLASS + 1)) * (100.0 / _MAX_PER_CLASS)
    if pct < validation_pct:
        return "validation"
    if pct < validation_pct + test_pct:
        return "test"
    return "train"


Labels = tuple[tuple[str, ...], bool, tuple[tuple[int, int, int, int], ...]]


def _manifest_labels(data_dir: Path) -> dict[str, Labels]:
    path = data_dir / "manifest.csv"
    if not path.is_file():
        return {}
    out = {}
    with path.open(newline="") as f:
        for rec in csv.DictReader(f):
            brands = tuple(b for b in (rec.get("brands") or "").split(";") if b)
            boxes = tuple(tuple(int(v) for v in b) for b in json.loads(rec.get("boxes") or "[]"))
            if len(boxes) != len(brands):
                boxes = ()
            out[rec["file"]] = (brands, bool(int(rec.get("small") or 0)), boxes)
    return out


def list_examples(
    data_dir: str | Path, *, validation_pct: float = 10.0, test_pct: float = 10.0
) -> tuple[list[Example], list[str]]:
    """All images under the class folders, with split and brands; plus the sorted brand list."""
    root = Path(data_dir)
    if not root.is_dir():
        raise DetectorError(f"data directory not found: {root}")
    manifest = _manifest_labels(root)
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    brands = sorted({p.name for p in folders if p.name != NO_LOGO}
                    | {b for bs, _, _ in manifest.values() for b in bs})
    if not brands:
        raise DetectorError(f"{root} has no brand folders (expected <brand>/ and {NO_LOGO}/)")
    examples = []
    for folder in folders:
        for f in sorted(folder.iterdir()):
            if f.suffix.lower() not in EXTENSIONS:
                continue
            rel = f"{folder.name}/{f.name}"
            default = () if folder.name == NO_LOGO else (folder.name,)
            labels, small, boxes = manifest.get(rel, (default, False, ()))
            examples.append(Example(f, labels, split_of(f.name, validation_pct, test_pct), small,
                                    boxes))
    if not examples:
        raise DetectorError(f"no images found under {root}")
    return examples, brands


def image_size(path: Path) -> tuple[int, int]:
    """Upright (EXIF-applied) size from the header only, for tile boxes."""
    with Image.open(path) as img:
        w, h = img.size
        orientation = int(img.getexif().get(0x0112, 1))
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def fingerprint(examples: list[Example]) -> str:
    """Identifies the training data (names and labels) in the bundle's metadata."""
    h = hashlib.sha256()
    for e in sorted(examples, key=lambda e: str(e.path)):
        h.update(f"{e.path.parent.name}/{e.name}|{';'.join(e.brands)}|{e.split}\n".encode())
    return h.hexdigest()[:16]


# Part of the cache key of augmented variants: change it when `augment` changes.
AUGMENT_VERSION = "a2"


def augment(img: Image.Image, rng: np.random.Generator, *, flip: bool = True) -> Image.Image:
    """retrain.py's distortions, kept mild: random crop (>= 85% of the area), brightness
    +-15%, flip. Harder crops cut small logos out of positives (label noise), and strong
    brightness shifts on positives only teach the head "unusual exposure = logo"."""
    w, h = img.size
    area = rng.uniform(0.85, 1.0)
    aspect = rng.uniform(0.8, 1.25)
    cw = min(w, max(8, int(w * np.sqrt(area * aspect))))
    ch = min(h, max(8, int(h * np.sqrt(area / aspect))))
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    out = img.crop((x, y, x + cw, y + ch))
    out = ImageEnhance.Brightness(out).enhance(float(rng.uniform(0.85, 1.15)))
    if flip and rng.random() < 0.5:
        out = out.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return out


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    failed: list[tuple[Path, str]] = field(default_factory=list)


class BottleneckCache:
    """Embeddings on disk keyed by content hash + cache id + variant (+ tap).

    With `parts` (tap key, width) pairs, an embedding is stored one file per tap and read back
    as their concatenation: a backbone with several candidate taps fills every tap's entry in
    one pass, and a backbone cut after one of them finds its entries there (`for_backbone`).
    """

    def __init__(self, root: str | Path, cache_id: str,
                 parts: Sequence[tuple[str, int]] | None = None) -> None:
        self.dir = Path(root) / cache_id
        self.dir.mkdir(parents=True, exist_ok=True)
        self.parts = list(parts) if parts else [("", 0)]
        self.stats = CacheStats()

    @classmethod
    def for_backbone(cls, root: str | Path, backbone: Any) -> BottleneckCache:
        """Shared by every backbone with the same weights, input size and precision."""
        return cls(root, backbone.features_id,
                   [(t.key, d) for t, d in zip(backbone.taps, backbone.tap_dims, strict=True)])

    def _path(self, digest: str, variant: str, part: str) -> Path:
        name = f"{digest}.{variant}.{part}.npy" if part else f"{digest}.{variant}.npy"
        return self.dir / digest[:2] / name

    def get(self, digest: str, variant: str) -> np.ndarray | None:
        paths = [self._path(digest, variant, key) for key, _ in self.parts]
        if not all(p.is_file() for p in paths):
            return None
        arrays = [np.load(p) for p in paths]
        return arrays[0] if len(arrays) == 1 else np.concatenate(arrays, axis=-1)

    def put(self, digest: str, variant: str, value: np.ndarray) -> None:
        at = 0
        for key, width in self.parts:
            part = value if not key else value[..., at : at + width]
            at += width
            p = self._path(digest, variant, key)
            p.parent.mkdir(parents=True, exist_ok=True)
            tmp = p.with_suffix(".tmp.npy")
            np.save(tmp, part.astype(np.float32))
            tmp.replace(p)  # atomic: a crash never leaves a half-written embedding


def variant_pixels(
    data: bytes, digest: str, variant: str, size: int, flip: bool = True
) -> np.ndarray:
    """The (T, S, S, 3) inputs of one cache variant: 'whole', 'tiles-g<g>o<ov>',
    'aug<AUGMENT_VERSION>-<k>'."""
    if variant == "whole":
        return np.stack([prepare(data, size)[0].pixels])
    if variant.startswith("tiles-"):
        g, ov = re.fullmatch(r"tiles-g(\d+)o([0-9.]+)", variant).groups()  # type: ignore[union-attr]
        spec = TileSpec(int(g), float(ov))
        return np.stack([t.pixels for t in prepare(data, size, tiles=spec)[1:]])
    if variant.startswith(f"aug{AUGMENT_VERSION}-"):
        k = int(variant.rsplit("-", 1)[1])
        seed = int(digest[:8], 16) + k  # deterministic per image and k
        img = augment(decode(data), np.random.default_rng(seed), flip=flip)
        return np.stack([fit_square(img, size)])
    raise ValueError(f"unknown variant {variant}")


def embed_files(
    paths: list[Path],
    variant: str,
    cache: BottleneckCache,
    embed: Callable[[np.ndarray], np.ndarray],
    size: int,
    *,
    batch: int = 32,
    progress: bool = True,
    flip: bool = True,
) -> list[np.ndarray | None]:
    """One (T, D) array per path (None for undecodable images), filling the cache in batches.

    Cached entries are read without decoding; misses are preprocessed and embedded `batch`
    images at a time so the backbone always sees full batches.
    """
    from detector.progress import progress as progress_bar

    out: list[np.ndarray | None] = [None] * len(paths)
    todo: list[tuple[int, str, np.ndarray]] = []
    bar = progress_bar(total=len(paths), desc=f"bottlenecks {variant}", enabled=progress,
                       unit="img", leave=False)

    def flush() -> None:
        if not todo:
            return
        px = np.concatenate([t[2] for t in todo])
        emb = embed(px)
        at = 0
        for i, digest, p in todo:
            value = emb[at : at + len(p)]
            at += len(p)
            cache.put(digest, variant, value)
            out[i] = value
        bar.update(len(todo))
        todo.clear()

    for i, path in enumerate(paths):
        data = path.read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        hit = cache.get(digest, variant)
        if hit is not None:
            cache.stats.hits += 1
            out[i] = hit
            bar.update(1)
            continue
        cache.stats.misses += 1
        try:
            px = variant_pixels(data, digest, variant, size, flip)
        except ImageError as exc:
            cache.stats.failed.append((path, exc.status))
            bar.update(1)
            continue
        todo.append((i, digest, px))
        if sum(len(t[2]) for t in todo) >= batch:
            flush()
    flush()
    bar.close()
    return out


def iter_split(examples: list[Example], split: str) -> Iterator[Example]:
    if split not in (*SPLITS, "all"):
        raise DetectorError(f"unknown split {split!r}; choose from {(*SPLITS, 'all')}")
    return (e for e in examples if split == "all" or e.split == split)


def thumbnail(path: Path, px: int = 128) -> np.ndarray:
    """A small RGB array for contact sheets (grey square if the image cannot be read)."""
    try:
        img = decode(path.read_bytes())
        return fit_square(img, px)
    except (ImageError, OSError):
        return np.full((px, px, 3), 128, np.uint8)

