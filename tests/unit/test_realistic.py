"""The realistic benchmark's parts on small data: marks rendered from SVG, photos grouped by
near-duplicate and split by group, composites whose boxes hold the mark."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench import realistic as rl

RING = ('<svg viewBox="0 0 24 24" xmlns="http://www.w3.org/2000/svg"><path d="M12 2a10 10 0 1 0 '
        '0 20a10 10 0 1 0 0-20zm0 4a6 6 0 1 1 0 12a6 6 0 1 1 0-12z"/></svg>')


@pytest.fixture
def marks(tmp_path: Path) -> Path:
    root = tmp_path / "simple-icons"
    (root / "icons").mkdir(parents=True)
    (root / "data").mkdir()
    (root / "icons" / "ring.svg").write_text(RING)
    (root / "icons" / "bar.svg").write_text(RING.replace("M12 2a10", "M2 10h20v4H2z M12 2a10"))
    (root / "data" / "simple-icons.json").write_text(json.dumps([
        {"title": "Ring", "slug": "ring", "hex": "E03020"},
        {"title": "Bar", "slug": "bar", "hex": "2040E0"},
        {"title": "Missing", "slug": "missing", "hex": "000000"}]))
    return root


def test_a_mark_is_rendered_from_its_svg_cropped_to_its_ink_and_exported_in_its_colour(
        marks: Path, tmp_path: Path) -> None:
    brands = {b.slug: b for b in rl.brands(marks)}
    assert set(brands) == {"ring", "bar"}  # an entry without an SVG is not a brand
    m = rl.mask(brands["ring"], 96)
    assert m.shape[0] == pytest.approx(80, abs=2)  # the ring spans 20 of 24 units
    assert m[m.shape[0] // 2, m.shape[1] // 2] < 0.05  # the hole is not ink
    assert m[m.shape[0] // 2, 3] > 0.9
    png = Image.open(rl.logo_file(brands["ring"], tmp_path / "ring.png", 96))
    assert png.mode == "RGBA"
    px = np.asarray(png)[png.height // 2, 3]
    assert tuple(px[:3]) == (0xE0, 0x30, 0x20) and px[3] > 230


def _photo(path: Path, seed: int, size: tuple[int, int]) -> None:
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 255, (6, 8, 3), dtype=np.uint8)  # a coarse scene...
    img = Image.fromarray(base).resize((1600, 1200), Image.Resampling.BICUBIC)
    img.resize(size).save(path)  # ...saved at some size


def test_photos_are_grouped_by_near_duplicate_and_folder_and_each_group_has_one_side(
        tmp_path: Path) -> None:
    root = tmp_path / "photos" / "pkg"
    (root / "wall" / "contents" / "images").mkdir(parents=True)
    (root / "wall" / "contents" / "images_dark").mkdir(parents=True)
    _photo(root / "a.jpg", 1, (1600, 1200))
    _photo(root / "a-small.png", 1, (1200, 900))  # the same photo at another size
    _photo(root / "b.jpg", 2, (1600, 1200))
    _photo(root / "wall" / "contents" / "images" / "1.png", 3, (1600, 1200))
    _photo(root / "wall" / "contents" / "images_dark" / "1.png", 4, (1600, 1200))
    _photo(root / "tiny.png", 5, (200, 150))  # an icon, not a source
    photos = {p.path.name if "contents" not in p.path.parts else
              p.path.parent.name: p for p in rl.photo_groups(tmp_path / "photos")}
    assert set(photos) == {"a.jpg", "a-small.png", "b.jpg", "images", "images_dark"}
    assert photos["a.jpg"].group == photos["a-small.png"].group
    assert photos["images"].group == photos["images_dark"].group  # one wallpaper's variants
    assert len({p.group for p in photos.values()}) == 3
    by_group: dict[str, set[str]] = {}
    for p in photos.values():
        by_group.setdefault(p.group, set()).add(p.side)
    assert all(len(sides) == 1 for sides in by_group.values())


def test_sides_come_from_names_alone_and_hold_about_the_test_share() -> None:
    slugs = [f"brand{i}" for i in range(2000)]
    sides = [rl.distractor_side(s) for s in slugs]
    assert sides == [rl.distractor_side(s) for s in slugs]
    assert abs(sides.count("test") / len(sides) - rl.TEST_PCT / 100) < 0.05


@pytest.mark.parametrize("small", [True, False])
def test_a_composite_is_a_jpeg_whose_box_holds_the_target_mark_at_its_size_class(
        marks: Path, small: bool) -> None:
    brands = {b.slug: b for b in rl.brands(marks)}
    scene = Image.fromarray(np.random.default_rng(0).integers(0, 255, (900, 1200, 3),
                                                              dtype=np.uint8))
    target = (brands["ring"], rl.mask(brands["ring"]))
    sizes = []
    for seed in range(6):
        rng = np.random.default_rng(seed)
        data, size, box = rl.compose(scene, target, [(brands["bar"], rl.mask(brands["bar"]))],
                                     rng, small)
        img = Image.open(io.BytesIO(data))
        assert img.format == "JPEG" and img.size == size and max(size) == 800
        assert box is not None
        assert 0 <= box[0] < box[2] <= size[0] and 0 <= box[1] < box[3] <= size[1]
        sizes.append(max(box[2] - box[0], box[3] - box[1]) / max(size))
    if small:  # rotation and warp can grow the box a little past the drawn size
        assert max(sizes) < 0.2
    else:
        assert min(sizes) > 0.1


def test_a_composite_without_a_target_has_no_box(marks: Path) -> None:
    brands = rl.brands(marks)
    scene = Image.new("RGB", (1000, 1000), (90, 120, 60))
    _, _, box = rl.compose(scene, None, [(b, rl.mask(b)) for b in brands],
                           np.random.default_rng(3), small=True)
    assert box is None


def test_a_mark_on_a_badge_is_boxed_by_its_own_ink_not_by_the_badge(marks: Path) -> None:
    ring = next(b for b in rl.brands(marks) if b.slug == "ring")
    m = rl.mask(ring)
    badges = plain = 0
    for seed in range(40):
        layer = rl.mark_layer(m, ring.hex, 120, np.random.default_rng(seed))
        canvas = np.full((400, 400, 3), 0.5, np.float32)
        shown, ink = rl.paste(canvas, layer, 100, 80, np.random.default_rng(seed))
        assert shown[0] <= ink[0] < ink[2] <= shown[2] and shown[1] <= ink[1] < ink[3] <= shown[3]
        if (layer[..., 3] > 0.2).sum() > 1.3 * (layer[..., 4] > 0.2).sum():  # on a badge
            badges += 1
            assert (ink[2] - ink[0]) * (ink[3] - ink[1]) < 0.8 * (
                (shown[2] - shown[0]) * (shown[3] - shown[1]))
        else:
            plain += 1
            assert ink == shown
    assert badges >= 5 and plain >= 20  # about 30 % of marks are drawn on a badge
