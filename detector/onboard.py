"""Onboarding a brand from its logo file alone: synthesised positives, the feed as negatives.

`logowatch brands add` has a logo and the user's own (unlabelled) feed images, no labelled
photos. Positives are drawn here by compositing the logo onto feed images with the variation
real photos have (scale from tiny to large, rotation and perspective, colour and exposure,
blur, partial occlusion, placement on textured regions, JPEG re-compression); the feed images
themselves are the negatives. The result is a class-folder data set with a manifest of boxes
(so training labels tiles too), and `train_brand` adds one head to an existing bundle on its
cached backbone taps. This renderer is independent of `detector.synth` on purpose: the
synthetic benchmark must not test the renderer on its own images.

Split: a positive is named after its background (`<background>_nohash_<render>`), so it lands
in the same train/validation split as that background's negative: validation positives sit on
backgrounds training never saw. The validation estimate is still optimistic: its positives
come from the same renderer as the training ones, and the unlabelled feed negatives may hold
the brand.
"""

from __future__ import annotations

import hashlib
import io
import re
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, UnidentifiedImageError

from detector.datasets import EXTENSIONS, NO_LOGO, list_examples
from detector.errors import DetectorError
from detector.preprocess import ImageError, decode
from detector.synth import MANIFEST, SMALL_FRACTION, SynthImage, read_manifest, write_manifest

HEAD_NAME = re.compile(r"[a-z0-9][a-z0-9_.-]{0,63}")  # also a folder name in the data set
RENDER_VERSION = "r2"  # in positive file names: change it when the renderer changes
MAX_SIDE = 640  # backgrounds are reduced to this long side (the backbone sees 299 px tiles)
MAX_LOGO = 1024  # logo files are reduced to this long side: a pasted logo is <= 45% of 640 px
_ALPHA_MIN = 24  # alpha below this is "not visible" for cropping and boxes
_KEY_TOLERANCE = 40.0  # RGB distance from the border colour that still counts as background
OPTIMISTIC = ("optimistic estimate: validation is synthetic, its positives come from the same "
              "renderer as the training positives and the unlabelled feed negatives may hold "
              "the brand, so precision and recall on real photos will be lower")


def _svg(path: Path) -> Image.Image:
    try:
        import cairosvg  # type: ignore[import-not-found]
    except (ImportError, OSError) as exc:  # OSError: the system's libcairo is missing
        raise DetectorError(f"{path}: SVG logos need CairoSVG and the cairo library "
                            f"({exc}); or give a PNG/WebP export of the logo") from None
    try:
        return Image.open(io.BytesIO(cairosvg.svg2png(url=str(path), output_width=512)))
    except Exception as exc:  # cairosvg raises many kinds for a broken file
        raise DetectorError(f"{path}: cannot rasterise the SVG: {exc}") from None


def _key_border(rgba: Image.Image) -> Image.Image:
    """Transparent where the pixel is near the border's colour and connected to the border.

    A logo without alpha (a JPEG, a flattened PNG) usually sits on a uniform colour: keying
    out that colour from the border inwards pastes the mark, not a white rectangle, and keeps
    enclosed areas of the same colour (the white inside a ring) as part of the mark. A border
    that is not uniform (a photo, a badge filling the frame) is left as it is.
    """
    from scipy import ndimage

    rgb = np.asarray(rgba.convert("RGB"), np.float32)
    border = np.concatenate([rgb[0], rgb[-1], rgb[:, 0], rgb[:, -1]])
    colour = np.median(border, axis=0)
    if np.mean(np.linalg.norm(border - colour, axis=1) < _KEY_TOLERANCE) < 0.9:
        return rgba
    near = np.linalg.norm(rgb - colour, axis=2) < _KEY_TOLERANCE
    regions, _ = ndimage.label(near)
    edge = np.unique(np.concatenate([regions[0], regions[-1], regions[:, 0], regions[:, -1]]))
    background = np.isin(regions, edge[edge > 0])
    alpha = np.where(background, 0, np.asarray(rgba.getchannel("A"))).astype(np.uint8)
    out = rgba.copy()
    out.putalpha(Image.fromarray(alpha))
    return out


def load_logo(path: str | Path) -> Image.Image:
    """RGBA logo cropped to its visible content; DetectorError (one clear line) for
    unreadable/unsupported/empty files. A logo without transparency gets its uniform border
    colour keyed out (see `_key_border`); SVG needs `cairosvg` installed."""
    p = Path(path)
    if not p.is_file():
        raise DetectorError(f"logo file not found: {p}")
    if p.suffix.lower() == ".svg":
        img = _svg(p)
    else:
        try:
            img = Image.open(p)
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DetectorError(f"{p}: not a logo image Pillow can read (PNG, WebP, JPEG): "
                                f"{exc}") from None
    img = img.convert("RGBA")
    img.thumbnail((MAX_LOGO, MAX_LOGO), Image.Resampling.LANCZOS)
    if min(img.getchannel("A").getextrema()) == 255:  # no transparency at all
        img = _key_border(img)
    box = img.getchannel("A").point(lambda a: 255 if a >= _ALPHA_MIN else 0).getbbox()
    if box is None:
        raise DetectorError(f"{p}: the logo is empty (no visible pixels after removing its "
                            "background)")
    return img.crop(box)


def check_brand_name(brand: str) -> str:
    """The brand as a head's name (it becomes a folder of the data set): lower-case letters,
    digits, ``_ - .``, not ``no-logo``; DetectorError otherwise."""
    if not HEAD_NAME.fullmatch(brand) or brand == NO_LOGO:
        raise DetectorError(f"brand {brand!r}: a detector head's name is lower-case letters, "
                            "digits, '_', '-' or '.', starting with a letter or digit (say the "
                            "brand's spelling with --display-name), and not 'no-logo'")
    return brand


def _digest(data: bytes) -> str:
    return hashlib.sha1(data).hexdigest()[:16]


def perspective(mark: Image.Image, rng: np.random.Generator, amount: float) -> Image.Image:
    """A random projective warp: each corner moves up to `amount` of the mark's size."""
    w, h = mark.size
    src = np.array([(0, 0), (w, 0), (w, h), (0, h)], np.float64)
    dst = src + rng.uniform(-amount, amount, (4, 2)) * (w, h)
    dst -= dst.min(axis=0)
    size = tuple(int(np.ceil(v)) + 1 for v in dst.max(axis=0))
    # coefficients of the output→input map: u = (a x + b y + c) / (g x + h y + 1), v likewise
    rows, rhs = [], []
    for (x, y), (u, v) in zip(dst, src, strict=True):
        rows += [[x, y, 1, 0, 0, 0, -u * x, -u * y], [0, 0, 0, x, y, 1, -v * x, -v * y]]
        rhs += [u, v]
    coeffs = np.linalg.solve(np.array(rows), np.array(rhs))
    return mark.transform(size, Image.Transform.PERSPECTIVE, tuple(coeffs),
                          resample=Image.Resampling.BICUBIC)


def _distort(logo: Image.Image, px: int, rng: np.random.Generator) -> Image.Image:
    """The logo as a camera sees it: scaled, recoloured, rotated, warped, maybe faded and
    blurred. Blur works on premultiplied alpha, so transparent pixels do not darken edges."""
    scale = px / max(logo.size)
    mark = logo.resize((max(2, round(logo.width * scale)), max(2, round(logo.height * scale))),
                       Image.Resampling.LANCZOS)
    rgb, alpha = mark.convert("RGB"), mark.getchannel("A")
    # exposure varies a lot; hue and saturation little: colour is much of what tells a brand's
    # mark from other marks of the same shape (a wider jitter let those through)
    rgb = ImageEnhance.Brightness(rgb).enhance(float(rng.uniform(0.7, 1.25)))
    rgb = ImageEnhance.Contrast(rgb).enhance(float(rng.uniform(0.8, 1.15)))
    rgb = ImageEnhance.Color(rgb).enhance(float(rng.uniform(0.85, 1.2)))
    gains = rng.uniform(0.95, 1.05, 3)
    rgb = Image.fromarray(np.clip(np.asarray(rgb, np.float32) * gains, 0, 255).astype(np.uint8))
    if rng.random() < 0.25:  # printed on fabric, faded, seen through glass
        fade = float(rng.uniform(0.6, 0.95))
        alpha = alpha.point(lambda a: int(a * fade))
    mark = rgb.convert("RGBA")
    mark.putalpha(alpha)
    mark = mark.rotate(float(rng.uniform(-30, 30)), expand=True,
                       resample=Image.Resampling.BICUBIC)
    mark = perspective(mark, rng, float(rng.uniform(0.0, 0.15)))
    if rng.random() < 0.35:
        radius = float(rng.uniform(0.3, 1.0)) * max(1.0, px / 100)
        mark = mark.convert("RGBa").filter(ImageFilter.GaussianBlur(radius)).convert("RGBA")
    return mark


def _textured_spot(canvas: Image.Image, size: tuple[int, int],
                   rng: np.random.Generator) -> tuple[int, int]:
    """The busiest of a few random spots (mean gradient under the mark): logos on shirts,
    shelves and signs, not only on sky."""
    grey = np.asarray(canvas.convert("L"), np.float32)
    grad = np.abs(np.diff(grey, axis=0))[:, :-1] + np.abs(np.diff(grey, axis=1))[:-1]
    w, h = size
    spots = [(int(rng.integers(0, max(1, canvas.width - w))),
              int(rng.integers(0, max(1, canvas.height - h)))) for _ in range(12)]
    return max(spots, key=lambda s: float(grad[s[1]:s[1] + h, s[0]:s[0] + w].mean() or 0.0))


def render_positive(
    logos: list[Image.Image], background: Image.Image, rng: np.random.Generator
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """One synthetic photo: the background with one (sometimes two) distorted logos pasted,
    sometimes partly covered; returns the image and the logos' boxes."""
    canvas = background.convert("RGB")
    if max(canvas.size) > MAX_SIDE:
        s = MAX_SIDE / max(canvas.size)
        canvas = canvas.resize((round(canvas.width * s), round(canvas.height * s)),
                               Image.Resampling.BILINEAR)
    cw, ch = canvas.size
    boxes = []
    for _ in range(1 if rng.random() < 0.85 else 2):
        small = rng.random() < 0.5  # half tiny (seen mostly by the tiles), half larger
        frac = rng.uniform(0.04, SMALL_FRACTION) if small else rng.uniform(SMALL_FRACTION, 0.45)
        mark = _distort(logos[int(rng.integers(len(logos)))], max(10, int(max(cw, ch) * frac)),
                        rng)
        if mark.width > cw or mark.height > ch:
            fit = 0.95 * min(cw / mark.width, ch / mark.height)
            mark = mark.resize((max(2, int(mark.width * fit)), max(2, int(mark.height * fit))),
                               Image.Resampling.BICUBIC)
        if rng.random() < 0.35:
            x, y = _textured_spot(canvas, mark.size, rng)
        else:
            x = int(rng.integers(0, max(1, cw - mark.width)))
            y = int(rng.integers(0, max(1, ch - mark.height)))
        canvas.paste(mark, (x, y), mark)
        vis = mark.getchannel("A").point(lambda a: 255 if a >= _ALPHA_MIN else 0).getbbox()
        if vis is None:
            continue
        box = (x + vis[0], y + vis[1], min(cw, x + vis[2]), min(ch, y + vis[3]))
        if rng.random() < 0.25:  # a hand, a strap, another object over part of the logo
            bw, bh = box[2] - box[0], box[3] - box[1]
            ow, oh = int(bw * rng.uniform(0.15, 0.4)), int(bh * rng.uniform(0.15, 0.4))
            ox = box[0] + int(rng.integers(0, max(1, bw - ow)))
            oy = box[1] + int(rng.integers(0, max(1, bh - oh)))
            if rng.random() < 0.5:  # a piece of the scene itself, or a plain object
                sx = int(rng.integers(0, max(1, cw - ow)))
                sy = int(rng.integers(0, max(1, ch - oh)))
                canvas.paste(canvas.crop((sx, sy, sx + ow, sy + oh)), (ox, oy))
            else:
                shade = tuple(int(v) for v in rng.integers(0, 256, 3))
                ImageDraw.Draw(canvas).ellipse((ox, oy, ox + ow, oy + oh), fill=shade)
        boxes.append(box)
    return canvas, boxes


def _feed_name(data: bytes, suffix: str) -> str:
    """Content-named, with `_nohash_` so the positives drawn on it share its split."""
    ext = suffix.lower() if suffix.lower() in EXTENSIONS else ".jpg"
    return f"feed-{_digest(data)}_nohash_{ext}"


def _copy_images(paths: list[Path], folder: Path, prefix: str) -> tuple[list[Path], int]:
    """Readable images copied (content-named) into folder; returns the copies and how many
    were unreadable. A copy already there is not decoded or written again."""
    out, bad = [], 0
    folder.mkdir(parents=True, exist_ok=True)
    for p in paths:
        data = Path(p).read_bytes()
        name = _feed_name(data, Path(p).suffix)
        target = folder / (name if prefix == "feed" else f"{prefix}-{name[5:]}")
        if not target.is_file():
            try:
                decode(data)
            except ImageError:
                bad += 1
                continue
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.replace(target)
        if target not in out:
            out.append(target)
    return sorted(out), bad


def build_training_set(
    out_dir: str | Path, brand: str, logos: list[Image.Image], feed: Sequence[Path], *,
    n_positives: int = 300, seed: int = 0, progress: bool = True,
    real_positives: Sequence[Path] = (), real_negatives: Sequence[Path] = (),
    quality: tuple[int, int] = (55, 95),
) -> dict[str, Any]:
    """Writes out_dir/<brand>/*.jpg (synthesised positives, + real_positives copied),
    out_dir/no-logo/*.jpg (the feed images as negatives, + real_negatives) and
    out_dir/manifest.csv with the positives' boxes. `feed` images serve both as backgrounds
    and as negatives. Idempotent and resumable: files already there are not redrawn (their
    boxes come from the manifest); same inputs + seed give byte-identical files, whatever the
    order of `feed`. `quality`: the JPEG quality range of the positives. Returns counts.
    """
    from detector.progress import progress as progress_bar

    check_brand_name(brand)
    if not logos:
        raise DetectorError("no logo given")
    out = Path(out_dir)
    negatives, bad = _copy_images(list(feed), out / NO_LOGO, "feed")
    if not negatives:
        raise DetectorError("no readable feed images: the backgrounds and negatives come "
                            "from the feed")
    real_neg, bad_neg = _copy_images(list(real_negatives), out / NO_LOGO, "real")
    real_pos, bad_pos = _copy_images(list(real_positives), out / brand, "real")
    # the logos' pixels are part of the positives' names: another logo never reuses them
    h = hashlib.sha1()
    for logo in logos:
        h.update(f"{logo.size}".encode() + logo.convert("RGBA").tobytes())
    tag = f"onb{RENDER_VERSION}-{h.hexdigest()[:8]}-s{seed}"
    known = {r.file: r for r in read_manifest(out)} if (out / MANIFEST).is_file() else {}
    rows = {f"{brand}/{p.name}": SynthImage(f"{brand}/{p.name}", (brand,), (), False)
            for p in real_pos}
    rows.update({f"{NO_LOGO}/{p.name}": SynthImage(f"{NO_LOGO}/{p.name}", (), (), False)
                 for p in [*negatives, *real_neg]})

    def save() -> None:  # keeps other brands' rows (one folder may onboard several brands)
        merged = {**{k: r for k, r in known.items() if (out / k).is_file()}, **rows}
        write_manifest(out / (MANIFEST + ".tmp"), [merged[k] for k in sorted(merged)])
        (out / (MANIFEST + ".tmp")).replace(out / MANIFEST)

    folder = out / brand
    for i in progress_bar(range(n_positives), desc=f"rendering {brand}", unit="img",
                          enabled=progress, leave=False):
        rng = np.random.default_rng([seed, i, zlib.crc32(brand.encode())])
        bg = negatives[int(rng.integers(len(negatives)))]
        rel = f"{brand}/{bg.name.split('_nohash_')[0]}_nohash_{tag}-{i:05d}.jpg"
        if (out / rel).is_file() and rel in known:
            rows[rel] = known[rel]
            continue
        img, boxes = render_positive(logos, decode(bg.read_bytes()), rng)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=int(rng.integers(quality[0], quality[1] + 1)))
        tmp = out / (rel + ".tmp")
        tmp.write_bytes(buf.getvalue())
        tmp.replace(out / rel)
        small = any(max(b[2] - b[0], b[3] - b[1]) < SMALL_FRACTION * max(img.size) for b in boxes)
        # no box (never seen): still a positive, its tiles are then not labelled
        rows[rel] = SynthImage(rel, (brand,) * max(1, len(boxes)), tuple(boxes), small)
        if i % 50 == 49:  # an interrupted run keeps the boxes of what it drew
            save()
    for stale in folder.glob("*_nohash_onb*.jpg"):  # drawn by another logo, seed or count
        if f"{brand}/{stale.name}" not in rows:
            stale.unlink()
    save()
    return {"positives": n_positives, "real_positives": len(real_pos),
            "negatives": len(negatives), "real_negatives": len(real_neg),
            "unreadable": bad + bad_neg + bad_pos,
            "small_positives": sum(r.small for k, r in rows.items() if "_nohash_onb" in k)}


def _conservative_threshold(path: Path, brand: str, val: list[Any], backbone: Any, cache: Any,
                            policy: str, progress: bool) -> Path:
    """Rewrites the bundle with `brand`'s threshold chosen on the whole validation split, the
    set-aside feed images back in as negatives: a head must not pick its threshold on a
    validation set it cleaned itself (that threshold let 2-3x the false positives through on
    the benchmark). The heads, and so the ranking, stay those trained without them."""
    from detector.bundle import load_bundle, save_bundle
    from detector.metrics import at_threshold, choose_threshold
    from detector.train import gather, image_scores, labels

    b = load_bundle(path, backbone=backbone)
    feats = gather(val, backbone, cache, tiles=b.tiles, progress=progress)
    scores = image_scores(b.heads, feats, b.tiles is not None)[:, b.brands.index(brand)]
    y = labels(feats.examples, brand)
    threshold = choose_threshold(y, scores, policy)
    m = at_threshold(y, scores, threshold)
    metrics = b.metadata["metrics"]
    metrics["validation"][brand].update(val_precision=m["precision"], val_recall=m["recall"],
                                        threshold_on="validation with the set-aside feed "
                                        "images as negatives")
    return save_bundle(path, backbone=b.metadata["backbone"], heads=b.heads,
                       thresholds={**b.thresholds, brand: threshold}, tiles=b.tiles,
                       logos=b.logos,
                       extra={"training": b.metadata["training"], "metrics": metrics})


def train_brand(
    data_dir: str | Path, base_bundle: str | Path, out_dir: str | Path, brand: str, *,
    cache_dir: str | Path | None = None, precision: float = 0.9, progress: bool = True,
    seed: int = 0, validation_pct: float = 20.0, augment: int = 0, set_aside_feed: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """New bundle = every head of base_bundle unchanged + a head for `brand`, same backbone,
    taps, tiles and standardiser; threshold chosen on the held-out synthetic validation split
    for the target precision. Returns (bundle dir, report). No test split: every image trains
    or validates. `augment` 0: the renders are already distorted (and flips would mirror the
    wordmark). `set_aside_feed`: train twice, the second time without the feed images the
    first head finds the brand in (the report lists them); the threshold is then chosen with
    them back in the validation split as negatives (see `_conservative_threshold`)."""
    from detector.bundle import load_bundle, read_metadata
    from detector.datasets import BottleneckCache
    from detector.preprocess import TileSpec
    from detector.train import TrainConfig, gather, image_scores, train_bundle

    base = read_metadata(base_bundle)
    examples, _ = list_examples(data_dir, validation_pct=validation_pct, test_pct=0.0)
    t = base.get("tiles")
    tiles = TileSpec(t["grid"], t["overlap"]) if t else None
    cfg = TrainConfig(augment=augment, flip=False, tiles=tiles, tile_negatives=tiles is not None,
                      threshold_policy=f"precision>={precision}", seed=seed,
                      validation_pct=validation_pct, test_pct=0.0, search=True,
                      marks=False)  # a head, always: renders of the logo are no photos to mine

    def train(exclude: list[Path], backbone: Any = None) -> Path:
        kept = [e for e in examples if e.path not in set(exclude)]
        counts.clear()
        for split in ("train", "validation"):
            for kind, pos in (("positives", True), ("negatives", False)):
                counts[f"{split}_{kind}"] = sum(e.split == split and (brand in e.brands) == pos
                                                for e in kept)
        if min(counts.values()) == 0:
            raise DetectorError(f"{data_dir}: training and validation both need {brand} "
                                f"images and no-logo images, got {counts}")
        return train_bundle(data_dir, out_dir, brands=[brand], base_bundle=base_bundle,
                            config=cfg, cache_dir=cache_dir, progress=progress, seed=seed,
                            exclude=exclude, backbone_model=backbone)

    counts: dict[str, int] = {}
    path = train([])
    set_aside: list[Path] = []
    if set_aside_feed:
        # The feed is unlabelled: some "negatives" show the brand. Those the first head scores
        # at or above its threshold are set aside and the head is trained again without them.
        first = load_bundle(path)
        feed = [e for e in examples if not e.brands and e.path.name.startswith("feed-")]
        cache = BottleneckCache.for_backbone(cache_dir or Path(data_dir) / ".bottlenecks",
                                             first.backbone)
        feats = gather(feed, first.backbone, cache, tiles=first.tiles, progress=progress)
        scores = image_scores(first.heads, feats, first.tiles is not None)
        j = first.brands.index(brand)
        set_aside = [e.path for e, s in zip(feats.examples, scores[:, j], strict=True)
                     if s >= first.thresholds[brand]]
        if set_aside:
            path = _conservative_threshold(train(set_aside, first.backbone), brand, [
                e for e in examples if e.split == "validation"], first.backbone, cache,
                cfg.threshold_policy, progress)
    meta = read_metadata(path)
    val = meta["metrics"]["validation"][brand]
    return path, {"brand": brand, "version": meta["version"], "base_version": base["version"],
                  "threshold": meta["thresholds"][brand], "precision_target": precision,
                  "validation_average_precision": val["val_average_precision"],
                  "validation_precision": val.get("val_precision"),
                  "validation_recall": val.get("val_recall"), "l2": val["l2"], **counts,
                  "feed_set_aside": sorted(p.name for p in set_aside),
                  "note": OPTIMISTIC}

