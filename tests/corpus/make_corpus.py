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
