"""Deterministic synthetic brand photos: labelled data for tests, the demo and the benchmark.

Real labelled logo photos cannot ship with the project, and the 2016 failure cases (small
logos, several logos, images busy with other marks and text) are easy to draw on purpose.
Each brand mark is a coloured shape plus a wordmark, pasted on a natural photo from the
scikit-image sample set (cropped, recoloured) at a random scale, rotation and shear, sometimes
partly occluded, among distractor marks and words. Image i depends only on (seed, i), so a
larger set starts with the same images as a smaller one.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from detector.errors import DetectorError

NO_LOGO = "no-logo"
MANIFEST = "manifest.csv"
DEFAULT_BRANDS = ("acme", "globex")
# Shape, colour, wordmark per brand; unknown brand names get a derived style.
_STYLES: dict[str, tuple[str, tuple[int, int, int]]] = {
    "acme": ("circle", (230, 30, 40)),
    "globex": ("triangle", (20, 90, 220)),
    "initech": ("square", (250, 170, 0)),
    "umbrella": ("diamond", (200, 0, 160)),
}
_SHAPES = ("circle", "triangle", "square", "diamond")
_WORDS = ("SALE", "OPEN", "CAFE", "HELLO", "2016", "NEWS", "TAXI", "SHOP", "MENU", "EXIT")
_BACKGROUNDS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
                "ihc.png", "hubble_deep_field.jpg", "brick.png", "grass.png", "gravel.png",
                "camera.png", "page.png", "text.png", "moon.png", "coins.png", "horse.png")
SMALL_FRACTION = 0.12  # a logo whose long side is under this fraction of the image's is "small"


@dataclass(frozen=True)
class SynthImage:
    """One manifest row: file relative to the output dir, brands present, their boxes."""

    file: str
    brands: tuple[str, ...]
    boxes: tuple[tuple[int, int, int, int], ...]
    small: bool


def _style(brand: str) -> tuple[str, tuple[int, int, int]]:
    if brand in _STYLES:
        return _STYLES[brand]
    h = sum(map(ord, brand))
    rng = np.random.default_rng(h)
    return _SHAPES[h % 4], tuple(int(v) for v in rng.integers(0, 256, 3))  # type: ignore[return-value]


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    return ImageFont.load_default(size=max(8, size))


def draw_mark(text: str, shape: str, colour: tuple[int, int, int], px: int) -> Image.Image:
    """An RGBA mark px wide: shape above a wordmark, in one colour (a logo's typical look)."""
    w, h = px, int(px * 0.9)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    s = int(h * 0.58)
    x0, y0 = (w - s) // 2, 2
    box = (x0, y0, x0 + s, y0 + s)
    if shape == "circle":
        d.ellipse(box, fill=colour)
        d.ellipse((x0 + s // 4, y0 + s // 4, x0 + 3 * s // 4, y0 + 3 * s // 4), fill=(255,) * 4)
    elif shape == "triangle":
        d.polygon([(x0 + s // 2, y0), (x0 + s, y0 + s), (x0, y0 + s)], fill=colour)
    elif shape == "square":
        d.rectangle(box, fill=colour)
        d.rectangle((x0 + s // 3, y0 + s // 3, x0 + 2 * s // 3, y0 + 2 * s // 3), fill=(0, 0, 0))
    else:
        d.polygon([(x0 + s // 2, y0), (x0 + s, y0 + s // 2), (x0 + s // 2, y0 + s),
                   (x0, y0 + s // 2)], fill=colour)
    font = _font(int(h * 0.3))
    tw = d.textlength(text.upper(), font=font)
    d.text(((w - tw) / 2, y0 + s + 1), text.upper(), fill=colour, font=font)
    return img


def _background(rng: np.random.Generator, size: tuple[int, int]) -> Image.Image:
    import skimage.data

    name = _BACKGROUNDS[int(rng.integers(len(_BACKGROUNDS)))]
    src = Image.open(Path(skimage.data.__file__).parent / name).convert("RGB")
    sw, sh = src.size
    frac = rng.uniform(0.4, 1.0)
    cw, ch = max(16, int(sw * frac)), max(16, int(sh * frac))
    x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, sh - ch + 1))
    img = src.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.BILINEAR)
    arr = np.asarray(img, np.float32)[:, :, rng.permutation(3)]  # recolour: swap channels
    arr = arr * rng.uniform(0.7, 1.2) + rng.uniform(-20, 20)
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _paste(
    canvas: Image.Image, mark: Image.Image, rng: np.random.Generator, occlude: bool
) -> tuple[int, int, int, int]:
    """Rotate, shear and paste a mark at a random spot; returns its box on the canvas."""
    mark = mark.rotate(float(rng.uniform(-25, 25)), expand=True, resample=Image.Resampling.BICUBIC)
    shear = float(rng.uniform(-0.25, 0.25))
    mw, mh = mark.size
    extra = int(abs(shear) * mh)
    mark = mark.transform((mw + extra, mh), Image.Transform.AFFINE,
                          (1, shear, -extra if shear > 0 else 0, 0, 1, 0),
                          resample=Image.Resampling.BICUBIC)
    mw, mh = mark.size
    cw, ch = canvas.size
    x, y = int(rng.integers(0, max(1, cw - mw))), int(rng.integers(0, max(1, ch - mh)))
    canvas.paste(mark, (x, y), mark)
    box = (x, y, min(cw, x + mw), min(ch, y + mh))
    if occlude:  # a hand, a strap, another object over part of the mark
        ow, oh = int(mw * rng.uniform(0.2, 0.4)), int(mh * rng.uniform(0.2, 0.4))
        ox = x + int(rng.integers(0, max(1, mw - ow)))
        oy = y + int(rng.integers(0, max(1, mh - oh)))
        shade = tuple(int(v) for v in rng.integers(0, 256, 3))
        ImageDraw.Draw(canvas).rectangle((ox, oy, ox + ow, oy + oh), fill=shade)
    return box


def render(
    index: int, *, seed: int, brands: tuple[str, ...], logo_fraction: float,
    size: tuple[int, int], small_fraction: float = 0.5,
) -> tuple[Image.Image, tuple[str, ...], list[tuple[int, int, int, int]], bool]:
    """Image `index` of the set for `seed`: (image, brands present, boxes, small logos?)."""
    rng = np.random.default_rng([seed, index])
    w = int(size[0] * rng.uniform(0.8, 1.2))
    h = int(size[1] * rng.uniform(0.8, 1.2))
    canvas = _background(rng, (w, h))
    draw = ImageDraw.Draw(canvas)
    for _ in range(int(rng.integers(0, 4))):  # distractors: other marks and words
        if rng.random() < 0.5:
            word = _WORDS[int(rng.integers(len(_WORDS)))]
            colour = tuple(int(v) for v in rng.integers(0, 256, 3))
            draw.text((int(rng.integers(0, w // 2)), int(rng.integers(0, h - 20))), word,
                      fill=colour, font=_font(int(rng.integers(12, 40))))
        else:
            shape = _SHAPES[int(rng.integers(4))]
            colour = tuple(int(v) for v in rng.integers(40, 200, 3))
            word = _WORDS[int(rng.integers(len(_WORDS)))]
            mark = draw_mark(word, shape, colour, int(min(w, h) * rng.uniform(0.08, 0.3)))
            _paste(canvas, mark, rng, occlude=False)
    present: list[str] = []
    boxes: list[tuple[int, int, int, int]] = []
    small = False
    if rng.random() < logo_fraction:
        count = 1 if len(brands) == 1 or rng.random() < 0.7 else 2
        chosen = rng.choice(len(brands), size=min(count, len(brands)), replace=False)
        is_small = rng.random() < small_fraction
        for k in sorted(int(c) for c in chosen):
            shape, colour = _style(brands[k])
            frac = rng.uniform(0.06, SMALL_FRACTION - 0.01) if is_small else rng.uniform(0.15, 0.4)
            mark = draw_mark(brands[k], shape, colour, max(12, int(max(w, h) * frac)))
            boxes.append(_paste(canvas, mark, rng, occlude=rng.random() < 0.25))
            present.append(brands[k])
        small = is_small
    return canvas, tuple(present), boxes, small


def generate(
    out_dir: str | Path,
    *,
    n_images: int,
    brands: tuple[str, ...] = DEFAULT_BRANDS,
    logo_fraction: float = 0.1,
    seed: int = 0,
    size: tuple[int, int] = (480, 360),
    small_fraction: float = 0.5,
    quality: int = 88,
) -> list[SynthImage]:
    """Write `n_images` JPEGs as <out>/<first brand or no-logo>/synth_<seed>_<i>.jpg plus
    `manifest.csv` (file, brands, boxes, small), and return the manifest rows."""
    if not brands or NO_LOGO in brands:
        raise DetectorError(f"brands must be non-empty and must not include {NO_LOGO!r}")
    if not 0.0 <= logo_fraction <= 1.0:
        raise DetectorError(f"logo fraction must be in [0, 1], got {logo_fraction}")
    out = Path(out_dir)
    rows: list[SynthImage] = []
    for i in range(n_images):
        img, present, boxes, small = render(i, seed=seed, brands=tuple(brands),
                                            logo_fraction=logo_fraction, size=size,
                                            small_fraction=small_fraction)
        folder = present[0] if present else NO_LOGO
        rel = f"{folder}/synth_{seed}_{i:06d}.jpg"
        (out / folder).mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        img.save(buf, "JPEG", quality=quality)
        (out / rel).write_bytes(buf.getvalue())
        rows.append(SynthImage(rel, present, tuple(boxes), small))
    write_manifest(out / MANIFEST, rows)
    for b in brands:
        (out / b).mkdir(parents=True, exist_ok=True)
    (out / NO_LOGO).mkdir(parents=True, exist_ok=True)
    return rows


def write_manifest(path: Path, rows: list[SynthImage]) -> None:
    with path.open("w", newline="") as f:
        wr = csv.writer(f)
        wr.writerow(["file", "brands", "boxes", "small"])
        for r in rows:
            wr.writerow([r.file, ";".join(r.brands), json.dumps([list(b) for b in r.boxes]),
                         int(r.small)])


def read_manifest(path: str | Path) -> list[SynthImage]:
    """Rows of a manifest; `path` is the CSV or the data directory that holds it.

    The demo uses this to list images with their ground-truth brands.
    """
    p = Path(path)
    p = p / MANIFEST if p.is_dir() else p
    if not p.is_file():
        raise DetectorError(f"no manifest at {p}")
    rows = []
    with p.open(newline="") as f:
        for rec in csv.DictReader(f):
            brands = tuple(b for b in (rec.get("brands") or "").split(";") if b)
            boxes = tuple(tuple(b) for b in json.loads(rec.get("boxes") or "[]"))
            rows.append(SynthImage(rec["file"], brands, boxes,  # type: ignore[arg-type]
                                   bool(int(rec.get("small") or 0))))
    return rows
