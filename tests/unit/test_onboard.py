"""Onboarding a brand from its logo file: logo loading, the synthesised training set, and a
new head added to a bundle without touching the others (random-init backbone at 75 px)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector import onboard
from detector.errors import DetectorError
from detector.onboard import build_training_set, load_logo, render_positive, train_brand
from detector.synth import _STYLES, draw_mark, generate, read_manifest


def flat_mark(background: tuple[int, int, int] = (255, 255, 255)) -> Image.Image:
    mark = draw_mark("initech", *_STYLES["initech"], 120)
    flat = Image.new("RGB", (mark.width + 30, mark.height + 30), background)
    flat.paste(mark, (15, 15), mark)
    return flat


@pytest.mark.parametrize("name", ["logo.png", "logo.webp"])
def test_load_logo_keeps_alpha_and_crops_to_the_visible_mark(tmp_path: Path, name: str) -> None:
    canvas = Image.new("RGBA", (200, 160), (0, 0, 0, 0))
    canvas.paste((10, 200, 30, 255), (40, 30, 90, 100))
    canvas.save(tmp_path / name, lossless=True)
    logo = load_logo(tmp_path / name)
    assert logo.mode == "RGBA" and logo.size == (50, 70)
    assert logo.getchannel("A").getextrema() == (255, 255)


def test_load_logo_keys_out_the_uniform_background_of_a_jpeg(tmp_path: Path) -> None:
    flat_mark().save(tmp_path / "logo.jpg", quality=85)
    logo = load_logo(tmp_path / "logo.jpg")
    alpha = np.asarray(logo.getchannel("A"))
    mark = draw_mark("initech", *_STYLES["initech"], 120)
    assert abs(logo.width - mark.getbbox()[2] + mark.getbbox()[0]) <= 3  # cropped to the mark
    assert alpha[0, 0] == 0 and alpha[-1, -1] == 0  # corners: the white was keyed out
    rgb = np.asarray(logo.convert("RGB"), np.int32)
    y, x = alpha.shape[0] // 3, alpha.shape[1] // 2  # the black centre of the square
    assert alpha[y, x] == 255 and rgb[y, x].sum() < 120


def test_load_logo_refuses_corrupt_empty_and_blank_files(tmp_path: Path) -> None:
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    Image.new("RGBA", (50, 50), (255, 0, 0, 0)).save(tmp_path / "clear.png")
    Image.new("RGB", (50, 50), (255, 255, 255)).save(tmp_path / "white.jpg")
    for name, words in (("bad.png", "not a logo image"), ("clear.png", "empty"),
                        ("white.jpg", "empty"), ("missing.png", "not found")):
        with pytest.raises(DetectorError, match=words):
            load_logo(tmp_path / name)


def test_an_svg_logo_is_rasterised_with_its_transparency_and_a_broken_one_is_one_line(
        tmp_path: Path) -> None:
    (tmp_path / "logo.svg").write_text(
        '<svg viewBox="0 0 24 24" xmlns="http://www.w3.org/2000/svg">'
        '<path fill="#E03020" d="M4 4h16v8H4z"/></svg>')
    logo = load_logo(tmp_path / "logo.svg")
    assert logo.mode == "RGBA" and logo.width == pytest.approx(2 * logo.height, rel=0.05)
    r, g, b, a = logo.getpixel((logo.width // 2, logo.height // 2))
    assert (r, g, b) == (0xE0, 0x30, 0x20) and a == 255  # cropped to the mark: no margin
    (tmp_path / "broken.svg").write_text("<svg><path d=")
    with pytest.raises(DetectorError, match="cannot rasterise") as err:
        load_logo(tmp_path / "broken.svg")
    assert "\n" not in str(err.value)


@pytest.fixture(scope="module")
def feed(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    out = tmp_path_factory.mktemp("feed")
    generate(out, n_images=16, brands=("acme",), logo_fraction=0.2, seed=5, size=(160, 120))
    return sorted(out.rglob("*.jpg"))


def files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_training_set_is_deterministic_and_a_rerun_draws_nothing(
    feed: list[Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    logo = [onboard._key_border(flat_mark().convert("RGBA"))]
    a = build_training_set(tmp_path / "a", "initech", logo, feed, n_positives=12, seed=1,
                           progress=False)
    build_training_set(tmp_path / "b", "initech", logo, feed[::-1], n_positives=12, seed=1,
                       progress=False)
    assert a["positives"] == 12 and a["negatives"] == len(feed)
    assert files(tmp_path / "a") == files(tmp_path / "b")  # byte-identical, feed order aside
    before = files(tmp_path / "a")

    def no_redraw(*args: object) -> None:
        raise AssertionError("redrew an image that was already there")

    monkeypatch.setattr(onboard, "render_positive", no_redraw)
    build_training_set(tmp_path / "a", "initech", logo, feed, n_positives=12, seed=1,
                       progress=False)
    assert files(tmp_path / "a") == before


def test_boxes_lie_inside_the_image_and_cover_every_pasted_pixel() -> None:
    logo = onboard._key_border(flat_mark().convert("RGBA"))
    background = Image.new("RGB", (320, 240), (90, 140, 90))
    plain = np.asarray(background, np.int32)
    for seed in range(40):
        img, boxes = render_positive([logo], background, np.random.default_rng(seed))
        assert img.size == background.size and 1 <= len(boxes) <= 2
        changed = np.abs(np.asarray(img, np.int32) - plain).sum(axis=2) > 60
        inside = np.zeros_like(changed)
        for x0, y0, x1, y1 in boxes:
            assert 0 <= x0 < x1 <= 320 and 0 <= y0 < y1 <= 240
            inside[y0:y1, x0:x1] = True
            assert changed[y0:y1, x0:x1].any()
        assert not (changed & ~inside).any()


def test_manifest_gives_every_positive_its_boxes(feed: list[Path], tmp_path: Path) -> None:
    logo = [load_logo_from(flat_mark(), tmp_path)]
    build_training_set(tmp_path / "set", "initech", logo, feed, n_positives=10, progress=False)
    rows = [r for r in read_manifest(tmp_path / "set") if r.brands]
    assert len(rows) == 10
    for r in rows:
        w, h = Image.open(tmp_path / "set" / r.file).size
        assert r.boxes and all(0 <= b[0] < b[2] <= w and 0 <= b[1] < b[3] <= h for b in r.boxes)
        # a positive shares its background's split: same name before `_nohash_`
        assert (tmp_path / "set" / "no-logo" / (r.file.split("/")[1].split("_nohash_")[0]
                                                + "_nohash_.jpg")).is_file()


def load_logo_from(img: Image.Image, folder: Path) -> Image.Image:
    img.save(folder / "logo.png")
    return load_logo(folder / "logo.png")


def test_train_brand_adds_one_head_and_leaves_the_others_bit_identical(
    tiny_bundle: Path, feed: list[Path], tmp_path: Path
) -> None:
    logo = [load_logo_from(flat_mark(), tmp_path)]
    build_training_set(tmp_path / "set", "initech", logo, feed, n_positives=24, seed=0,
                       progress=False)
    path, report = train_brand(tmp_path / "set", tiny_bundle, tmp_path / "new", "initech",
                               cache_dir=tmp_path / "cache", progress=False,
                               validation_pct=40.0)
    old, new = np.load(tiny_bundle / "heads.npz"), np.load(path / "heads.npz")
    old_meta = json.loads((tiny_bundle / "bundle.json").read_text())
    meta = json.loads((path / "bundle.json").read_text())
    assert meta["brands"] == [*old_meta["brands"], "initech"]
    for key in ("mean", "scale"):
        assert new[key].tobytes() == old[key].tobytes()
    n = len(old_meta["brands"])
    assert new["kernel"][:, :n].tobytes() == old["kernel"].tobytes()
    assert new["bias"][:n].tobytes() == old["bias"].tobytes()
    assert {b: meta["thresholds"][b] for b in old_meta["brands"]} == old_meta["thresholds"]
    assert meta["backbone_id"] == old_meta["backbone_id"] and meta["tiles"] == old_meta["tiles"]
    assert 0.0 < meta["thresholds"]["initech"] < 1.0
    assert report["threshold"] == meta["thresholds"]["initech"]
    assert report["validation_positives"] > 0 and "optimistic" in report["note"]


def test_a_fetched_image_is_kept_as_fetched_and_read_as_the_worker_decodes_it(
        tmp_path: Path) -> None:
    import io

    from detector.exemplar import FINE_SIDE
    from detector.preprocess import ImageError, decode_for
    from logowatch.onboard import _decoded, _save_fetched

    buf = io.BytesIO()
    Image.new("RGB", (2400, 1200), (30, 90, 160)).save(buf, "JPEG", quality=80)
    _save_fetched(buf.getvalue(), tmp_path / "a.img")
    assert (tmp_path / "a.img").read_bytes() == buf.getvalue()  # not re-encoded
    img, full = _decoded(tmp_path / "a.img")
    worker, worker_full = decode_for(buf.getvalue(), FINE_SIDE)  # what logo_scores matches
    assert full == worker_full == (2400, 1200) and max(img.size) >= FINE_SIDE
    assert np.array_equal(np.asarray(img), np.asarray(worker))
    with pytest.raises(ImageError):
        _save_fetched(b"<html>not an image</html>", tmp_path / "b.img")
    assert not list(tmp_path.glob("b.*"))  # nothing is written for bytes that do not decode
