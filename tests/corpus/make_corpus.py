"""Writes the bad-input corpus: wire records and image files the worker must survive.

Run from the repository root: ``python tests/corpus/make_corpus.py``. The outputs are small and
committed; this script is how they were made (deterministic, no network). ``expected.json``
names, for every file, the outcome the reliability suite checks and ``docs/reliability.md``
lists: a dead letter with its reason, or a post row with its image status.

Record files are raw Kafka message values. ``IMAGE_HOST`` in them is replaced by the test's
loopback image server (host:port) before they are produced.
"""

from __future__ import annotations

import io
import json
import struct
import zlib
from pathlib import Path

HERE = Path(__file__).resolve().parent
OK_URL = "http://IMAGE_HOST/ok.jpg"


def _rec(**fields: object) -> bytes:
    body = {"post_id": "c-x", "source": "corpus", "image_url": OK_URL,
            "posted_at": "2024-05-01T12:00:00Z"}
    body.update(fields)
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def _dlq(reason: str) -> dict[str, str]:
    return {"outcome": "dlq", "reason": reason}


# name -> (message value, expected outcome)
RECORDS: dict[str, tuple[bytes, dict[str, str]]] = {
    "malformed_truncated.json": (
        b'{"post_id": "c-trunc", "source": "corpus", "image_url": "http://IMAGE_HOST/ok.jpg"',
        _dlq("record: not JSON")),
    "malformed_trailing_comma.json": (
        b'{"post_id": "c-comma", "source": "corpus", "image_url": "http://IMAGE_HOST/ok.jpg",}',
        _dlq("record: not JSON")),
    "empty.json": (b"", _dlq("record: not JSON")),
    "not_utf8.json": (b'{"post_id": "c-\xff\xfe", "source": "corpus"}',
                      _dlq("record: not UTF-8")),
    "array_not_object.json": (b'[{"post_id": "c-arr"}]',
                              _dlq("record: expected a JSON object")),
    "wrong_type_post_id.json": (_rec(post_id=12345),
                                _dlq("post_id: Input should be a valid string")),
    "wrong_type_caption.json": (_rec(post_id="c-wtc", caption=["not", "text"]),
                                _dlq("caption: Input should be a valid string")),
    "wrong_type_posted_at.json": (_rec(post_id="c-wtp", posted_at="yesterday"),
                                  _dlq("posted_at: ")),
    "wrong_type_extra.json": (_rec(post_id="c-wte", extra="not an object"),
                              _dlq("extra: ")),
    "missing_image_url.json": (_rec(post_id="c-miu", image_url=...),
                               _dlq("image_url: is required")),
    "missing_post_id.json": (_rec(post_id=...), _dlq("post_id: is required")),
    "unknown_field.json": (_rec(post_id="c-unk", likes=3),
                           _dlq("likes: is not a field of the post record")),
    "schema_version_2.json": (_rec(post_id="c-v2", schema_version=2),
                              _dlq("schema_version: unsupported version 2")),
    "huge_caption.json": (_rec(post_id="c-huge", caption="#acme " + "a" * 100_000),
                          _dlq("caption: String should have at most 2200")),
    "max_caption.json": (_rec(post_id="c-max", caption="b" * 2200),
                         {"outcome": "post", "status": "ok"}),
    "post_id_with_nul.json": (_rec(post_id="c-nul\u0000id"),
                              _dlq("post_id: contains control characters")),
    "naive_timestamp.json": (_rec(post_id="c-naive", posted_at="2024-05-01T12:00:00"),
                             _dlq("posted_at: needs a timezone")),
    "file_scheme.json": (_rec(post_id="c-file", image_url="file:///etc/passwd"),
                         _dlq("image_url: must be an http or https URL")),
    # Accepted: NUL and lone surrogates become U+FFFD (Postgres cannot store NUL in text).
    "nul_and_surrogates.json": (
        b'{"post_id": "c-nulcap", "source": "corpus", "image_url": "http://IMAGE_HOST/ok.jpg", '
        b'"caption": "a\\u0000b\\ud800c\\udfff #acme", "author": "x\\u0000y", '
        b'"extra": {"k\\u0000": "v\\ud83d"}}',
        {"outcome": "post", "status": "ok", "caption": "a\ufffdb\ufffdc\ufffd #acme",
         "author": "x\ufffdy"}),
    "emoji_rtl.json": (
        _rec(post_id="c-emoji", caption="👟🔥 نايكي חדש \u202eevil\u202c #acme 🇫🇷 e\u0301"),
        {"outcome": "post", "status": "ok",
         "caption": "👟🔥 نايكي חדש \u202eevil\u202c #acme 🇫🇷 e\u0301"}),
    "future_timestamp.json": (_rec(post_id="c-future", posted_at="2099-12-31T23:59:59+14:00"),
                              {"outcome": "post", "status": "ok",
                               "posted_at": "2099-12-31T09:59:59+00:00"}),
    # Accepted by the parser once, then an exception in the worker (a poison pill): now
    # refused where they are parsed.
    "port_not_numeric.json": (_rec(post_id="c-port-abc",
                                   image_url="http://images.example.com:abc/ok.jpg"),
                              _dlq("image_url: is not a valid URL (Port could not be cast")),
    "port_out_of_range.json": (_rec(post_id="c-port-big",
                                    image_url="http://images.example.com:99999/ok.jpg"),
                               _dlq("image_url: is not a valid URL (Port out of range")),
    "port_zero.json": (_rec(post_id="c-port-0", image_url="http://images.example.com:0/ok.jpg"),
                       _dlq("image_url: has port 0")),
    "unclosed_ipv6_host.json": (_rec(post_id="c-ipv6", image_url="http://[::1/ok.jpg"),
                                _dlq("image_url: is not a valid URL (Invalid IPv6 URL")),
    "posted_at_before_year_1_utc.json": (
        _rec(post_id="c-year1", posted_at="0001-01-01T00:00:00+14:00"),
        _dlq("posted_at: is out of range once converted to UTC")),
    "posted_at_after_year_9999_utc.json": (
        _rec(post_id="c-year9999", posted_at="9999-12-31T23:59:59-14:00"),
        _dlq("posted_at: is out of range once converted to UTC")),
    # Same post id twice (same key, so same partition, in this order): the later one wins.
    "duplicate_1_first.json": (_rec(post_id="c-dup", caption="first version"),
                               {"outcome": "post", "status": "ok", "caption": "second version"}),
    "duplicate_2_second.json": (_rec(post_id="c-dup", caption="second version"),
                                {"outcome": "post", "status": "ok", "caption": "second version"}),
}


def _jpeg(mode: str = "RGB", size: tuple[int, int] = (120, 90)) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(7)
    channels = {"RGB": 3, "CMYK": 4}[mode]
    arr = rng.integers(0, 255, (size[1], size[0], channels), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(arr[..., :3]).convert(mode).save(out, format="JPEG", quality=80)
    return out.getvalue()


def _png16() -> bytes:
    import numpy as np
    from PIL import Image

    arr = (np.arange(96 * 64, dtype=np.uint16).reshape(64, 96) * 10).astype(np.uint16)
    out = io.BytesIO()
    Image.fromarray(arr).save(out, format="PNG")  # uint16 -> mode I;16
    return out.getvalue()


def _png_bomb(width: int = 30_000, height: int = 30_000) -> bytes:
    """A valid 1-bit greyscale PNG of 900 megapixels in a few hundred KiB of zlib'd zeros."""
    row = b"\x00" + b"\x00" * ((width + 7) // 8)
    comp = zlib.compressobj(9)
    data = b"".join(comp.compress(row) for _ in range(height)) + comp.flush()

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF))

    ihdr = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", data) + chunk(b"IEND", b"")


def _animated_gif(size: tuple[int, int] = (4000, 4000), frames: int = 24) -> bytes:
    from PIL import Image

    images = [Image.new("P", size, color=i % 2) for i in range(frames)]
    for im in images:
        im.putpalette([255, 0, 0, 0, 0, 255] + [0] * 762)
    out = io.BytesIO()
    images[0].save(out, format="GIF", save_all=True, append_images=images[1:], duration=40,
                   loop=0, optimize=False)
    return out.getvalue()


def _webp() -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.new("RGB", (80, 60), (10, 200, 30)).save(out, format="WEBP", quality=70)
    return out.getvalue()


def _ico_with_big_png_frame() -> bytes:
    """An ICO whose directory says 256 x 256 over a PNG frame of 9,400 x 9,400 (88 MP, just
    under Pillow's own guard): Pillow decodes the frame before any size check can see it."""
    png = _png_bomb(9_400, 9_400)
    entry = struct.pack("<BBBBHHII", 0, 0, 0, 0, 1, 32, len(png), 6 + 16)
    return struct.pack("<HHH", 0, 1, 1) + entry + png


def _gif_frame_beyond_screen() -> bytes:
    """A 16 x 16 GIF screen whose first frame claims 9,000 x 9,000 (81 MP): the frame's own
    size is what would be decoded. No pixel data is needed to be refused."""
    screen = b"GIF89a" + struct.pack("<HHBBB", 16, 16, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    frame = b"," + struct.pack("<HHHHB", 0, 0, 9_000, 9_000, 0) + b"\x02\x02\x44\x01\x00"
    return screen + frame + b";"


def _big(mode: str, fmt: str, size: tuple[int, int] = (7_000, 5_600), **save: object) -> bytes:
    """39.2 MP (just under the worker's 40 MP limit) in ``mode``: constant rows on a ramp, so
    the file is small and the decoded image is full size."""
    import numpy as np
    from PIL import Image

    w, h = size
    rows = (np.arange(h, dtype=np.uint32) * 255 // h).astype(np.uint8)
    ramp = np.broadcast_to(rows[:, None], (h, w))
    if mode == "I;16":
        img = Image.fromarray(ramp.astype(np.uint16) * 257)
    else:
        bands = {"RGBA": 4, "RGB": 3, "CMYK": 4}[mode]
        img = Image.fromarray(np.repeat(ramp[..., None], bands, axis=2).copy(),
                              mode=mode if mode != "CMYK" else "RGBA")
        if mode == "CMYK":
            img = img.convert("CMYK")
    out = io.BytesIO()
    img.save(out, format=fmt, **save)
    return out.getvalue()


SVG = (b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="100" '
       b'height="100"><circle cx="50" cy="50" r="40" fill="red"/>'
       b'<image href="http://169.254.169.254/latest/meta-data/"/></svg>\n')
HTML = b"<!doctype html><html><body><h1>Login</h1></body></html>\n"

# name -> (content type served, expected image status)
IMAGES: dict[str, tuple[str, str]] = {
    "ok.jpg": ("image/jpeg", "ok"),
    "zero_bytes.jpg": ("image/jpeg", "not_image"),
    "html_as_jpeg.jpg": ("image/jpeg", "not_image"),
    "truncated.jpg": ("image/jpeg", "decode_failed"),
    "cmyk.jpg": ("image/jpeg", "ok"),
    "gray16.png": ("image/png", "ok"),
    "bomb.png": ("image/png", "too_large"),
    "bomb_64mp.png": ("image/png", "too_large"),
    "huge_animated.gif": ("image/gif", "ok"),
    "photo.webp": ("image/webp", "ok"),
    "logo.svg": ("image/svg+xml", "not_image"),
    # Decoder memory: refused before any frame is decoded, or decoded within the bound.
    "icon_big_png_frame.ico": ("image/x-icon", "not_image"),
    "gif_frame_beyond_screen.gif": ("image/gif", "too_large"),
    "rgba_39mp.png": ("image/png", "ok"),
    "gray16_39mp.png": ("image/png", "ok"),
    "rgb_39mp.jpg": ("image/jpeg", "ok"),
    "rgba_12mp.webp": ("image/webp", "ok"),
    "rgba_39mp.webp": ("image/webp", "too_large"),  # WebP's limit is 12 MP
    "cmyk_39mp.tif": ("image/tiff", "ok"),
}


def image_bytes() -> dict[str, bytes]:
    ok = _jpeg()
    return {
        "ok.jpg": ok,
        "zero_bytes.jpg": b"",
        "html_as_jpeg.jpg": HTML,
        "truncated.jpg": ok[: len(ok) // 2],
        "cmyk.jpg": _jpeg("CMYK"),
        "gray16.png": _png16(),
        "bomb.png": _png_bomb(),
        "bomb_64mp.png": _png_bomb(8_000, 8_000),  # under Pillow's guard, over the worker's
        "huge_animated.gif": _animated_gif(),
        "photo.webp": _webp(),
        "logo.svg": SVG,
        "icon_big_png_frame.ico": _ico_with_big_png_frame(),
        "gif_frame_beyond_screen.gif": _gif_frame_beyond_screen(),
        "rgba_39mp.png": _big("RGBA", "PNG", compress_level=9),
        "gray16_39mp.png": _big("I;16", "PNG", compress_level=9),
        "rgb_39mp.jpg": _big("RGB", "JPEG", quality=50),
        "rgba_12mp.webp": _big("RGBA", "WEBP", (4_000, 3_000), lossless=True),
        "rgba_39mp.webp": _big("RGBA", "WEBP", lossless=True),
        "cmyk_39mp.tif": _big("CMYK", "TIFF", compression="tiff_adobe_deflate"),
    }


def main() -> None:
    (HERE / "records").mkdir(exist_ok=True)
    (HERE / "images").mkdir(exist_ok=True)
    for name, (value, _) in RECORDS.items():
        (HERE / "records" / name).write_bytes(value)
    for name, body in image_bytes().items():
        (HERE / "images" / name).write_bytes(body)
    expected = {
        "records": {name: outcome for name, (_, outcome) in RECORDS.items()},
        "images": {name: {"content_type": ctype, "status": status}
                   for name, (ctype, status) in IMAGES.items()},
    }
    (HERE / "expected.json").write_text(json.dumps(expected, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
