"""detector.mining: a brand's mark found in its labelled photos alone (no box, no logo
file), cut out as a silhouette, and taken in place of the brand's head only where it beats
the head on validation. Small images, scikit-image's photographs, no services."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bench.real_logos import iou
from detector import mining as M
from tests.unit.test_exemplar import _logo, _paste, _photo, _seen


def _ink_box(box: tuple[int, int, int, int]) -> tuple[int, ...]:
    """Where the bolt's ink lies when _paste puts its 200 px canvas on box."""
    x0, y0, x1, y1 = _logo().getchannel("A").getbbox()
    kx, ky = (box[2] - box[0]) / 200, (box[3] - box[1]) / 200
    return (round(box[0] + x0 * kx), round(box[1] + y0 * ky), round(box[0] + x1 * kx),
            round(box[1] + y1 * ky))


def _posts(n: int, seed: int) -> tuple[list[Image.Image], list[tuple[int, int, int, int]]]:
    """n photos with the bolt at a place and size of its own in each (64-160 px), in the
    colour a person would see on the patch beneath."""
    rng = np.random.default_rng(seed)
    out, boxes = [], []
    for k in range(n):
        photo = _photo(seed * 100 + k)
        side = int(rng.integers(64, 161))
        x, y = int(rng.integers(0, 640 - side)), int(rng.integers(0, 480 - side))
        box = (x, y, x + side, y + side)
        out.append(_paste(photo, _logo(), box, _seen(photo, box)))
        boxes.append(box)
    return out, boxes


@pytest.mark.parametrize(("mark", "ground"), [((255, 255, 255), (40, 60, 120)),
                                               ((20, 20, 20), (230, 210, 160))])
def test_the_ink_of_a_crop_is_the_mark_in_either_polarity(mark: tuple[int, ...],
                                                           ground: tuple[int, ...]) -> None:
    rng = np.random.default_rng(1)
    crop = Image.fromarray((np.array(ground) + rng.normal(0, 6, (150, 130, 3))).clip(0, 255)
                           .astype(np.uint8))
    crop = _paste(crop, _logo(), (15, 15, 115, 135), mark)
    m, box, cut = M.ink(np.asarray(crop))
    assert m is not None and cut < 0.02
    want = np.asarray(_logo().getchannel("A").resize((100, 120)), np.float32) > 127
    want = want[np.ix_(want.any(1), want.any(0))]
    assert iou(box, _ink_box((15, 15, 115, 135))) > 0.85
    assert m.shape[0] == pytest.approx(want.shape[0], abs=3)
    assert m.shape[1] == pytest.approx(want.shape[1], abs=3)
    h, w = min(m.shape[0], want.shape[0]), min(m.shape[1], want.shape[1])
    assert ((m[:h, :w] > 0.5) == want[:h, :w]).mean() > 0.93


def test_a_flat_crop_has_no_ink() -> None:
    assert M.ink(np.full((60, 60, 3), 128, np.uint8))[0] is None


def test_a_mark_on_a_badge_is_cut_from_inside_the_badge() -> None:
    """The crop's two clusters split a sticker from the photo; the mark is inside it."""
    from PIL import ImageDraw

    rng = np.random.default_rng(2)
    crop = Image.fromarray((np.array((200, 190, 170)) + rng.normal(0, 6, (170, 150, 3)))
                           .clip(0, 255).astype(np.uint8))
    ImageDraw.Draw(crop).rounded_rectangle((10, 10, 140, 160), radius=18, fill=(30, 40, 90))
    crop = _paste(crop, _logo(), (25, 25, 125, 145), (240, 200, 40))
    rgb = np.asarray(crop)
    badge, (x0, y0, x1, y1), _ = M.ink(rgb)
    assert badge is not None and iou((x0, y0, x1, y1), (10, 10, 141, 161)) > 0.9
    got = M.within(rgb[y0:y1, x0:x1], badge)
    assert got is not None
    m, (u0, v0, u1, v1) = got
    assert iou((x0 + u0, y0 + v0, x0 + u1, y0 + v1), _ink_box((25, 25, 125, 145))) > 0.85
    want = np.asarray(_logo().getchannel("A").resize((100, 120)), np.float32) > 127
    want = want[np.ix_(want.any(1), want.any(0))]
    h, w = min(m.shape[0], want.shape[0]), min(m.shape[1], want.shape[1])
    assert ((m[:h, :w] > 0.5) == want[:h, :w]).mean() > 0.9
    # the bare mark is no badge: nothing is looked for inside it
    bare = M.ink(np.asarray(_paste(Image.fromarray(np.full((150, 130, 3), 200, np.uint8)),
                                   _logo(), (15, 15, 115, 135), (20, 20, 20))))[0]
    assert bare is not None and M.within(np.zeros((*bare.shape, 3), np.uint8), bare) is None


def test_the_photos_of_a_brand_vote_for_its_mark_not_for_their_backgrounds() -> None:
    brand, boxes = _posts(10, 3)
    # the brand-less photos are drawn from the same backgrounds (crops of the same six
    # photographs), as a user's folders share places and subjects
    others = [_photo(s) for s in range(300, 318)]
    found = M.candidates(brand, others, n=3)
    assert len(found) == 3
    for c in found:
        assert iou(c.box, _ink_box(boxes[c.source])) >= 0.5, (c.source, c.box, boxes[c.source])
        assert 0.8 < c.mask.shape[0] / c.mask.shape[1] * 151 / 181 < 1.25  # the bolt's aspect


def test_a_brands_votes_do_not_hang_on_what_the_process_drew_at_random_before() -> None:
    """OpenCV's k-d trees split at random from its shared RNG, which the colour k-means also
    draws on: the votes of one brand are the same after any other work in the process."""
    import cv2  # type: ignore[import-not-found]

    brand, _ = _posts(10, 3)
    feats = [M.keypoints(p) for p in brand]
    others = [M.keypoints(_photo(s)) for s in range(300, 318)]
    first = M.votes(feats, others)
    cv2.setRNGSeed(12345)  # what an earlier brand's k-means leaves behind
    cv2.randu(np.zeros((100, 1), np.float32), 0, 1)
    again = M.votes(feats, others)
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))


def _job(tmp_path: Path, head_scores: list[float] | None) -> M.Job:
    def save(imgs: list[Image.Image], name: str) -> list[Path]:
        out = []
        for k, img in enumerate(imgs):
            out.append(tmp_path / f"{name}{k}.jpg")
            img.save(out[-1], quality=90)
        return out

    pos, boxes = _posts(10, 4)
    val_pos, _ = _posts(3, 5)
    val_neg = [_photo(s) for s in range(500, 505)]
    broken = tmp_path / "p-broken.jpg"  # a positive that does not decode is left out
    broken.write_bytes(b"not an image")
    (tmp_path / "boxes.json").write_text(json.dumps(
        {str(p): list(_ink_box(b)) for p, b in zip(save(pos, "p"), boxes, strict=True)}))
    return M.Job("bolt", [broken, *sorted(tmp_path.glob("p[0-9]*.jpg"))],
                 save([_photo(s) for s in range(400, 412)], "n"),
                 save(val_pos + val_neg, "v"), [True] * 3 + [False] * 5, head_scores)


def test_the_views_of_a_mark_vote_out_what_one_photo_added_and_restore_what_it_cut() -> None:
    """A mask cut from one photo with an occluder on it and the bolt's dot cut off: the
    bolt's aligned views in eight other photos (each in its own colours) give the bolt."""
    from detector.exemplar import Photo, silhouette

    truth = silhouette(_logo()) > 0.5  # the bolt's ink: canvas (40, 10) on, 151 x 181
    bad = truth.copy()
    bad[125:, 95:] = False  # the dot, cut off by the crop
    bad[5:35, 115:145] = True  # a sticker beside the bolt, in its photo alone
    ys, xs = np.nonzero(bad)
    oy, ox = ys.min(), xs.min()
    prior = bad[oy:ys.max() + 1, ox:xs.max() + 1].astype(np.float32)
    photos, frames = [], []
    for k in range(8):
        box = (100 + 20 * k, 60 + 10 * k, 100 + 20 * k + 180 + 8 * k, 60 + 10 * k + 180 + 8 * k)
        photo = _photo(700 + k)
        photos.append(Photo(_paste(photo, _logo(), box, _seen(photo, box))))
        kk = (box[2] - box[0]) / 200  # the prior's pixel (u, v) is the canvas' (u+ox+40, v+oy+10)
        frames.append(np.array([[kk, 0, box[0] + (ox + 40) * kk],
                                [0, kk, box[1] + (oy + 10) * kk], [0, 0, 1]]))
    got = M.consensus(prior, M.views(photos, frames, prior.shape))
    assert got is not None

    def agree(m: np.ndarray) -> float:
        r = np.asarray(Image.fromarray((m * 255).astype(np.uint8)).resize(truth.shape[::-1]))
        return float(((r > 127) & truth).sum() / ((r > 127) | truth).sum())

    assert agree(got) > 0.85 and agree(prior) < 0.75
    assert got.shape[0] / got.shape[1] == pytest.approx(181 / 151, rel=0.06)


def test_a_head_stays_only_where_it_beats_the_mark_beyond_the_validation_photos_chance() -> None:
    y = np.r_[np.ones(5, bool), np.zeros(185, bool)]
    rng = np.random.default_rng(3)
    noise = rng.normal(0, 1, len(y))
    ranked = noise + 10 * y  # every positive first
    buried = noise - 10 * y  # every positive last
    assert M.replaces(y, ranked, None) == (True, 0.0)  # no head: the mark
    assert not M.replaces(y, buried, ranked)[0]  # a head far better stays
    assert M.replaces(y, ranked, buried)[0]
    assert M.replaces(y, ranked, ranked)[0]  # a tie takes the mark
    # a head better by one positive's rank, as 0.81 against 0.76 on 5 photos: chance
    close = ranked.copy()
    close[4] = np.sort(noise[5:])[-2]  # one positive below the strongest negative
    mark_ap, head_ap = (M.average_precision(y, v) for v in (close, ranked))
    assert head_ap > mark_ap
    take, share = M.replaces(y, close, ranked)
    assert take and share < M.HEAD_CONFIDENCE
    assert M.replaces(y, close, ranked) == (take, share)  # the same draw each time
    assert M.replaces(np.zeros(190, bool), ranked, buried) == (True, 0.0)  # nothing tells


def test_a_second_mark_is_kept_only_where_it_finds_what_the_first_misses() -> None:
    y = np.r_[np.ones(10, bool), np.zeros(40, bool)]
    rng = np.random.default_rng(5)
    noise = rng.normal(0, 1, len(y))
    symbol = noise + 10 * np.r_[np.ones(5), np.zeros(45)]  # finds half the brand's photos
    wordmark = rng.normal(0, 1, len(y)) + 10 * np.r_[np.zeros(5), np.ones(5), np.zeros(40)]
    same = symbol + rng.normal(0, 0.01, len(y))  # the kept mark again, cut a little apart
    assert M.average_precision(y, np.maximum(symbol, wordmark)) > 0.99
    j, gain = M.partner(y, symbol, [same, None, wordmark])
    assert j == 2  # the other half of the brand, found by the other mark
    assert gain == pytest.approx(1 - M.average_precision(y, symbol), abs=0.01) and gain > 0.1
    assert M.partner(y, symbol, [same, None]) is None  # nothing new: one search suffices
    assert M.partner(y, symbol, []) is None
    full = noise + 10 * y  # every positive first already: nothing left to gain
    assert M.partner(y, full, [wordmark]) is None


def test_a_mark_mined_from_a_folder_finds_the_brand_in_other_photos(tmp_path: Path) -> None:
    job = _job(tmp_path, head_scores=[0.9, 0.1, 0.1, 0.8, 0.1, 0.1, 0.1, 0.1])
    logo, report = M.mine(job)
    assert report["chosen"] == "mark" and report["val_average_precision"] > 0.3
    truth = json.loads((tmp_path / "boxes.json").read_text())
    for c in report["candidates"]:  # each names the photo it was cut from, and where
        assert iou(tuple(c["box"]), tuple(truth[c["photo"]])) >= 0.5
        assert c["selection_average_precision"] > 0.3  # also scored on the other positives
    assert report["consensus"]["views"] >= 3  # the chosen one's matches voted its pixels
    assert logo is not None and np.isfinite(logo.threshold)
    score, box = logo.find(Image.open(job.val[0]).convert("RGB"))
    assert score > 0.5 and box is not None  # a validation photo of the brand is found
    # no validation photo of the brand: the choice set's other photos still choose the mark
    kept, report = M.mine(M.Job(**{**job.__dict__, "val_labels": [False] * len(job.val)}))
    assert report["chosen"] == "mark" and report["val_average_precision"] is None
    assert report["head_val_average_precision"] is None  # not NaN in bundle.json
    assert kept is not None and report["candidates"][0]["selection_average_precision"] > 0.3


def test_train_makes_a_brand_whose_mark_beats_its_head_a_logo_brand(tmp_path: Path) -> None:
    """`train_bundle` with its default marks=True: a random backbone's head is no match for
    the mark mined from the folder, so the bundle matches the brand's mark instead (its head
    dropped), says so in its validation report, and finds it in a new photo."""
    from detector.bundle import load_bundle
    from detector.evaluate import evaluate_bundle  # `logowatch evaluate` reports it too
    from detector.train import TrainConfig, train_bundle

    posts, _ = _posts(14, 6)
    for k, img in enumerate(posts):
        (tmp_path / "data" / "bolt").mkdir(parents=True, exist_ok=True)
        img.save(tmp_path / "data" / "bolt" / f"p{k}.jpg", quality=90)
    for k in range(20):
        (tmp_path / "data" / "no-logo").mkdir(parents=True, exist_ok=True)
        _photo(600 + k).save(tmp_path / "data" / "no-logo" / f"n{k}.jpg", quality=90)
    out = train_bundle(tmp_path / "data", tmp_path / "b", weights="none", input_size=75,
                       progress=False, config=TrainConfig(augment=0, tiles=None, test_pct=0,
                                                          validation_pct=30,
                                                          taps=("mixed2:max",)))
    b = load_bundle(out)
    report = b.metadata["metrics"]["validation"]["bolt"]["mark"]
    assert report["chosen"] == "mark" and len(report["candidates"]) >= 1
    assert "bolt" in b.logos and "bolt" not in b.heads.brands
    photo, = _posts(1, 7)[0]
    score, box = b.logos["bolt"].find(photo)
    assert score > 0.5 and box is not None
    ev = evaluate_bundle(b, tmp_path / "data", tmp_path / "eval", split="validation",
                         validation_pct=30, test_pct=0, progress=False)
    one = ev["modes"]["whole_image"]["bolt"]
    assert one["positives"] >= 1 and one["average_precision"] == pytest.approx(
        report["val_average_precision"])
    assert (tmp_path / "eval" / "pr_curve.png").is_file()


def test_the_mined_threshold_reaches_past_the_scores_it_was_fitted_to() -> None:
    rng = np.random.default_rng(3)
    scores = rng.normal(0.0, 1.0, 200).tolist()  # brand-less images' z-scores
    t = M.tail_threshold(scores, 1e-3)
    assert t > max(scores)  # an empirical quantile stops at the largest of 200
    assert 2.4 < t < 4.5  # the normal's 1-in-1000 point is 3.09
    assert M.tail_threshold(scores, 1e-2) < t  # a looser rate, a lower threshold
    fresh = rng.normal(0.0, 1.0, 20000)
    assert np.mean(fresh > t) < 5e-3  # about the rate asked for, on scores it never saw
    assert M.tail_threshold([1.0, float("-inf"), float("nan")] * 3) >= 1.0
    assert M.tail_threshold([]) == float("inf")  # nothing to calibrate on: nothing called
