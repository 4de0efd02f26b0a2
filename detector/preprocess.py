"""Image bytes → backbone-sized RGB arrays, for every odd thing a social-media feed sends.

One pure function of the bytes (`prepare`), so workers can run it in a process pool and the
bottleneck cache can key on the content hash alone.

Crop/pad policy (part of `PREPROCESS_VERSION`): never crop and never distort. The long side
of the image (or tile) is scaled to `size` and the short side is padded symmetrically with
mid-grey (128, 128, 128). Cropping would cut logos near the border; squashing (retrain.py's
policy) changes the shape of a wordmark with the aspect ratio of the photo.

Tiles: the whole image first, then a `grid` x `grid` set of overlapping windows over the
upright image, so a logo that covers 2% of a photo covers ~8% of some tile at the same
backbone input size. Boxes are in the coordinates of the upright (EXIF-applied), full
resolution image, whatever JPEG draft scaling was used to decode it.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, UnidentifiedImageError

from detector.errors import DetectorError

# pp2: images over 16 MP are reduced in integer strips before the resize (bounded memory), and
# the whole image is decoded at its own size with or without tiles (pp1 decoded it at the
# tiles' resolution in tiles mode); pixels differ from pp1's, so embeddings are not
# interchangeable.
PREPROCESS_VERSION = "pp2-pad128-bilinear"
PAD_VALUE = (128, 128, 128)
DEFAULT_MAX_PIXELS = 40_000_000
# Alpha is composited on white: transparent logos are drawn for white pages.
ALPHA_BACKGROUND = (255, 255, 255)
_MAGIC = (
    b"\xff\xd8\xff", b"\x89PNG", b"GIF87a", b"GIF89a", b"BM", b"II*\x00", b"MM\x00*",
)
# EXIF orientations 5..8 swap width and height.
_SWAPS_AXES = {5, 6, 7, 8}
_ORIENT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT, 3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM, 5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270, 7: Image.Transpose.TRANSVERSE, 8: Image.Transpose.ROTATE_90,
}
# Formats whose first frame is the size the header declares, so the pixel limit is checked
# before anything is decoded. Container formats whose frames carry their own size (ICO, ICNS,
# CUR, PSD layers, ...) are refused: an ICO directory saying 256x256 over a 9,400 x 9,400 PNG
# frame would be decoded before any check.
# Pillow decodes WebP through libwebp's animation decoder: about four full RGBA copies (16
# bytes a pixel), so WebP gets a lower pixel limit to keep one image well under +250 MB.
WEBP_MAX_PIXELS = 12_000_000
FORMATS = ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF")
# Pixels converted at a time: mode conversion and reduction work strip by strip, so the only
# full-size buffer is the decoded image itself.
STRIP_PIXELS = 1 << 20
# Decoded images over REDUCE_ABOVE pixels are reduced (box filter, as ``resize(reducing_gap=
# ...)`` does inside) until their long side is at most REDUCE_GAP times what the backbone input
# or the tiles need, so their RGB copy is small. Smaller images keep the exact pixels they
# always had (their full-size RGB copy costs at most 3 bytes a pixel, 48 MB).
REDUCE_ABOVE = 16_000_000
REDUCE_GAP = 3


class ImageError(DetectorError):
    """An image that can never be scored; `status` is the value stored in Postgres."""

    STATUSES = ("decode_failed", "too_large", "not_image")

    def __init__(self, status: str, message: str) -> None:
        if status not in self.STATUSES:
            raise ValueError(f"unknown image status {status!r}")
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class TileSpec:
    """A `grid` x `grid` set of windows; neighbours share `overlap` of a window's side.

    Overlap keeps a logo that straddles a window border whole in at least one window.
    """

    grid: int = 2
    overlap: float = 0.25

    def __post_init__(self) -> None:
        if self.grid < 1:
            raise DetectorError(f"tile grid must be >= 1, got {self.grid}")
        if not 0.0 <= self.overlap < 1.0:
            raise DetectorError(f"tile overlap must be in [0, 1), got {self.overlap}")

    @property
    def zoom(self) -> float:
        """How much larger than the whole image one window is drawn at the same input size."""
        return self.grid - (self.grid - 1) * self.overlap

    def boxes(self, width: int, height: int) -> list[tuple[int, int, int, int]]:
        """Windows over a `width` x `height` image, row by row."""
        out = []
        tw, th = width / self.zoom, height / self.zoom
        for row in range(self.grid):
            for col in range(self.grid):
                x0, y0 = col * tw * (1 - self.overlap), row * th * (1 - self.overlap)
                out.append((round(x0), round(y0), round(min(width, x0 + tw)),
                            round(min(height, y0 + th))))
        return out

    def key(self) -> str:
        return f"g{self.grid}o{self.overlap:g}"


@dataclass(frozen=True)
class Tile:
    """Backbone-ready pixels and where they came from (`box` None = the whole image)."""

    pixels: np.ndarray
    box: tuple[int, int, int, int] | None


def _sniff_image(data: bytes) -> bool:
    head = data[:16]
    if head.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return True
    return any(head.startswith(m) for m in _MAGIC)


def _open(data: bytes, max_pixels: int) -> Image.Image:
    if not data:
        raise ImageError("not_image", "empty body (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data), formats=FORMATS)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageError("too_large", f"image header claims too many pixels: {exc}") from exc
    except UnidentifiedImageError as exc:
        if data.startswith((b"\x00\x00\x01\x00", b"\x00\x00\x02\x00", b"icns", b"8BPS")):
            raise ImageError("not_image", "icon and layered formats are not accepted (only "
                             + ", ".join(FORMATS) + ")") from exc
        if _sniff_image(data):
            raise ImageError("decode_failed", "image header is corrupt") from exc
        raise ImageError(
            "not_image", f"bytes are not an image (starts with {data[:12]!r})"
        ) from exc
    except Exception as exc:
        raise ImageError("decode_failed", f"cannot read image header: {exc}") from exc
    w, h = img.size
    limit = min(max_pixels, WEBP_MAX_PIXELS) if img.format == "WEBP" else max_pixels
    if w * h > limit:
        raise ImageError("too_large", f"{w}x{h} = {w * h} pixels is over the {limit} limit"
                         + (" for WebP" if limit < max_pixels else ""))
    if w < 1 or h < 1:
        raise ImageError("decode_failed", f"image has no pixels ({w}x{h})")
    return img


def _gray_top(img: Image.Image) -> float:
    """The value that maps to white for one-channel 16/32-bit and float images: 16-bit images
    are scaled (not clipped), 32-bit ones only when they hold values above 255."""
    if img.mode.startswith("I;16"):
        return 65535.0
    if img.mode in ("I", "F"):
        top = img.getextrema()[1]
        return 65535.0 if isinstance(top, int | float) and top > 255 else 255.0
    return 255.0


def _to_rgb(img: Image.Image, top: float) -> Image.Image:
    """Every Pillow mode to 8-bit RGB; alpha on white, 16-bit scaled (not clipped). Called on
    strips, so its temporaries are small whatever the image size."""
    mode = img.mode
    if mode == "RGB":
        return img
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        arr = np.clip(np.nan_to_num(np.asarray(img)), 0, top)
        gray = (arr // 257 if top > 255 else arr).astype(np.uint8)
        return Image.fromarray(gray, mode="L").convert("RGB")
    if (mode == "P" and "transparency" in img.info) or mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        canvas = Image.new("RGB", rgba.size, ALPHA_BACKGROUND)
        canvas.paste(rgba, mask=rgba.getchannel("A"))
        return canvas
    return img.convert("RGB")


def _small_rgb(img: Image.Image, need: int) -> Image.Image:
    """RGB, converted strip by strip (and, for images over ``REDUCE_ABOVE`` pixels, box-reduced
    by the largest whole factor that keeps the long side at least ``REDUCE_GAP * need``): peak
    memory is the decoded image plus one strip and the result, never several full-size copies
    in other modes or in floats."""
    w, h = img.size
    factor = 1 if w * h <= REDUCE_ABOVE else max(1, max(w, h) // (REDUCE_GAP * need))
    top = _gray_top(img)
    out = Image.new("RGB", (math.ceil(w / factor), math.ceil(h / factor)))
    rows = factor * max(1, STRIP_PIXELS // (w * factor))
    for y in range(0, h, rows):
        strip = _to_rgb(img.crop((0, y, w, min(h, y + rows))), top)
        out.paste(strip.reduce(factor) if factor > 1 else strip, (0, y // factor))
    return out


def _load_upright(
    data: bytes, need: int, max_pixels: int
) -> tuple[Image.Image, tuple[int, int]]:
    """Decode at the smallest JPEG DCT scale whose long side is still >= `need`.

    Returns the upright RGB image and the full-resolution upright size (for box coordinates).
    """
    img = _open(data, max_pixels)
    w, h = img.size
    try:
        orientation = int(img.getexif().get(0x0112, 1))
    except Exception:
        orientation = 1
    full = (h, w) if orientation in _SWAPS_AXES else (w, h)
    try:
        if getattr(img, "is_animated", False):
            img.seek(0)
        if img.format == "JPEG" and max(w, h) > need:
            s = need / max(w, h)
            img.draft("RGB", (max(1, math.ceil(w * s)), max(1, math.ceil(h * s))))
        img.load()
        if img.size[0] * img.size[1] > max_pixels:  # a frame larger than its header said
            raise ImageError("too_large", f"frame of {img.size[0]}x{img.size[1]} pixels is "
                             f"over the {max_pixels} limit")
        img = _small_rgb(img, need)
        if orientation in _ORIENT:
            img = img.transpose(_ORIENT[orientation])
    except ImageError:
        raise
    except Exception as exc:  # Pillow raises OSError, SyntaxError, ValueError, EOFError ...
        raise ImageError("decode_failed", f"image data is corrupt or truncated: {exc}") from exc
    return img, full


def decode_for(data: bytes, need: int, *, max_pixels: int = DEFAULT_MAX_PIXELS,
               ) -> tuple[Image.Image, tuple[int, int]]:
    """Upright RGB image decoded with its long side at least `need` (or whole, if smaller),
    and the full-resolution upright size (what boxes are given in); raises `ImageError`."""
    return _load_upright(data, need=need, max_pixels=max_pixels)


def decode(data: bytes, *, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Full-resolution upright RGB image of the first frame; raises `ImageError`."""
    img, _ = _load_upright(data, need=1 << 30, max_pixels=max_pixels)
    return img


def fit_square(img: Image.Image, size: int) -> np.ndarray:
    """The documented policy: long side to `size`, pad the short side with grey, no crop."""
    w, h = img.size
    scale = size / max(w, h)
    nw, nh = max(1, round(w * scale)), max(1, round(h * scale))
    resized = img.resize((nw, nh), Image.Resampling.BILINEAR, reducing_gap=3.0)
    canvas = Image.new("RGB", (size, size), PAD_VALUE)
    canvas.paste(resized, ((size - nw) // 2, (size - nh) // 2))
    return np.asarray(canvas, dtype=np.uint8)


def tiles_of(
    img: Image.Image, full: tuple[int, int], size: int, tiles: TileSpec | None
) -> list[Tile]:
    """Whole image, then each window; boxes are mapped back to `full` coordinates."""
    out = [Tile(fit_square(img, size), None)]
    if tiles is None or tiles.grid < 2:
        return out
    sx, sy = img.size[0] / full[0], img.size[1] / full[1]
    for box in tiles.boxes(*full):
        x0, y0, x1, y1 = box
        crop = img.crop((round(x0 * sx), round(y0 * sy), max(round(x1 * sx), round(x0 * sx) + 1),
                         max(round(y1 * sy), round(y0 * sy) + 1)))
        out.append(Tile(fit_square(crop, size), box))
    return out


def prepare(
    data: bytes,
    size: int,
    *,
    tiles: TileSpec | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
) -> list[Tile]:
    """Bytes → [whole image, *tiles] as (size, size, 3) uint8; raises `ImageError`.

    JPEGs are decoded with DCT scaling to just the resolution needed, which makes a
    12-megapixel photo several times cheaper than a full decode. The whole image is always
    decoded for the whole image's size, tiles or not: its pixels (and so its embedding, which
    is stored and trained on) must not depend on whether tiles were asked for. Tiles that
    need more resolution than that decode has get a second, larger one.
    """
    img, full = _load_upright(data, need=size, max_pixels=max_pixels)
    out = tiles_of(img, full, size, None)
    if tiles is None or tiles.grid < 2:
        return out
    need = math.ceil(size * tiles.zoom)
    if max(img.size) < min(need, max(full)):  # decoded smaller than the tiles can use
        img, _ = _load_upright(data, need=need, max_pixels=max_pixels)
    return out + tiles_of(img, full, size, tiles)[1:]
