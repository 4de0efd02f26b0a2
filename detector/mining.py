"""A brand's mark found in its labelled photos, so that `logowatch train` can match it
(`detector.exemplar`) where a head on frozen features cannot tell it from the photo.

A user's folder of a brand's photos shares one thing the other folders lack: the mark. Each
photo's SIFT keypoints (on its grey and on its negative, so that a white mark on a dark shirt
meets a dark mark on a light one) look for their near neighbours among every keypoint of the
brand's other photos and of photos without it; a keypoint votes for the number of other brand
photos it meets, less the number of brand-less photos it meets scaled to as many photos. A
background shared by two posts of one brand is met in the brand-less photos too and cancels;
the mark is met in the brand's photos alone. The strongest votes of a photo, less those far
from their median, bound the mark in it; the photos whose marks have the most votes give the
`Candidate`s. In a candidate's crop, two colour clusters (Lab, k-means) split the mark from
its surround: the mark is the cluster the crop's border holds less of, less the parts that
touch the border. Where that is a badge (a sticker, an app icon: a filled disc or rounded
square), the mark inside it (`within`) is a candidate too. `logos_from_photos` calibrates
each candidate as a logo file would be, keeps the one with the best AP on the validation
photos and SELECTION of the brand's other training photos, redraws it from its best matches
there (`consensus`: their views, read back through the alignment's homography, vote its
pixels) where that scores as well, and takes it in place of the brand's head unless the head
beats it on the validation photos by more than their chance (`replaces`): the labels decide,
where a handful of photos can (a brand with no validation photo takes its mark). Its
threshold is where an exponential fitted to the tail of its scores on the brand-less photos
mining has (negatives and validation, about 190) lets 1 in 1000 through.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from detector.metrics import average_precision

KEYPOINTS = 600  # SIFT keypoints per photo and polarity
MATCH_DISTANCE = 230.0  # SIFT descriptor distance (they have norm 512) under which two meet
NEIGHBOURS = 60  # nearest keypoints read per keypoint
STRONG = 0.6  # a photo's keypoints within this share of its best vote bound its mark
MIN_SHARE = 0.1  # of the other brand photos a strong keypoint must meet, at least 2
SPREAD = 2.5  # strong keypoints farther than this many median distances from their median drop
PAD = 0.15  # the crop's margin around the mark, share of its long side
MIN_PART = 0.002  # mark parts under this share of the crop are noise
GROWTH = (1.0, 1.5, 2.25, 3.4)  # the strong keypoints' box, widened in turn by these
MAX_CUT = 0.03  # share of a crop's border the mark may cover (clutter), more is a cut mark
BADGE = 0.9  # share of its convex hull a filled mark covers, above which it may be a badge
BADGE_RIM = 0.04  # the badge's rim left out of `within`'s look inside, share of its side
CANDIDATES = 5  # photos per brand that candidates are cut from (docs/detector.md)
NEGATIVES = 150  # brand-less photos voted against
CALIBRATION = 60  # of them, what a candidate is calibrated on
FALSE_RATE = 1e-3  # brand-less images a mined mark's threshold lets through
TAIL = 0.2  # top share of the brand-less scores its tail is fitted to (at least 5 of them)
SELECTION = 24  # training photos of the brand (not a candidate's source) candidates are scored on
SELECTION_NEGATIVES = 30  # and of the NEGATIVES past CALIBRATION, beside the validation photos
VIEWS = 8  # of those, the best matches whose aligned views vote the mark's pixels (`consensus`)
VIEW_SIDE = 96  # px of the mark's long side in the frame the views are read in
VIEW_PAD = 0.25  # that frame's margin around the mark, share of its long side
BOOTSTRAP = 1000  # resamples of the validation photos that compare a mark with a head
HEAD_CONFIDENCE = 0.95  # share of them a head must win to stay (`replaces`)
PAIR_GAIN = 0.02  # selection AP a second mark must add (the best of the two) to be kept too


@dataclass(frozen=True)
class Candidate:
    mask: np.ndarray  # the mark's coverage, float32 0..1, cropped to its ink
    source: int  # index of the brand photo it was cut from
    box: tuple[int, int, int, int]  # the mark's, in that photo's pixels (reduced)
    votes: float  # the strong keypoints' votes, summed


def _cv2() -> Any:
    import cv2  # type: ignore[import-not-found]

    return cv2


def keypoints(img: Image.Image) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) and SIFT descriptors of img's keypoints in either polarity."""
    cv2 = _cv2()
    sift = cv2.SIFT_create(nfeatures=KEYPOINTS)
    grey = np.asarray(img.convert("L"))
    pts, desc = [], []
    for g in (grey, 255 - grey):
        kp, d = sift.detectAndCompute(np.ascontiguousarray(g), None)
        if d is not None:
            pts += [k.pt for k in kp]
            desc.append(d)
    return (np.array(pts, np.float32).reshape(-1, 2),
            np.concatenate(desc) if desc else np.zeros((0, 128), np.float32))


def votes(brand: list[tuple[np.ndarray, np.ndarray]],
          others: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
    """Each brand photo's keypoints' votes: the other brand photos they meet, less the
    brand-less photos they meet times len(brand) / len(others)."""
    cv2 = _cv2()
    descs = [d for _, d in brand] + [d for _, d in others]
    owner = np.concatenate([np.full(len(d), i) for i, d in enumerate(descs)]).astype(np.int64)
    index = cv2.FlannBasedMatcher({"algorithm": 1, "trees": 4}, {"checks": 64})
    # the k-d trees are split at random by OpenCV's shared RNG, which _two_colours reseeds
    # and advances: reset it, so a brand's votes do not hang on what this process did before
    # (0 is the RNG's state at start: the first brand of a fresh process keeps its votes)
    cv2.setRNGSeed(0)
    index.add([np.concatenate(descs).astype(np.float32)])
    index.train()
    weight = len(brand) / max(len(others), 1)
    out = []
    for i, (_, d) in enumerate(brand):
        v = np.zeros(len(d), np.float32)
        if len(d):
            for k, near in enumerate(index.knnMatch(d.astype(np.float32), k=NEIGHBOURS)):
                met = {int(owner[m.trainIdx]) for m in near if m.distance <= MATCH_DISTANCE}
                met.discard(i)
                pos = sum(o < len(brand) for o in met)
                v[k] = pos - (len(met) - pos) * weight
        out.append(v)
    return out


def region(pts: np.ndarray, v: np.ndarray, min_votes: float = 2.0,
           ) -> tuple[tuple[int, int, int, int], float] | None:
    """The box of a photo's strong keypoints (with PAD) and their votes; None if under 3."""
    if len(v) == 0:
        return None
    strong = v >= max(STRONG * float(v.max()), min_votes)
    hi = pts[strong]
    if len(hi) < 3:
        return None
    d = np.linalg.norm(hi - np.median(hi, 0), axis=1)
    hi = hi[d <= max(SPREAD * float(np.median(d)), 8.0)]
    (x0, y0), (x1, y1) = hi.min(0), hi.max(0)
    pad = PAD * max(x1 - x0, y1 - y0) + 4
    return ((int(x0 - pad), int(y0 - pad), int(np.ceil(x1 + pad)), int(np.ceil(y1 + pad))),
            float(v[strong].sum()))


def _two_colours(lab: np.ndarray) -> np.ndarray:
    """0/1 per row of lab (N x 3 Lab pixels): two k-means clusters, the same each run."""
    cv2 = _cv2()
    crit = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, 20, 0.5)
    cv2.setRNGSeed(0)
    _, lbl, _ = cv2.kmeans(lab.astype(np.float32), 2, None, crit, 3, cv2.KMEANS_PP_CENTERS)
    return lbl.ravel()


def ink(crop: np.ndarray) -> tuple[np.ndarray | None, tuple[int, int, int, int], float]:
    """The mark in an RGB crop around it (float32 0..1 cropped to its ink, or None), its box
    in the crop and the share of the crop's border it covers: of two Lab colour clusters, the
    mark is the one the border holds less of, without parts touching the border (the
    surround) or under MIN_PART of the crop. A crop that cuts through the mark shows it on
    its border."""
    cv2 = _cv2()
    h, w = crop.shape[:2]
    if h < 8 or w < 8:
        return None, (0, 0, w, h), 1.0
    lbl = _two_colours(cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2LAB)
                       .reshape(-1, 3)).reshape(h, w)
    border = np.concatenate([lbl[0], lbl[-1], lbl[:, 0], lbl[:, -1]])
    label = int(np.mean(border == 0) >= 0.5)
    share = float(np.mean(border == label))
    got = _inner((lbl == label).astype(np.uint8))
    return (None, (0, 0, w, h), share) if got is None else (*got, share)


def within(crop: np.ndarray, mark: np.ndarray,
           ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The mark inside `ink`'s mark where that is a badge (filled, it covers BADGE of its
    convex hull: a disc, a rounded square, a label): two colour clusters of the pixels
    inside it, BADGE_RIM in from its edge, and the mark the cluster its rim holds less of,
    less the parts touching that rim; cropped to its box, and that box in crop's pixels
    (crop: the RGB pixels under mark). None where mark is no badge or nothing is left. A
    brand's photos show its mark on a sticker or an app icon as often as bare: the crop's
    two clusters then split the badge from the photo, and the mark is inside."""
    cv2 = _cv2()
    m = (mark > 0.5).astype(np.uint8)
    h, w = m.shape
    if h < 12 or w < 12:
        return None
    flood = np.pad(m, 1)
    cv2.floodFill(flood, None, (0, 0), 2)
    filled = (flood[1:-1, 1:-1] != 2).astype(np.uint8)
    ys, xs = np.nonzero(filled)
    hull = np.zeros_like(filled)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32)), 1)
    if filled.sum() < BADGE * hull.sum():
        return None
    r = max(1, round(BADGE_RIM * max(h, w)))
    inside = cv2.erode(filled, np.ones((2 * r + 1, 2 * r + 1), np.uint8))
    rim = (inside & (1 - cv2.erode(inside, np.ones((3, 3), np.uint8)))).astype(bool)
    if inside.sum() < 50 or not rim.any():
        return None
    inside = inside.astype(bool)
    labels = np.full((h, w), -1, np.int32)
    labels[inside] = _two_colours(
        cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2LAB)[inside])
    label = int(np.mean(labels[rim] == 0) >= 0.5)
    return _inner((labels == label).astype(np.uint8), rim, float(inside.sum()))


def _inner(mark: np.ndarray, rim: np.ndarray | None = None, whole: float | None = None,
           ) -> tuple[np.ndarray, tuple[int, int, int, int]] | None:
    """The parts of a 0/1 mark that neither touch rim (bool, its shape; by default the
    frame's outer pixels: a surround) nor are under MIN_PART of the frame, cropped to their
    box (float32), and that box; None where they cover under 2 % of whole (pixels; by
    default the frame's)."""
    cv2 = _cv2()
    h, w = mark.shape
    if rim is None:
        rim = np.zeros((h, w), bool)
        rim[0], rim[-1], rim[:, 0], rim[:, -1] = True, True, True, True
    n, parts, stats, _ = cv2.connectedComponentsWithStats(mark, connectivity=8)
    touching = set(np.unique(parts[rim]).tolist())
    kept = [k for k in range(1, n) if k not in touching and stats[k][4] >= MIN_PART * h * w]
    keep = np.isin(parts, kept).astype(np.uint8)
    if keep.sum() < 0.02 * (h * w if whole is None else whole):
        return None
    ys, xs = np.nonzero(keep)
    x0, y0, x1, y1 = int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1
    return keep[y0:y1, x0:x1].astype(np.float32), (x0, y0, x1, y1)


def candidates(brand: Sequence[Image.Image], others: Sequence[Image.Image],
               n: int = CANDIDATES) -> list[Candidate]:
    """Marks cut from the n brand photos whose strong keypoints vote most (two from one
    photo where its mark is a badge: the badge and the mark `within` it)."""
    feats = [keypoints(img) for img in brand]
    v = votes(feats, [keypoints(img) for img in others])
    least = max(2.0, MIN_SHARE * (len(brand) - 1))
    found = sorted(((r, i) for i, ((pts, _), vi) in enumerate(zip(feats, v, strict=True))
                    if (r := region(pts, vi, least)) is not None), key=lambda t: -t[0][1])
    out: list[Candidate] = []
    photos = 0
    for (box, support), i in found:
        rgb = np.asarray(brand[i].convert("RGB"))
        cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
        for grow in GROWTH:  # strong keypoints sit on a mark's corners: widen until it is whole
            hw, hh = (box[2] - box[0]) * grow / 2, (box[3] - box[1]) * grow / 2
            at = (max(0, int(cx - hw)), max(0, int(cy - hh)), int(cx + hw), int(cy + hh))
            crop = rgb[at[1]:at[3], at[0]:at[2]]
            m, (x0, y0, x1, y1), cut = ink(crop)
            if m is not None and cut <= MAX_CUT:
                x0, y0 = at[0] + x0, at[1] + y0
                out.append(Candidate(m, i, (x0, y0, at[0] + x1, at[1] + y1), support))
                if (inner := within(rgb[y0:y0 + m.shape[0], x0:x0 + m.shape[1]], m)):
                    im, (u0, v0, u1, v1) = inner
                    out.append(Candidate(im, i, (x0 + u0, y0 + v0, x0 + u1, y0 + v1), support))
                photos += 1
                break
        if photos == n:
            break
    return out


def views(photos: Sequence[Any], frames: Sequence[np.ndarray], shape: tuple[int, int],
          ) -> list[np.ndarray]:
    """Each photo's colour (`Photo.colour(FINE_SIDE)`, 0..1) read through its match's frame
    (the mark's pixels to the photo's) in the mark's frame: the mark's long side VIEW_SIDE px
    with VIEW_PAD of it around, so that a part the mask lacks is in view."""
    from detector.exemplar import FINE_SIDE

    cv2 = _cv2()
    k = VIEW_SIDE / max(shape)
    p = round(VIEW_PAD * VIEW_SIDE)
    size = (round(shape[1] * k) + 2 * p, round(shape[0] * k) + 2 * p)
    to_mask = np.linalg.inv(np.array([[k, 0, p], [0, k, p], [0, 0, 1]]))
    return [cv2.warpPerspective(np.ascontiguousarray(ph.colour(FINE_SIDE)), f @ to_mask, size,
                                flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                borderMode=cv2.BORDER_REPLICATE)
            for ph, f in zip(photos, frames, strict=True)]


def consensus(mask: np.ndarray, seen: Sequence[np.ndarray]) -> np.ndarray | None:
    """The mark as the mask and its aligned views (`views`) agree on it: each view is split
    into ink and surround by the mix of its colour channels that follows the mask best
    (least squares) cut halfway between the two's means, and a pixel is ink where at least
    half of the mask and the views say so, less the parts touching the frame (a surround)
    or under MIN_PART of it; None where under 2 % of the frame is left. An occluder, a
    badge's rim or the clutter beside the mark in the photo it was cut from is in one view
    and not the others; a part the crop cut off is in the others."""
    cv2 = _cv2()
    if not seen:
        return mask
    h, w = seen[0].shape[:2]
    p = round(VIEW_PAD * VIEW_SIDE)
    prior = np.zeros((h, w), np.float32)
    prior[p:h - p, p:w - p] = cv2.resize(mask, (w - 2 * p, h - 2 * p),
                                         interpolation=cv2.INTER_AREA)
    prior = prior > 0.5
    votes = prior.astype(np.float32)
    m = prior.ravel().astype(np.float64) - prior.mean()
    for v in seen:
        x = v.reshape(-1, 3).astype(np.float64)
        x -= x.mean(0)
        beta = np.linalg.solve(x.T @ x / len(x) + np.eye(3) * 1e-4, x.T @ m / len(x))
        s = (x @ beta).reshape(h, w)
        votes += s > (s[prior].mean() + s[~prior].mean()) / 2
    got = _inner((votes >= (len(seen) + 1) / 2).astype(np.uint8))
    return None if got is None else got[0]


def _reduced(img: Image.Image) -> Image.Image:
    """img with its long side at most FINE_SIDE, where the marks are mined."""
    from detector.exemplar import FINE_SIDE

    if max(img.size) <= FINE_SIDE:
        return img
    out = img.copy()
    out.thumbnail((FINE_SIDE, FINE_SIDE), Image.Resampling.LANCZOS)
    return out


def partner(y: np.ndarray, kept: np.ndarray, others: Sequence[np.ndarray | None],
            ) -> tuple[int, float] | None:
    """(index, AP gained) of the candidate among others (scores of the same photos; None:
    not one) whose best with the kept mark's scores ranks y best, where it gains at least
    PAIR_GAIN over the kept mark alone: a brand shown two ways (a badge and the mark inside
    it, a symbol and its wordmark) is then searched both ways, each photo by its better."""
    base = average_precision(y, kept)
    gains = [(average_precision(y, np.maximum(kept, o)) - base, j)
             for j, o in enumerate(others) if o is not None]
    if not gains or (best := max(gains))[0] < PAIR_GAIN:
        return None
    return best[1], best[0]


def tail_threshold(scores: Sequence[float], rate: float = FALSE_RATE) -> float:
    """The score a share `rate` of brand-less images would exceed, from a few hundred of
    their scores: an exponential fitted to the top TAIL of them (the peaks-over-threshold
    rule), since an empirical quantile cannot go past 1 / len(scores)."""
    z = np.sort(np.asarray([v for v in scores if np.isfinite(v)], np.float64))
    if len(z) == 0:
        return float("inf")
    k = min(len(z), max(5, int(TAIL * len(z))))
    top = z[-k:]
    base = float(top[0])
    scale = max(float(np.mean(top - base)), 1e-3)
    return base + scale * float(np.log(max(k / len(z) / rate, 1.0)))


def replaces(y: np.ndarray, mark: np.ndarray, head: np.ndarray | None,
             seed: int = 0) -> tuple[bool, float]:
    """Whether a mark with validation scores `mark` takes the place of a head with `head`
    (None: no head), and the share of resamples the head won. y: the validation labels; with
    no positive among them nothing tells the two apart, and a tie takes the mark.

    A validation split holds a handful of a brand's photos (about 5 in a 50-photo folder), so
    one AP above another there is mostly chance: the head stays only where it beats the mark
    in HEAD_CONFIDENCE of BOOTSTRAP resamples of the validation photos (positives and
    negatives drawn apart, with replacement, the same draw for both). Where they differ on
    unseen photos the head is the one that fails (frozen features learn the training photos'
    surroundings; a mark is the brand's shape): on the realistic benchmark a head that read
    0.81 against its mark's 0.76 on 5 photos tested 0.10 (docs/detector.md)."""
    y = np.asarray(y, bool)
    if head is None or not y.any():  # no head, or no photo to tell them by: a tie
        return True, 0.0
    rng = np.random.default_rng([seed, 11])
    pos, neg = np.flatnonzero(y), np.flatnonzero(~y)
    wins = 0
    for _ in range(BOOTSTRAP):
        idx = np.r_[rng.choice(pos, len(pos)), rng.choice(neg, len(neg))]
        wins += average_precision(y[idx], head[idx]) > average_precision(y[idx], mark[idx])
    share = wins / BOOTSTRAP
    return bool(share < HEAD_CONFIDENCE), share


@dataclass(frozen=True)
class Job:
    brand: str
    positives: list[Path]  # the brand's training photos
    negatives: list[Path]  # training photos without the brand (NEGATIVES of them)
    val: list[Path]
    val_labels: list[bool]
    head_scores: list[float] | None  # the brand's head's scores of the val photos, to beat


def mine(job: Job) -> tuple[Any, dict[str, Any]]:
    """(a calibrated `BrandLogo` or None, a report) for one brand (a process of its own)."""
    from detector.exemplar import BrandLogo, Exemplar, Photo, decoded
    from detector.preprocess import ImageError

    def read(paths: list[Path]) -> list[Photo | None]:
        out: list[Photo | None] = []
        for p in paths:
            try:
                out.append(Photo(decoded(p.read_bytes())[0]))
            except (ImageError, OSError):
                out.append(None)
        return out

    read_pos = [(path, p) for path, p in zip(job.positives, read(job.positives), strict=True)
                if p is not None]  # a candidate's source indexes these: keep their paths
    pos = [p for _, p in read_pos]
    others = [p for p in read(job.negatives) if p is not None]
    neg = others[:CALIBRATION]
    val = read(job.val)
    y = np.array(job.val_labels, bool)
    head = None if job.head_scores is None else np.array(job.head_scores, np.float64)
    report: dict[str, Any] = {"candidates": [], "head_val_average_precision":
                              None if head is None or not y.any() else average_precision(y, head)}
    _cv2().setNumThreads(1)  # one brand per core
    found = candidates([_reduced(p.img) for p in pos], [_reduced(p.img) for p in others])
    # every candidate is also scored on SELECTION of the brand's training photos (none a
    # candidate was cut from): a validation split holds a handful of the brand's photos
    sources = {c.source for c in found}
    order = np.random.default_rng(len(pos)).permutation(len(pos))
    picked = [int(i) for i in order if i not in sources][:SELECTION]
    sel = [pos[i] for i in picked]
    sel_neg = others[CALIBRATION:CALIBRATION + SELECTION_NEGATIVES]
    labels = np.concatenate([y, np.ones(len(sel), bool), np.zeros(len(sel_neg), bool)])
    at = len(y)  # where the selection photos' scores start

    def scored(ex: Exemplar) -> tuple[np.ndarray, list[Any]]:
        ex.calibrate(neg)
        ms = [None if p is None else ex.search(p) for p in val]
        ms += [ex.search(p) for p in sel + sel_neg]
        return np.array([-np.inf if m is None else m.score for m in ms]), ms

    tried = []
    for c in found:
        ex = Exemplar(c.mask)
        s, ms = scored(ex)
        tried.append((average_precision(labels, s), ex, s, ms))
        report["candidates"].append({
            "photo": str(read_pos[c.source][0]), "box": c.box, "votes": round(c.votes, 1),
            "val_average_precision": average_precision(y, s[:at]) if y.any() else None,
            "selection_average_precision": tried[-1][0]})
    if not tried:
        report["chosen"] = "head"
        return None, report
    i = int(np.argmax([t[0] for t in tried]))  # the first of a tie: the most votes
    _, ex, s, ms = tried[i]
    c = found[i]
    info: dict[str, Any] = {"mined_from": str(read_pos[c.source][0]), "box": list(c.box)}
    # its best matches among the selection photos vote its pixels; the rest tell the two apart
    rest = np.arange(len(s))  # the photos that did not vote the kept mark's pixels
    top = sorted((j for j, m in enumerate(ms[at:at + len(sel)])
                  if m is not None and m.frame is not None), key=lambda j: -s[at + j])[:VIEWS]
    if top and (mark := consensus(ex.mask, views([sel[j] for j in top],
                                                 [ms[at + j].frame for j in top],
                                                 ex.mask.shape))) is not None:
        rest = np.array([k for k in range(len(s)) if k - at not in top])
        other = Exemplar(mark)
        s2, _ = scored(other)
        ap_old, ap_new = (average_precision(labels[rest], v[rest]) for v in (s, s2))
        report["consensus"] = {"views": len(top), "average_precision": ap_new,
                               "chosen_average_precision": ap_old}
        if ap_new >= ap_old:
            ex, s = other, s2
            info["views"] = [str(read_pos[picked[j]][0]) for j in top]
    # a second candidate is kept beside it where the best of the two ranks the selection
    # photos better: a brand shown two ways (a badge and the mark inside it, a symbol and its
    # wordmark) is searched both ways; its consensus is not redrawn
    exs = [ex]
    if (pair := partner(labels[rest], s[rest], [t[2][rest] if j != i else None
                                                  for j, t in enumerate(tried)])) is not None:
        j, gain = pair
        exs.append(tried[j][1])
        s = np.maximum(s, tried[j][2])
        info["also"] = {"mined_from": str(read_pos[found[j].source][0]),
                        "box": list(found[j].box)}
        report["second"] = {"candidate": j, "gain": gain}

    def best(p: Any) -> float | None:
        got = [m.score for e in exs if (m := e.search(p)) is not None]
        return max(got) if got else None

    ap = average_precision(y, s[:at]) if y.any() else None  # None: no validation positive
    take, report["head_wins"] = replaces(y, s[:at], head)
    if not take:
        report.update(chosen="head", mark_val_average_precision=ap)
        return None, report
    # the threshold from every brand-less photo at hand: the calibration's, the other
    # negatives and the validation photos without the brand (the report keeps their scores)
    cal = [v for p in neg if (v := best(p)) is not None]
    free = [float(v) for v in s[at + len(sel):] if np.isfinite(v)]
    free += [v for p in others[CALIBRATION + len(sel_neg):] if (v := best(p)) is not None]
    free += [float(v) for v, yy in zip(s[:at], y, strict=True) if not yy and np.isfinite(v)]
    logo = BrandLogo(exs, tail_threshold(cal + free), {
        **info, "calibration_images": len(neg), "threshold_images": len(cal) + len(free),
        "val_average_precision": ap})
    report.update(chosen="mark", val_average_precision=ap, threshold=logo.threshold,
                  calibration_scores=[round(v, 3) for v in cal],
                  negative_scores=[round(v, 3) for v in free])
    return logo, report


def jobs_for(train_ex: list[Any], val_ex: list[Any], brands: list[str],
             head_scores: dict[str, list[float]], seed: int = 0) -> list[Job]:
    """One `Job` per brand from `detector.datasets.Example`s of the train and validation
    splits: NEGATIVES training photos without the brand, drawn with seed (in drawn order:
    the first CALIBRATION are a random draw too). head_scores: a brand's head's scores of
    val_ex, where it has one."""
    rng = np.random.default_rng([seed, 5])
    out = []
    for b in brands:
        others = [e.path for e in train_ex if b not in e.brands]
        pick = [int(i) for i in rng.permutation(len(others))[:NEGATIVES]]
        out.append(Job(b, [e.path for e in train_ex if b in e.brands], [others[i] for i in pick],
                       [e.path for e in val_ex], [b in e.brands for e in val_ex],
                       head_scores.get(b)))
    return out


def logos_from_photos(jobs: list[Job], workers: int = 1,
                      progress: Callable[..., Any] | None = None) -> dict[str, Any]:
    """{brand: (BrandLogo or None, report)} for jobs, `workers` brands at once (processes
    started afresh: the caller may hold TensorFlow's threads, which a fork would copy)."""
    import multiprocessing

    wrap = progress or (lambda it, **_: it)
    if workers <= 1 or len(jobs) <= 1:
        results = [mine(j) for j in wrap(jobs, desc="mine marks", unit="brand")]
    else:
        with ProcessPoolExecutor(min(workers, len(jobs)),
                                 mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(wrap(pool.map(mine, jobs), total=len(jobs), desc="mine marks",
                                unit="brand"))
    return {j.brand: r for j, r in zip(jobs, results, strict=True)}
