"""detector.exemplar: the logo's silhouette found in a photo, at its place and size, in any
colour, and scored against a feed so that sizes compare. Small images, no services."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw

from bench.real_logos import iou
from detector import exemplar as X


def _logo(shape: str = "bolt") -> Image.Image:
    """A transparent logo: a bolt beside a dot (no photo holds that shape by chance), or a
    triangle (another brand)."""
    img = Image.new("RGBA", (200, 200), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    if shape == "bolt":
        d.polygon([(70, 10), (130, 10), (100, 80), (150, 80), (60, 190), (85, 105), (40, 105)],
                  fill=(200, 30, 30, 255))
        d.ellipse((140, 140, 190, 190), fill=(200, 30, 30, 255))
    else:
        d.polygon([(100, 10), (190, 190), (10, 190)], fill=(30, 30, 200, 255))
    return img


_PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
           "camera.png")


def _photo(seed: int, size: tuple[int, int] = (640, 480)) -> Image.Image:
    """A crop of one of scikit-image's bundled photographs (no logo in any)."""
    import skimage

    rng = np.random.default_rng(seed)
    with Image.open(Path(skimage.data_dir) / _PHOTOS[seed % len(_PHOTOS)]) as im:
        img = im.convert("RGB")
    w, h = img.size
    cw = int(min(w, h * 4 / 3) * rng.uniform(0.6, 1.0))
    ch = int(cw * 3 / 4)
    x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    return img.crop((x, y, x + cw, y + ch)).resize(size, Image.Resampling.LANCZOS)


def _paste(photo: Image.Image, logo: Image.Image, box: tuple[int, int, int, int],
           colour: tuple[int, int, int], angle: float = 0.0) -> Image.Image:
    a = logo.getchannel("A").resize((box[2] - box[0], box[3] - box[1]))
    if angle:  # the whole mark, turned: the box grows to hold it
        a = a.rotate(angle, expand=True, resample=Image.Resampling.BICUBIC)
    out = photo.copy()
    out.paste(Image.new("RGB", a.size, colour), box[:2], a)
    return out


def test_silhouette_is_cropped_to_the_ink_and_refuses_an_empty_logo() -> None:
    m = X.silhouette(_logo())
    assert m.shape == (181, 151) and m.max() == pytest.approx(1.0)
    with pytest.raises(ValueError):
        X.silhouette(Image.new("RGBA", (50, 50), (0, 0, 0, 0)))


@pytest.fixture(scope="module")
def bolt() -> X.Exemplar:
    ex = X.Exemplar(X.silhouette(_logo()))
    ex.calibrate([_photo(s) for s in range(10, 22)])  # as the product does, on a feed
    return ex


def _seen(photo: Image.Image, box: tuple[int, int, int, int]) -> tuple[int, int, int]:
    """White on a dark patch, black on a light one: a mark a person would see there."""
    return (0, 0, 0) if np.asarray(photo.crop(box).convert("L")).mean() > 110 else (255,) * 3


_SMALL_BOX, _LARGE_BOX = (300, 200, 380, 280), (60, 40, 300, 280)
# Since /10 the large bolt pasted black on photo 0 (the astronaut) is not the best match: its
# lower half lies on her black collar, so a quarter of its edges are not met (0.75), while a
# smaller bolt over the collar's ring and the bolt's lower edge, where the alignment fails,
# meets 0.80 of its edges at the search's placement; /9 kept that candidate's refinement
# share there (docs/detector.md, "/10"). Kept, strict, as the record of that loss.
_HALF_HIDDEN = pytest.mark.xfail(strict=True, reason="half the mark is black on black and a "
                                 "smaller bolt over the busy collar scores higher (/10)")


@pytest.mark.parametrize(("box", "seed"), [
    (_SMALL_BOX, 0), (_SMALL_BOX, 1), (_SMALL_BOX, 3),
    pytest.param(_LARGE_BOX, 0, marks=_HALF_HIDDEN), (_LARGE_BOX, 1), (_LARGE_BOX, 3)])
def test_the_mark_is_found_at_its_box(bolt: X.Exemplar, seed: int,
                                      box: tuple[int, int, int, int]) -> None:
    photo = _photo(seed)
    m = bolt.search(_paste(photo, _logo(), box, _seen(photo, box)))
    assert m is not None and iou(m.box, box) >= 0.6
    assert m.score > 2  # standard deviations above the feed's mean best


@pytest.mark.parametrize("colour", [(255, 255, 255), (0, 0, 0)])
def test_either_polarity_matches_alike(bolt: X.Exemplar, colour: tuple[int, ...]) -> None:
    rng = np.random.default_rng(5)
    grey = Image.fromarray(rng.normal(128, 6, (300, 400, 3)).clip(0, 255).astype(np.uint8))
    m = bolt.search(_paste(grey, _logo(), (150, 100, 250, 200), colour))
    assert m is not None and iou(m.box, (150, 100, 250, 200)) >= 0.6 and m.correlation > 0.85


def test_a_mark_the_same_grey_as_its_surround_has_its_edges_met_in_colour() -> None:
    import cv2

    mask = X.silhouette(_logo())
    t = X.template(mask, 60, 0.0)
    small = cv2.resize(mask, (round(mask.shape[1] * 60 / 181), 60), interpolation=cv2.INTER_AREA)
    rgb = np.empty((200, 200, 3), np.float32)
    rgb[:] = np.array((230, 120, 40)) / 255  # orange, grey (ITU-R 601) 143.8
    pad = int(60 * X.PAD) + 2  # the template's ring: its top-left lies pad px before the ink
    ink = rgb[70:70 + small.shape[0], 70:70 + small.shape[1]]
    ink[small > 0.5] = np.array((30, 200, 160)) / 255  # teal, grey 144.6
    grey = rgb @ np.array([0.299, 0.587, 0.114], np.float32)
    at = np.array([70 - pad]), np.array([70 - pad])
    assert X.correlation(grey, t)[at[1][0], at[0][0]] < 0.1  # grey cannot see it
    assert X.orientation_at(X.orientations(rgb), t, *at)[0] > 0.8  # its colour edges are there
    assert X.orientation_at(X.orientations(rgb), t, np.array([0]), np.array([0]))[0] < 0.3
    here = np.array([[1, 0, 70 - pad], [0, 1, 70 - pad], [0, 0, 1]], np.float32)
    assert X._colour_ncc(X._through(rgb, here, t), t) > 0.9  # its colour is: the best mix
    there = here.copy()
    there[:2, 2] = 120
    assert X._colour_ncc(X._through(rgb, there, t), t) < 0.1  # off the mark: a flat surround


def test_the_colour_correlation_is_the_grey_one_on_a_grey_patch_and_no_less_in_colour(
        ) -> None:
    t = X.template(X.silhouette(_logo()), 48, 10.0)
    photo = np.asarray(_photo(3, (160, 120)), np.float32) / 255
    w = np.array([[1, 0, 30], [0, 1, 20], [0, 0, 1]], np.float32)
    grey = X._through(np.repeat((photo @ np.array([0.299, 0.587, 0.114], np.float32))[..., None],
                                3, -1), w, t)
    g, v = grey[..., 0][t.read], t.values[t.read]  # the grey |NCC| over the same pixels
    g, v = g - g.mean(), v - v.mean()
    plain = abs(float((g * v).sum())) / float(np.sqrt((v * v).sum()) *
                                              max(np.sqrt((g * g).sum()), 1e-9))
    assert X._colour_ncc(grey, t) == pytest.approx(plain, abs=0.02)
    assert X._colour_ncc(X._through(photo, w, t), t) >= plain - 0.02


def test_the_aligned_correlation_reads_inside_the_mark_not_a_badge_rim() -> None:
    import cv2

    mask = X.silhouette(_logo())
    t = X.template(mask, 60, 0.0)
    assert t.read.mean() < 0.9 and t.read[t.level > 0.5].all()
    small = cv2.resize(mask, (round(mask.shape[1] * 60 / 181), 60), interpolation=cv2.INTER_AREA)
    pad = int(60 * X.PAD) + 2
    here = np.array([[1, 0, 70 - pad], [0, 1, 70 - pad], [0, 0, 1]], np.float32)
    plain = np.full((200, 200, 3), 0.9, np.float32)
    plain[70:70 + small.shape[0], 70:70 + small.shape[1]][small > 0.5] = 0.1
    badge = plain.copy()  # the mark on a white sticker whose rim lies in the template's ring
    rim = np.zeros((200, 200), np.uint8)
    axes = (small.shape[1] // 2 + pad - 3, 60 // 2 + pad - 3)
    cv2.ellipse(rim, (70 + small.shape[1] // 2, 100), axes, 0, 0, 360, 1, -1)
    badge[rim == 0] = (0.2, 0.3, 0.6)
    badge[70:70 + small.shape[0], 70:70 + small.shape[1]][small > 0.5] = 0.1
    on_plain = X._colour_ncc(X._through(plain, here, t), t)
    on_badge = X._colour_ncc(X._through(badge, here, t), t)
    assert on_plain > 0.9 and on_badge == pytest.approx(on_plain, abs=0.05)
    whole = X._warped_ncc(cv2.cvtColor(badge, cv2.COLOR_RGB2GRAY), here, t)  # the whole ring
    assert abs(whole) < on_badge - 0.1


def _disc(glyph: str | None, size: int = 120) -> Image.Image:
    """A disc with a glyph cut out of it (the app-icon shape), or a plain one."""
    img = Image.new("RGBA", (size, size), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.ellipse((0, 0, size - 1, size - 1), fill=(20, 90, 200, 255))
    if glyph == "bar":
        d.rectangle((size * 0.2, size * 0.42, size * 0.8, size * 0.58), fill=(0, 0, 0, 0))
    elif glyph == "cross":
        d.rectangle((size * 0.42, size * 0.15, size * 0.58, size * 0.85), fill=(0, 0, 0, 0))
        d.rectangle((size * 0.15, size * 0.42, size * 0.85, size * 0.58), fill=(0, 0, 0, 0))
    return img


def test_the_aligned_correlation_tells_marks_of_one_outline_apart_by_what_is_inside() -> None:
    t = X.template(X.silhouette(_disc("bar")), 60, 0.0)
    ink = t.level > 0.5
    assert t.read[ink].all() and not t.read[~ink].all()  # the ink and its inside, no ring
    pad = int(60 * X.PAD) + 2
    here = np.array([[1, 0, 70 - pad], [0, 1, 70 - pad], [0, 0, 1]], np.float32)

    def on_wall(glyph: str | None) -> float:
        photo = Image.new("RGB", (200, 200), (235, 225, 200))
        photo.paste(_disc(glyph, 60), (70, 70), _disc(glyph, 60))
        return X._colour_ncc(X._through(np.asarray(photo, np.float32) / 255, here, t), t)

    assert on_wall("bar") > 0.9
    assert on_wall("cross") < on_wall("bar") - 0.3  # the same disc, another glyph
    assert on_wall(None) < 0.3  # a plain disc has nothing inside to match (/8 read 0.8)
    solid = X.template(X.silhouette(_disc(None)), 60, 0.0)  # nothing inside: the thin ring
    assert solid.read[solid.level > 0.5].all() and solid.read[~(solid.level > 0.5)].any()


def test_the_aligned_orientation_share_counts_the_edges_inside_the_outline() -> None:
    t = X.template(X.silhouette(_disc("bar")), 64, 0.0)
    ys, xs, _ = t.edges
    centre = (t.values.shape[0] / 2, t.values.shape[1] / 2)
    radius = np.hypot(ys - centre[0], xs - centre[1])
    inner = t.inner
    assert inner.sum() >= X.MIN_INNER_EDGES
    assert (radius[inner] < 0.45 * 64).all()  # the bar's edges, none of the disc's rim
    assert (~inner).sum() >= X.MIN_INNER_EDGES and (radius[~inner] > 0.4 * 64).all()
    solid = X.template(X.silhouette(_disc(None)), 64, 0.0)
    assert solid.inner.all()  # nothing inside: every edge counts, as before


def test_the_aligned_orientation_share_is_corrected_for_chance_in_a_dense_texture() -> None:
    import cv2

    t = X.template(X.silhouette(_logo()), 64, 0.0)
    h, w = t.values.shape
    rng = np.random.default_rng(0)  # 3 px cells of random colour: edges of every orientation
    texture = cv2.resize(rng.random((h // 3 + 1, w // 3 + 1, 3)).astype(np.float32), (w, h),
                         interpolation=cv2.INTER_NEAREST)
    ey, ex_, eb = t.edges
    assert X.orientations(texture)[eb, ey, ex_].mean() > 0.85  # the raw share: a "match"
    assert X._orientation_kappa(texture, t) < 0.2
    mark = np.repeat(t.level[..., None], 3, -1).astype(np.float32)
    assert X._orientation_kappa(mark, t) > 0.9
    on_texture = texture.copy()
    on_texture[t.level > 0.5] = 0.0  # the mark printed over the texture is still the mark
    assert X._orientation_kappa(on_texture, t) > 0.8
    assert X._orientation_kappa(np.full_like(mark, 0.5), t) == 0.0


def test_one_place_gives_a_candidate_per_size_apart_for_marks_made_of_their_own_copies() -> None:
    ex = X.Exemplar(X.silhouette(_logo()))
    a, b, c = (X.template(ex.mask, s, 0.0) for s in (20.0, 22.0, 34.0))
    cands = [(0.9, 0.9, 0, a, 50, 50), (0.8, 0.9, 1, b, 49, 49), (0.7, 0.9, 3, c, 43, 43),
             (0.6, 0.9, 0, a, 150, 50)]
    picked = ex._pick(cands)  # uncalibrated: ranked by the plain sum
    assert [p[3].size for p in picked] == [20.0, 34.0, 20.0]


def test_the_share_of_edges_a_mark_explains_is_high_on_a_plain_surface_low_in_clutter() -> None:
    import cv2

    mask = X.silhouette(_logo())
    t = X.template(mask, 60, 0.0)
    small = cv2.resize(mask, (round(mask.shape[1] * 60 / 181), 60), interpolation=cv2.INTER_AREA)
    pad = int(60 * X.PAD) + 2
    here = np.array([[1, 0, 70 - pad], [0, 1, 70 - pad], [0, 0, 1]], np.float32)
    plain = np.full((200, 200, 3), 0.8, np.float32)
    busy = np.asarray(_photo(1, (200, 200)), np.float32) / 255
    for rgb in (plain, busy):
        ink = rgb[70:70 + small.shape[0], 70:70 + small.shape[1]]
        ink[small > 0.5] = (0.1, 0.1, 0.6)
    on_plain = X._explained(X._through(plain, here, t), t)
    on_busy = X._explained(X._through(busy, here, t), t)
    assert on_plain > 0.8 and on_busy < on_plain
    stripes = np.zeros((200, 200, 3), np.float32)
    stripes[:, ::6] = 1.0  # edges everywhere, one orientation: the mark explains few of them
    assert X._explained(X._through(stripes, here, t), t) < 0.3
    assert X._explained(X._through(np.full((200, 200, 3), 0.5, np.float32), here, t), t) == 0.0


def test_orientation_maps_spread_an_edge_to_its_neighbours_and_ignore_flat_colour() -> None:
    rgb = np.zeros((40, 40, 3), np.float32)
    rgb[:, :20] = (0.9, 0.1, 0.1)
    rgb[:, 20:] = (0.1, 0.1, 0.9)  # a vertical edge between x = 19 and 20: gradient along x
    r = X.orientations(rgb)
    assert r.shape == (X.ORIENT_BINS, 40, 40)
    near = np.cos(np.pi / X.ORIENT_BINS) ** 2
    for x in (18, 19, 20, 21):  # the edge and the spread around it
        assert r[0, 20, x] == 1 and r[1, 20, x] == pytest.approx(near)
        assert r[X.ORIENT_BINS - 1, 20, x] == pytest.approx(near)
        assert r[2:X.ORIENT_BINS - 1, 20, x].max() == 0
    assert r[:, 20, :16].max() == 0 and r[:, 20, 24:].max() == 0  # flat colour: no edge


def test_a_rotated_mark_is_found_with_its_angle() -> None:
    ex = X.Exemplar(X.silhouette(_logo("triangle")))
    ex.calibrate([_photo(s) for s in range(10, 10 + X.MIN_CALIBRATION)])
    m = ex.search(_paste(_photo(2), _logo("triangle"), (200, 100, 360, 260), (250, 250, 250),
                         angle=22))
    assert m is not None and m.correlation > 0.75 and m.score > 4
    assert abs(m.angle - 22) <= 8 and m.box[0] >= 190 and m.box[1] >= 70


def test_a_mark_in_perspective_is_aligned_by_a_homography(
    bolt: X.Exemplar, monkeypatch: pytest.MonkeyPatch,
) -> None:
    import cv2

    a = np.asarray(_logo().getchannel("A").resize((150, 150)), np.float32)
    src = np.float32([[0, 0], [150, 0], [150, 150], [0, 150]])
    dst = np.float32([[20, 0], [130, 0], [150, 150], [0, 150]])  # seen from below, tilted back
    warped = cv2.warpPerspective(a, cv2.getPerspectiveTransform(src, dst), (150, 150))
    alpha = Image.fromarray(warped.astype(np.uint8))
    photo = _photo(4)
    at = (250, 150)
    img = photo.copy()
    img.paste(Image.new("RGB", alpha.size, _seen(photo, (250, 150, 400, 300))), at, alpha)
    ys, xs = np.nonzero(warped > 25)
    truth = (at[0] + xs.min(), at[1] + ys.min(), at[0] + xs.max() + 1, at[1] + ys.max() + 1)
    aligned = bolt.search(img)
    monkeypatch.setattr(X, "ALIGN_SHIFT", 0.0)  # every alignment refused: the search as before
    plain = bolt.search(img)
    assert aligned is not None and plain is not None
    assert aligned.correlation > plain.correlation + 0.05 and aligned.score > plain.score
    assert iou(aligned.box, truth) >= max(0.8, iou(plain.box, truth))


def test_an_aligned_match_maps_the_silhouette_onto_the_photo(bolt: X.Exemplar) -> None:
    """Match.frame takes the silhouette's pixels to the photo's: the photo read back through
    it is the mark, in the silhouette's frame."""
    import cv2

    photo = _photo(5)
    img = _paste(photo, _logo(), (200, 120, 380, 300), _seen(photo, (200, 120, 380, 300)))
    m = bolt.search(img)
    assert m is not None and m.frame is not None
    h, w = bolt.mask.shape
    back = cv2.warpPerspective(np.asarray(img.convert("L"), np.float32), m.frame, (w, h),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    assert abs(np.corrcoef(back.ravel(), bolt.mask.ravel())[0, 1]) > 0.8  # truth: 0.88
    # the ink's corners: the bolt's canvas (40, 10) and (190, 190), at 0.9 photo px per px
    corner, far = m.frame @ [0, 0, 1], m.frame @ [*bolt.mask.shape[::-1], 1]
    assert corner[:2] / corner[2] == pytest.approx((200 + 36, 120 + 9), abs=3)
    assert far[:2] / far[2] == pytest.approx((200 + 171, 120 + 171), abs=3)


def test_calibrated_scores_separate_the_mark_from_photos_without_it(bolt: X.Exemplar) -> None:
    ex = bolt
    assert ex.null and all(min(v[1:]) > 0 for v in ex.null.values())
    assert len(ex.feed_scores) == 12
    box = (150, 90, 270, 210)
    with_mark = [ex.search(_paste(p, _logo(), box, _seen(p, box))).score
                 for p in map(_photo, range(20, 26))]
    other = [ex.search(_paste(p, _logo("triangle"), box, _seen(p, box))).score
             for p in map(_photo, range(20, 26))]
    assert np.mean(with_mark) > np.mean(other) + 1  # another brand's mark scores lower
    assert np.median(with_mark) > max(ex.feed_scores)


def test_a_size_seen_in_too_few_feed_photos_is_not_scored() -> None:
    # a feed of small photos and two large ones: the large sizes fit the two large ones only,
    # and a spread taken over two photos put a plain photo 80-250 "standard deviations" out
    ex = X.Exemplar(X.silhouette(_logo()))
    ex.calibrate([_photo(s, (200, 150)) for s in range(10, 22)] + [_photo(s) for s in (22, 23)])
    assert 0 < len(ex.null) < len(ex.sizes)
    for p in map(_photo, (30, 31, 32)):  # large photos, no mark
        m = ex.search(p)
        assert m is not None and m.score < 6


def test_an_image_smaller_than_every_template_gives_none() -> None:
    ex = X.Exemplar(X.silhouette(_logo()))
    assert ex.search(Image.new("RGB", (12, 12), (90, 90, 90))) is None


def test_a_flat_image_matches_nothing_strongly() -> None:
    ex = X.Exemplar(X.silhouette(_logo()))
    m = ex.search(Image.new("RGB", (400, 300), (128, 128, 128)))
    assert m is not None and m.correlation < 0.2


@pytest.fixture(scope="module")
def brand_logo() -> X.BrandLogo:
    logo, zs = X.BrandLogo.calibrated([_logo()], [_photo(s) for s in range(10, 22)])
    assert len(zs) == 12 and logo.threshold == pytest.approx(np.quantile(zs, 0.99))
    return logo


def _with_mark(seed: int = 2, box: tuple[int, int, int, int] = (300, 200, 380, 280),
               ) -> Image.Image:
    photo = _photo(seed)
    return _paste(photo, _logo(), box, _seen(photo, box))


def test_a_brand_logo_is_present_above_its_feed_threshold_with_its_box_in_full_pixels(
    brand_logo: X.BrandLogo,
) -> None:
    score, box = brand_logo.find(_with_mark())
    assert score > 0.5 and box is not None and iou(box, (300, 200, 380, 280)) >= 0.6
    # decoded at half size, the box is given in the full image's pixels
    half, full_box = brand_logo.find(_with_mark().resize((320, 240)), full=(640, 480))
    assert full_box is not None and iou(full_box, (300, 200, 380, 280)) >= 0.5
    assert brand_logo.find(_photo(30))[0] < 0.5 < half
    assert X.detection_score(brand_logo.threshold, brand_logo.threshold) == 0.5


def test_brands_searched_in_one_shared_photo_score_as_if_searched_alone(
    brand_logo: X.BrandLogo,
) -> None:
    triangle, _ = X.BrandLogo.calibrated([_logo("triangle")], [_photo(s) for s in range(10, 14)])
    img = _with_mark()
    photo = X.Photo(img)
    assert brand_logo.find(photo) == brand_logo.find(img)
    assert triangle.find(photo) == triangle.find(img)  # the second brand reads the cache
    sizes = brand_logo.exemplars[0].sizes
    assert set(photo._reduced) == {min(1.0, X.COARSE_CAP / s) for s in sizes}


def test_a_brand_shown_two_ways_is_found_by_either_mark_and_keeps_both_in_its_doc(
    brand_logo: X.BrandLogo,
) -> None:
    triangle, _ = X.BrandLogo.calibrated([_logo("triangle")], [_photo(s) for s in range(10, 14)])
    both = X.BrandLogo([*brand_logo.exemplars, *triangle.exemplars], brand_logo.threshold)
    photo = _photo(3)
    tri_box = (120, 100, 200, 180)
    shown = _paste(photo, _logo("triangle"), tri_box, _seen(photo, tri_box))
    score, box = both.find(shown)  # the triangle: the second mark's find
    assert box is not None and iou(box, tri_box) >= 0.5
    assert score > 0.5 > brand_logo.find(shown)[0]  # called present by the triangle alone
    assert both.find(_with_mark()) == brand_logo.find(_with_mark())  # the bolt: the first's
    again = X.BrandLogo.from_doc(*both.to_doc())
    assert len(again.exemplars) == 2 and again.find(shown) == both.find(shown)


def _heads_bundle(path: Path, brands: list[str]) -> Path:
    from detector.bundle import Heads, save_bundle

    rng = np.random.default_rng(0)
    heads = Heads(brands, np.zeros(4, np.float32), np.ones(4, np.float32),
                  rng.normal(size=(4, len(brands))).astype(np.float32),
                  np.zeros(len(brands), np.float32))
    backbone = {"backbone_id": "test-backbone", "name": "inception_v3", "input_size": 75,
                "embed_dim": 4, "weights": "test", "weights_source": "none"}
    return save_bundle(path, backbone=backbone, heads=heads,
                       thresholds={b: 0.4 + 0.1 * i for i, b in enumerate(brands)}, tiles=None,
                       extra={"training": {"note": "kept"}})


def test_a_logo_brand_round_trips_through_a_bundle_beside_the_heads(
    brand_logo: X.BrandLogo, tmp_path: Path,
) -> None:
    from detector.bundle import BundleMismatchError, load_bundle, read_metadata, with_logo

    base = load_bundle(_heads_bundle(tmp_path / "base", ["acme", "globex"]), embed=False)
    new = load_bundle(with_logo(base.path, tmp_path / "new", "bolt", brand_logo), embed=False)
    assert new.brands == ["acme", "globex", "bolt"] and new.heads.brands == ["acme", "globex"]
    assert new.thresholds == {**base.thresholds, "bolt": 0.5}
    np.testing.assert_array_equal(new.heads.kernel, base.heads.kernel)
    assert new.metadata["training"] == {"note": "kept"} and new.version != base.version
    img = _with_mark()
    assert new.logos["bolt"].find(img) == brand_logo.find(img)  # the same scores, exactly
    again = with_logo(base.path, tmp_path / "again", "bolt", brand_logo)
    assert read_metadata(again)["version"] == new.version  # the id is the content's
    # a brand that had a head is matched from its logo instead; other logos are kept
    both = load_bundle(with_logo(new.path, tmp_path / "both", "acme", brand_logo), embed=False)
    assert both.heads.brands == ["globex"] and list(both.logos) == ["bolt", "acme"]
    assert both.heads.kernel[:, 0].tolist() == base.heads.kernel[:, 1].tolist()
    # scores depend on the matching method: a bundle made by another refuses to load
    meta = json.loads((new.path / "bundle.json").read_text())
    meta["logos"]["method"] = "silhouette-ncc/0"
    (new.path / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleMismatchError, match="brands add --logo"):
        load_bundle(new.path, embed=False)


def test_the_scoring_steps_add_logo_brands_with_their_box_beside_the_heads(
    brand_logo: X.BrandLogo,
) -> None:
    import io

    from tests.support.memory_consumer import StubBundle
    from workers import stages
    from workers.config import ImageStatus
    from workers.metrics import StageMetrics

    bundle = StubBundle()
    bundle.logos = {"bolt": brand_logo}
    bundle.brands = [*bundle.brands, "bolt"]
    works = []
    for img in (_with_mark(), _photo(30)):
        buf = io.BytesIO()
        img.resize((1280, 960)).save(buf, "JPEG", quality=92)  # boxes in this image's pixels
        works.append(stages.Work(record=None, data=buf.getvalue()))
    metrics = StageMetrics()
    for w in works:
        stages.fetch_and_prepare(w, fetcher=None, size=bundle.input_size,  # type: ignore[arg-type]
                                 tiles=None, max_pixels=40_000_000, metrics=metrics,
                                 logos=bundle.logos)
        assert w.status == ImageStatus.OK
    stages._score(works, bundle)
    (hit, box), (miss, _) = works[0].scores["bolt"], works[1].scores["bolt"]
    assert list(works[0].scores) == ["acme", "globex", "bolt"]
    assert hit > 0.5 > miss and iou(box, (600, 400, 760, 560)) >= 0.5
