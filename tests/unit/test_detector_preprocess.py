"""Every odd image a feed sends either decodes to RGB or fails with its own status."""

from __future__ import annotations

import io
import itertools
import struct
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image, features

from detector.preprocess import ImageError, TileSpec, decode, prepare


def encode(img: Image.Image, fmt: str, **kw: object) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    return buf.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height but carries almost no pixel data."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(
            ">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr)
            + chunk(b"IDAT", zlib.compress(b"\x00" * 16)) + chunk(b"IEND", b""))


def test_exif_rotation_is_applied() -> None:
    img = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90° clockwise for display
    out = decode(encode(img, "JPEG", exif=exif.tobytes()))
    assert out.size == (20, 40) and out.mode == "RGB"


def test_palette_with_transparency_goes_on_white() -> None:
    img = Image.new("P", (8, 8), 0)
    img.putpalette([255, 0, 0] + [0, 0, 255] * 255)
    out = np.asarray(decode(encode(img, "PNG", transparency=0)))
    assert (out == 255).all()


def test_grayscale_and_cmyk_become_rgb() -> None:
    assert decode(encode(Image.new("L", (9, 9), 77), "PNG")).getpixel((0, 0)) == (77, 77, 77)
    cmyk = decode(encode(Image.new("CMYK", (9, 9), (0, 255, 255, 0)), "JPEG"))
    r, g, b = cmyk.getpixel((4, 4))
    assert cmyk.mode == "RGB" and r > 200 and g < 60 and b < 60


def test_sixteen_bit_is_scaled_not_clipped() -> None:
    arr = np.full((6, 6), 32768, np.uint16)
    out = decode(encode(Image.fromarray(arr), "PNG"))
    assert abs(out.getpixel((0, 0))[0] - 128) <= 1


def test_alpha_is_composited_on_white() -> None:
    img = Image.new("RGBA", (5, 5), (0, 0, 0, 0))
    img.putpixel((2, 2), (0, 0, 0, 255))
    out = decode(encode(img, "PNG"))
    assert out.getpixel((0, 0)) == (255, 255, 255) and out.getpixel((2, 2)) == (0, 0, 0)


def test_animated_gif_uses_first_frame() -> None:
    frames = [Image.new("RGB", (10, 10), c) for c in ((255, 0, 0), (0, 0, 255))]
    data = encode(frames[0], "GIF", save_all=True, append_images=frames[1:], duration=50)
    r, _, b = decode(data).getpixel((5, 5))
    assert r > 200 and b < 50


@pytest.mark.skipif(not features.check("webp"), reason="Pillow built without WebP")
def test_webp_decodes() -> None:
    assert decode(encode(Image.new("RGB", (12, 8), (0, 200, 0)), "WEBP")).size == (12, 8)


@pytest.mark.parametrize(
    ("data", "status"),
    [
        (b"", "not_image"),
        (b"<!DOCTYPE html><html><body>404</body></html>", "not_image"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 20, "decode_failed"),
        (png_header_only(50_000, 50_000), "too_large"),  # Pillow's own bomb limit
        (png_header_only(7_000, 7_000), "too_large"),  # our 40 Mpx guard, before decoding
    ],
    ids=["zero-bytes", "html", "corrupt-header", "bomb-huge", "bomb-over-limit"],
)
def test_bad_bytes_fail_with_their_status(data: bytes, status: str) -> None:
    with pytest.raises(ImageError) as err:
        prepare(data, 75)
    assert err.value.status == status and str(err.value)


def test_truncated_jpeg_is_decode_failed() -> None:
    rng = np.random.default_rng(0)
    data = encode(Image.fromarray(rng.integers(0, 255, (200, 200, 3), np.uint8)), "JPEG")
    with pytest.raises(ImageError) as err:
        decode(data[: len(data) // 2])
    assert err.value.status == "decode_failed"


def test_prepare_gives_whole_image_then_tiles_with_boxes_in_full_coordinates() -> None:
    data = encode(Image.new("RGB", (1600, 1200), (10, 20, 30)), "JPEG")
    tiles = prepare(data, 75, tiles=TileSpec(grid=2, overlap=0.25))
    assert len(tiles) == 5 and tiles[0].box is None
    assert all(t.pixels.shape == (75, 75, 3) and t.pixels.dtype == np.uint8 for t in tiles)
    boxes = [t.box for t in tiles[1:]]
    assert boxes[0][:2] == (0, 0) and boxes[-1][2:] == (1600, 1200)
    assert all(x1 - x0 == 1600 // 1.75 or abs((x1 - x0) - 1600 / 1.75) < 2
               for x0, _, x1, _ in boxes)


def test_pad_policy_keeps_aspect_with_grey_bars() -> None:
    px = prepare(encode(Image.new("RGB", (200, 100), (255, 0, 0)), "PNG"), 80)[0].pixels
    assert tuple(px[0, 40]) == (128, 128, 128) and tuple(px[40, 40]) == (255, 0, 0)


def test_large_jpeg_is_decoded_at_a_reduced_dct_scale() -> None:
    from detector.preprocess import _load_upright

    data = encode(Image.new("RGB", (3200, 2400), (90, 90, 90)), "JPEG")
    img, full = _load_upright(data, need=300, max_pixels=40_000_000)
    assert full == (3200, 2400) and 300 <= max(img.size) <= 800  # 1/4 or 1/8 scale, not full


def test_whole_image_pixels_do_not_depend_on_tiles() -> None:
    # the stored (and trained-on) embedding is the whole image's: a worker with --tiles must
    # compute it from the same pixels as one without, however the JPEG was draft-decoded
    rng = np.random.default_rng(0)
    noisy = Image.fromarray(rng.integers(0, 256, (1200, 1600, 3), np.uint8))
    for data in (encode(noisy, "JPEG", quality=90), encode(noisy, "PNG")):
        for size in (75, 299):
            alone = prepare(data, size)[0].pixels
            tiled = prepare(data, size, tiles=TileSpec(3, 0.25))
            np.testing.assert_array_equal(tiled[0].pixels, alone)
            assert len(tiled) == 10 and tiled[1].box is not None


@given(w=st.integers(20, 4000), h=st.integers(20, 4000), grid=st.integers(2, 4),
       overlap=st.floats(0.0, 0.5))
def test_tiles_stay_inside_and_cover_the_image(w: int, h: int, grid: int, overlap: float) -> None:
    boxes = TileSpec(grid, overlap).boxes(w, h)
    assert len(boxes) == grid * grid
    assert all(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h for x0, y0, x1, y1 in boxes)
    assert max(b[2] for b in boxes) == w and max(b[3] for b in boxes) == h
    xs = sorted({(b[0], b[2]) for b in boxes})
    assert all(a[1] >= b[0] for a, b in itertools.pairwise(xs))  # no gaps between columns
