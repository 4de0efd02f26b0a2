"""Matching a brand's logo file against a photo: exemplar search, no per-brand training.

A logo in a photo is the logo's shape at some place, size and angle, in some colour (the
brand's, white, black, printed on a shirt), under the light of the surface it sits on. The
frozen ImageNet features this project embeds do not separate one flat mark from another
(docs/benchmarks.md, issue 22); the mark's own silhouette does. `Exemplar` slides the
silhouette over the photo at many sizes and angles and scores each placement by the
normalised cross-correlation of the photo with it, taken as an absolute value (a white mark
on a dark shirt and a black one on a white mug match alike) and with a floor on the
patch's contrast (a flat wall does not match everything). The best few placements of each
template are then also scored by how many of the silhouette's edges find an edge of the same
orientation in the photo, taken from whichever colour channel changes most (a LINE-2D-like
gradient-orientation match, tolerant of a few px of warp): a blue mark on an orange of the
same grey has no contrast in grey but its edges are there. The two measures, each in units of
its spread over the feed, add up to the placement's score.

A raw correlation means different things at different sizes: on the realistic benchmark's
feed a 16 px silhouette finds 0.54 somewhere in an average photo, a 171 px one 0.26.
`calibrate` runs the search over photos the brand is (mostly) absent from, the user's own
feed, and keeps, per size, the mean and spread of the best score a photo gives; a
placement's score is then its correlation in units of that spread above the mean (a
z-score), so sizes compare and one threshold serves them all. The best few placements of the
coarse search (distinct in place, or in size at one place: a mark built of smaller copies of
its own shape matches best at the inner copy) are refined at full resolution (size and angle
in finer steps), which separates a mark from a similar one. A large mark is matched on the
photo reduced until the mark is COARSE_CAP px (coarse) or FINE_CAP px (refinement): what a
correlation costs is the photo's area, and a mark of that size keeps its shape.

Each refined placement is then aligned: the silhouette is warped onto the photo by the
homography that maximises their correlation (OpenCV's ECC, from the placement the search
found, each corner allowed to move ALIGN_SHIFT of the mark), and the correlation and the
edge-orientation share are measured again through it. A mark printed in perspective, on a
curved surface or squashed by the camera matches its own shape only once warped; a chance
structure gains less from the warp than a mark does. The correlation measured there is the
colour one (`_colour_ncc`): the silhouette against the best mix of the patch's three colour
channels, not their grey, so a red mark on a green of nearly the same grey counts with its
full contrast; and it reads only inside the mark's outline (the convex hull of its ink), so
the rim of a badge or the clutter beside a mark does not count against it, and another mark
of the same outline (a disc, a rounded square) gains little from sharing it. The aligned
edge-orientation share, likewise, counts the mark's edges inside that outline, not on it;
it is read on the photo sampled in the mark's frame (so an edge in perspective meets the
mark's edge at the mark's orientation) and corrected for chance (`_orientation_kappa`): in
grass, a grid of lights or a starfield every orientation is met everywhere, so the share met
at the perpendicular orientation is taken off. The colour and that correction are taken only
at the few aligned placements: the search before it stays grey, which is a third of the
cost.

The search gives the mark's box with its score: where a detection is, at the mark's size
(after alignment, the box of the warped silhouette's ink).

`BrandLogo` is what a bundle keeps for a brand matched this way (`brands add --logo`): its
logo files' silhouettes, their calibration and the brand's threshold on the z-score, which is
the feed's own `THRESHOLD_QUANTILE` (no label is needed). `BrandLogo.find` is what the
worker, `classify`, `serve` and the onboarding backfill run on a decoded image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np
from PIL import Image

# Stored in every bundle that matches logo files, checked on load: change it whenever a
# constant below or the score changes, since stored scores and thresholds depend on them.
METHOD = "silhouette-ncc-orient-aligned-colour-inside-kappa/10"
THRESHOLD_QUANTILE = 0.99  # of the feed's scores: about 1 feed image in 100 is called present

WORK_SIDE = 400  # the coarse search runs on the photo reduced to this long side
MIN_MARK = 16  # smallest mark searched for, px of the coarse image (4 % of its long side)
MAX_MARK = 0.5  # largest, as a share of the coarse image's long side
SIZE_STEP = 1.2
ANGLES = (-30.0, -15.0, 0.0, 15.0, 30.0)
FINE_SCALES = (0.88, 0.94, 1.0, 1.06, 1.13)
FINE_ANGLES = (-8.0, -4.0, 0.0, 4.0, 8.0)
FINE_SIDE = 800  # the refinement runs on the photo reduced to at most this long side
# Larger marks are matched on the photo reduced further, so that the mark is at most this many
# px: a correlation costs about the same at every template size (OpenCV correlates through
# the DFT), so the photo's area is what costs, and a mark this size keeps its shape.
COARSE_CAP = 32  # px of the mark in the coarse search
FINE_CAP = 96  # px of the mark in the refinement
PAD = 0.15  # ring of surround around the silhouette, as a share of its long side
NEAR_INK = 0.0625  # the ring a solid mark's aligned correlation reads (HOLLOW), share of its side
HOLLOW = 0.05  # share of the ink's convex hull not ink, below which a mark reads NEAR_INK
MIN_INNER_EDGES = 12  # of the EDGE_POINTS inside the outline, for the aligned orientation share
CONTRAST_FLOOR = 0.03  # patch standard deviation (0..1 grey) below which a patch is flat
CANDIDATES = 5
SIZES_APART = 1.4  # candidates at one place are distinct where their sizes differ this much
PLACES = 8  # best local maxima of each template's correlation also scored by edge orientation
ORIENT_BINS = 8  # edge orientations, over 180 degrees (either polarity alike)
ORIENT_SPREAD = 3  # px: an edge of the photo counts within this neighbourhood of the mark's
EDGE_FLOOR = 0.24  # Sobel magnitude (0..1 colour) below which a photo pixel has no edge
EDGE_POINTS = 96  # of the silhouette's edges, sampled for the orientation score
ORIENT_WEIGHT = 3.0  # of the orientation share against the correlation, both in spread units
# (chosen on the tuning seeds' training side, docs/detector.md)
EXPLAINED_WEIGHT = 1.0  # of the share of the photo's edges the mark explains, added to the z
MIN_EDGES = 20  # that share is out of at least this many edges of the photo
ALIGN_SIDE = 64  # px of the mark when a refined placement is aligned by a homography (ECC)
ALIGN_ITERATIONS = 50
ALIGN_SHIFT = 0.25  # largest move of a template corner in the alignment, share of its side
FINE_TEMPLATES_KEPT = 1024  # refinement templates kept per logo file (up to ~30 MB)
# Feed images a size needs before it is scored at all: a spread taken over two photos made one
# small feed photo's large-size match 12 "standard deviations" out (an uncalibrated size has
# no scale to compare with the others, so a calibrated exemplar does not search it).
MIN_CALIBRATION = 10


def _cv2() -> Any:
    import cv2  # type: ignore[import-not-found]

    return cv2


def silhouette(logo: Image.Image) -> np.ndarray:
    """The logo's coverage (float32 0..1) cropped to its ink, from its alpha channel."""
    a = np.asarray(logo.convert("RGBA"), np.float32)[..., 3] / 255.0
    ys, xs = np.nonzero(a > 0.1)
    if len(ys) == 0:
        raise ValueError("the logo has no visible pixels")
    return a[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


@dataclass(frozen=True)
class Template:
    size: float  # the mark's long side, px of the image it is matched on
    angle: float
    values: np.ndarray  # zero-mean float32
    norm: float
    ink: tuple[int, int, int, int]  # the mark's box inside values
    edges: tuple[np.ndarray, np.ndarray, np.ndarray]  # the silhouette's edge points: y, x, bin
    from_mask: np.ndarray  # 3x3: the silhouette's (mask's) pixels to values' pixels

    @cached_property
    def level(self) -> np.ndarray:
        """The silhouette's coverage 0..1 in values' frame (values rescaled)."""
        span = max(float(self.values.max() - self.values.min()), 1e-6)
        return (self.values - self.values.min()) / span

    @cached_property
    def own(self) -> np.ndarray:
        """`orientations` of the silhouette itself, for `_explained`; kept with the template,
        which the alignment reuses across photos."""
        return orientations(np.repeat(self.level[..., None], 3, -1))

    @cached_property
    def inner(self) -> np.ndarray:
        """Which of `edges` lie inside the outline `read` holds (2 px in from its edge): the
        alignment's edge-orientation share is taken over these where there are MIN_INNER_EDGES
        (another mark of the same outline meets the outline's edges as well as this one)."""
        cv2 = _cv2()
        m = cv2.erode(self.read.astype(np.uint8), np.ones((5, 5), np.uint8)).astype(bool)
        return m[self.edges[0], self.edges[1]]

    @cached_property
    def read(self) -> np.ndarray:
        """The pixels `_colour_ncc` reads: those inside the mark's outline (the convex hull of
        its ink: the ink and what lies between its parts). What tells a mark from another of
        the same outline (a disc, a rounded square: the commonest badge and app-icon shapes)
        lies there; the ring outside holds a badge's rim, a sticker's edge or the clutter
        beside a mark, and says nothing about it. A mark with almost nothing inside (a solid
        convex shape: under HOLLOW of its hull not ink) reads its ink and NEAR_INK of its size
        around it instead."""
        cv2 = _cv2()
        ink = (self.level > 0.5).astype(np.uint8)
        ys, xs = np.nonzero(ink)
        hull = np.zeros_like(ink)
        if len(ys):
            cv2.fillConvexPoly(hull, cv2.convexHull(np.stack([xs, ys], 1).astype(np.int32)), 1)
        inside = hull.astype(bool)
        if inside.any() and 1.0 - float(ink[inside].mean()) >= HOLLOW:
            return inside
        r = max(1, round(NEAR_INK * self.size))
        return cv2.dilate(ink, np.ones((2 * r + 1, 2 * r + 1), np.uint8)).astype(bool)


def template(mask: np.ndarray, size: float, angle: float) -> Template:
    """The silhouette with its ring of surround, rotated by angle, its long side size px."""
    cv2 = _cv2()
    k = size / max(mask.shape)
    small = cv2.resize(mask, (max(2, round(mask.shape[1] * k)), max(2, round(mask.shape[0] * k))),
                       interpolation=cv2.INTER_AREA)
    p = int(size * PAD) + 2
    big = np.pad(small, p)
    h, w = big.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    cos, sin = abs(m[0, 0]), abs(m[0, 1])
    nw, nh = int(h * sin + w * cos), int(h * cos + w * sin)
    m[0, 2] += nw / 2 - w / 2
    m[1, 2] += nh / 2 - h / 2
    t = cv2.warpAffine(big, m, (nw, nh), flags=cv2.INTER_LINEAR)
    sx, sy = small.shape[1] / mask.shape[1], small.shape[0] / mask.shape[0]
    scaled = np.array([[sx, 0, 0.5 * sx - 0.5 + p], [0, sy, 0.5 * sy - 0.5 + p], [0, 0, 1]])
    from_mask = np.vstack([m, [0, 0, 1]]) @ scaled
    ys, xs = np.nonzero(t > 0.3)
    if len(ys) == 0:
        ys, xs = np.nonzero(t >= t.max())
    ink = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
    t = (t - t.mean()).astype(np.float32)
    return Template(size, angle, t, float(np.sqrt((t * t).sum())) or 1.0, ink, _edges(t),
                    from_mask)


def _orientation_bins(gx: np.ndarray, gy: np.ndarray) -> np.ndarray:
    theta = np.mod(np.arctan2(gy, gx), np.pi)
    return (np.floor(theta / np.pi * ORIENT_BINS).astype(np.int64)) % ORIENT_BINS


def _edges(values: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Up to EDGE_POINTS of the template's edge pixels (a fixed sample) and their bins."""
    cv2 = _cv2()
    gx = cv2.Sobel(values, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(values, cv2.CV_32F, 0, 1, ksize=3)
    m = np.sqrt(gx * gx + gy * gy)
    ys, xs = np.nonzero(m > 0.3 * m.max()) if m.max() > 0 else (np.zeros(0, int),) * 2
    if len(ys) > EDGE_POINTS:
        keep = np.sort(np.random.default_rng(0).choice(len(ys), EDGE_POINTS, replace=False))
        ys, xs = ys[keep], xs[keep]
    return ys, xs, _orientation_bins(gx[ys, xs], gy[ys, xs])


def orientations(rgb: np.ndarray) -> np.ndarray:
    """ORIENT_BINS x H x W for rgb (float32 0..1, H x W x 3): at each pixel, how well an edge
    of orientation b is met within ORIENT_SPREAD px (1 the same bin, 0.85 the next one, else
    0), the edge taken from the colour channel whose gradient is strongest there."""
    cv2 = _cv2()
    gx = cv2.Sobel(rgb, cv2.CV_32F, 1, 0, ksize=3)  # per channel
    gy = cv2.Sobel(rgb, cv2.CV_32F, 0, 1, ksize=3)
    mag = gx * gx + gy * gy
    ch = mag.argmax(-1)[..., None]
    gx = np.take_along_axis(gx, ch, -1)[..., 0]
    gy = np.take_along_axis(gy, ch, -1)[..., 0]
    strong = np.take_along_axis(mag, ch, -1)[..., 0] > EDGE_FLOOR ** 2
    q = np.full(strong.shape, -1, np.int8)
    q[strong] = _orientation_bins(gx[strong], gy[strong])
    k = np.ones((ORIENT_SPREAD, ORIENT_SPREAD), np.uint8)
    spread = np.stack([cv2.dilate((q == b).view(np.uint8), k)
                       for b in range(ORIENT_BINS)]).astype(np.float32)
    near = float(np.cos(np.pi / ORIENT_BINS) ** 2)
    out = spread.copy()  # the bin itself, and near times each neighbouring bin (circular)
    out[1:] += near * spread[:-1]
    out[0] += near * spread[-1]
    out[:-1] += near * spread[1:]
    out[-1] += near * spread[0]
    return np.minimum(out, 1.0)


def colour_of(img: Image.Image, side: int) -> np.ndarray:
    """img's RGB (float32 0..1) at grey_of's size for the same side."""
    k = min(1.0, side / max(img.size))
    c = img.convert("RGB")
    if k < 1.0:
        c = c.resize((max(1, round(c.width * k)), max(1, round(c.height * k))),
                     Image.Resampling.BOX)
    return np.asarray(c, np.float32) / 255.0


def orientation_at(rmap: np.ndarray, t: Template, xs: np.ndarray, ys: np.ndarray,
                   ) -> np.ndarray:
    """The share of t's edge points met by an edge of their orientation (`orientations`)
    with t's top-left at each (x, y), the best of the 3 x 3 placements around it."""
    ey, ex_, eb = t.edges
    if len(ey) == 0:
        return np.zeros(len(xs), np.float32)
    hmax = rmap.shape[1] - t.values.shape[0]
    wmax = rmap.shape[2] - t.values.shape[1]
    yy = np.minimum(np.maximum(ys[None, :] + _NEAR[:, :1], 0), hmax)  # 9 x places
    xx = np.minimum(np.maximum(xs[None, :] + _NEAR[:, 1:], 0), wmax)
    met = rmap[eb, yy[..., None] + ey, xx[..., None] + ex_]  # 9 x places x points
    return met.mean(-1).max(0)


_NEAR = np.array([(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])


def places(c: np.ndarray, n: int = PLACES) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) of the n highest local maxima (5 x 5) of a correlation map."""
    cv2 = _cv2()
    peak = np.flatnonzero(c >= cv2.dilate(c, np.ones((5, 5), np.uint8)))
    top = peak[np.argsort(-c.flat[peak], kind="stable")[:n]]
    y, x = np.divmod(top, c.shape[1])
    return x, y


def correlation(grey: np.ndarray, t: Template) -> np.ndarray:
    """|normalised cross-correlation| of grey (float32 0..1, H x W) with t at every
    placement, the patch's standard deviation floored at CONTRAST_FLOOR. A mark of either
    polarity matches alike; one whose brightness equals its surround's is not seen."""
    cv2 = _cv2()
    th, tw = t.values.shape
    n = th * tw
    box = {"normalize": False, "anchor": (0, 0), "borderType": cv2.BORDER_CONSTANT}
    cc = cv2.matchTemplate(grey, t.values, cv2.TM_CCOEFF)
    s1 = cv2.boxFilter(grey, -1, (tw, th), **box)[:cc.shape[0], :cc.shape[1]]
    s2 = cv2.boxFilter(grey * grey, -1, (tw, th), **box)[:cc.shape[0], :cc.shape[1]]
    var = np.maximum(s2 / n - (s1 / n) ** 2, CONTRAST_FLOOR ** 2)
    return np.abs(cc) / (t.norm * np.sqrt(var * n))


def grey_of(img: Image.Image, side: int) -> tuple[np.ndarray, float]:
    """img's grey values (float32 0..1) at long side <= side, and the factor applied. Grey,
    not colour: a colour-invariant version (R, G and B together) measured +0.006 AP on the
    realistic benchmark at 2.6x the time (docs/detector.md)."""
    k = min(1.0, side / max(img.size))
    g = img.convert("L")
    if k < 1.0:
        g = g.resize((max(1, round(g.width * k)), max(1, round(g.height * k))),
                     Image.Resampling.BOX)
    return np.asarray(g, np.float32) / 255.0, k


class Photo:
    """One decoded image as the search reads it, shared by every logo searched for in it (a
    brand's several files, a bundle's several brands): its grey and colour at the coarse and
    fine sides and the coarse search's reduced images with their edge orientations, each
    computed once. One thread's: the worker makes one per image in the fetch thread."""

    def __init__(self, img: Image.Image) -> None:
        self.img = img
        self._grey: dict[int, tuple[np.ndarray, float]] = {}
        self._colour: dict[int, np.ndarray] = {}
        self._reduced: dict[float, tuple[np.ndarray, np.ndarray]] = {}

    def grey(self, side: int) -> tuple[np.ndarray, float]:
        if side not in self._grey:
            self._grey[side] = grey_of(self.img, side)
        return self._grey[side]

    def colour(self, side: int) -> np.ndarray:
        if side not in self._colour:
            self._colour[side] = colour_of(self.img, side)
        return self._colour[side]

    def reduced(self, f: float) -> tuple[np.ndarray, np.ndarray]:
        """The coarse image's grey reduced by f (1: as it is) and its `orientations`."""
        if f not in self._reduced:
            grey, rgb = self.grey(WORK_SIDE)[0], self.colour(WORK_SIDE)
            if f < 1.0:
                cv2 = _cv2()
                wh = (max(1, round(grey.shape[1] * f)), max(1, round(grey.shape[0] * f)))
                grey = cv2.resize(grey, wh, interpolation=cv2.INTER_AREA)
                rgb = cv2.resize(rgb, wh, interpolation=cv2.INTER_AREA)
            self._reduced[f] = (grey, orientations(rgb))
        return self._reduced[f]


@dataclass
class Match:
    score: float  # z-score against the calibration photos (raw sum if uncalibrated)
    correlation: float  # |NCC| of the placement (in colour once aligned: `_colour_ncc`)
    box: tuple[int, int, int, int]  # the mark, in the input image's pixels
    size: float
    angle: float
    orientation: float = 0.0  # share of its edges met in the photo (aligned: `_orientation_kappa`)
    explained: float = 0.0  # share of the photo's edges there that the mark's edges explain
    # 3x3 homography, the silhouette's (mask's) pixels to the photo's at FINE_SIDE (`Photo.colour`),
    # where the placement was aligned (`detector.mining` reads the mark's views through it)
    frame: np.ndarray | None = None


@dataclass
class Exemplar:
    """One brand's logo, ready to be searched for; `calibrate` before scores compare."""

    mask: np.ndarray
    # size index -> (mean, sd) of the feed's best placement score, and the spreads of its two
    # measures (|NCC|, edge orientation) that weigh them in that score
    null: dict[int, tuple[float, float, float, float]] = field(default_factory=dict)
    _seen: list[list[np.ndarray | None]] = field(default_factory=list, repr=False)
    _coarse: list[list[Template]] | None = field(default=None, repr=False)
    _cap: list[Template] | None = field(default=None, repr=False)
    _fine: dict[tuple[float, float], Template] = field(default_factory=dict, repr=False)

    @property
    def sizes(self) -> list[float]:
        out, s = [], float(MIN_MARK)
        while s <= MAX_MARK * WORK_SIDE:
            out.append(s)
            s *= SIZE_STEP
        return out

    def coarse_templates(self) -> list[list[Template]]:
        if self._coarse is None:
            self._coarse = [[template(self.mask, s, a) for a in ANGLES] for s in self.sizes]
        return self._coarse

    def _capped(self) -> list[Template]:
        if self._cap is None:
            self._cap = [template(self.mask, COARSE_CAP, a) for a in ANGLES]
        return self._cap

    def _coarse_search(self, photo: Photo) -> tuple[list[np.ndarray | None], list[tuple]]:
        """Per size, the (|NCC|, orientation) of each template's PLACES best places (None
        where no template fits), and the candidates (ncc, orientation, size index, template,
        x, y); a size above COARSE_CAP is matched on the images reduced by COARSE_CAP / size,
        its place given in grey's pixels."""
        grey = photo.grey(WORK_SIDE)[0]
        per_size: list[np.ndarray | None] = []
        cands = []
        for si, row in enumerate(self.coarse_templates()):
            f = min(1.0, COARSE_CAP / self.sizes[si])
            g, rmap = photo.reduced(f)
            pairs = []
            for t, m in zip(row, row if f == 1.0 else self._capped(), strict=True):
                if t.values.shape[0] >= grey.shape[0] or t.values.shape[1] >= grey.shape[1]:
                    continue
                if m.values.shape[0] >= g.shape[0] or m.values.shape[1] >= g.shape[1]:
                    continue
                c = correlation(g, m)
                xs, ys = places(c)
                ori = orientation_at(rmap, m, xs, ys)
                for v, o, x, y in zip(c[ys, xs].tolist(), ori.tolist(), xs.tolist(),
                                      ys.tolist(), strict=True):
                    pairs.append((v, o))
                    if f < 1.0:  # the capped template's centre, back in grey's pixels
                        x = round((x + m.values.shape[1] / 2) / f - t.values.shape[1] / 2)
                        y = round((y + m.values.shape[0] / 2) / f - t.values.shape[0] / 2)
                        x = min(max(x, 0), grey.shape[1] - t.values.shape[1])
                        y = min(max(y, 0), grey.shape[0] - t.values.shape[0])
                    cands.append((v, o, si, t, x, y))
            per_size.append(np.array(pairs, np.float32) if pairs else None)
        return per_size, cands

    def _value(self, si: int, ncc: float | np.ndarray, ori: float | np.ndarray) -> Any:
        """The two measures in units of their feed spreads, added (plain sum uncalibrated)."""
        if si not in self.null:
            return ncc + ori
        _, _, sd_n, sd_o = self.null[si]
        return ncc / sd_n + ORIENT_WEIGHT * ori / sd_o

    def _z(self, si: int, ncc: float, ori: float) -> float:
        v = float(self._value(si, ncc, ori))
        if si not in self.null:
            return v
        mean, sd, _, _ = self.null[si]
        return (v - mean) / sd

    def calibrate(self, images: list[Image.Image | Photo]) -> None:
        """Per size, the spreads of the two measures' best over images (the feed), then the
        mean and spread of the best placement's score."""
        self._seen = []
        self.calibrate_more(images)

    def calibrate_more(self, images: list[Image.Image | Photo]) -> None:
        """`calibrate` over images added to those already seen (a feed read in pieces)."""
        for img in images:
            self._seen.append(self._coarse_search(img if isinstance(img, Photo) else
                                                  Photo(img))[0])
        self.null = {}
        for si in range(len(self.sizes)):
            rows = [row[si] for row in self._seen if row[si] is not None]
            if len(rows) < MIN_CALIBRATION:
                continue
            sd_n = max(float(np.std([r[:, 0].max() for r in rows])), 1e-3)
            sd_o = max(float(np.std([r[:, 1].max() for r in rows])), 1e-3)
            best = [float((r[:, 0] / sd_n + ORIENT_WEIGHT * r[:, 1] / sd_o).max()) for r in rows]
            self.null[si] = (float(np.mean(best)), max(float(np.std(best)), 1e-3), sd_n, sd_o)

    @property
    def feed_scores(self) -> list[float]:
        """Each calibration image's score (its best z over sizes), for a threshold."""
        return [max(max(self._z(si, float(n), float(o)) for n, o in r)
                    for si, r in enumerate(row) if r is not None and si in self.null)
                for row in self._seen
                if any(r is not None and si in self.null for si, r in enumerate(row))]

    def search(self, img: Image.Image | Photo) -> Match | None:
        """The best placement of the logo in img, refined; None when img is too small."""
        photo = img if isinstance(img, Photo) else Photo(img)
        k = photo.grey(WORK_SIDE)[1]
        _, cands = self._coarse_search(photo)
        if self.null:  # calibrated: only the sizes whose scores mean the same
            cands = [c for c in cands if c[2] in self.null]
        if not cands:
            return None
        picked = self._pick(cands)
        fine, kf = photo.grey(FINE_SIDE)
        fine_rgb = photo.colour(FINE_SIDE)
        best: Match | None = None
        for v, o, si, t, x, y in picked:
            m = self._refine(fine, fine_rgb, kf / k, si, t, x, y)
            if m is None:
                m = Match(v, v, tuple(round(c * kf / k) for c in _box(x, y, t)), t.size,
                          t.angle, o)
            else:
                m = self._align(fine, fine_rgb, m)
            m.score = self._z(si, m.correlation, m.orientation) + EXPLAINED_WEIGHT * m.explained
            m.box = tuple(round(c / kf) for c in m.box)  # type: ignore[assignment]
            if best is None or m.score > best.score:
                best = m
        return best

    def _pick(self, cands: list[tuple]) -> list[tuple]:
        """The CANDIDATES best coarse candidates (by z) that are distinct: a candidate is
        passed over where a better one has its centre within half a mark of it and a size
        within SIZES_APART of its own. A mark made of smaller copies of its own shape (nested
        triangles, rings) matches best at the inner copy; the same place at the outer size
        is its own candidate, since the refinement only moves the size by FINE_SCALES."""
        cands = sorted(cands, key=lambda c: -self._z(c[2], c[0], c[1]))
        picked: list[tuple] = []
        for c in cands:
            th, tw = c[3].values.shape
            cx, cy = c[4] + tw / 2, c[5] + th / 2
            if all(abs(cx - (o[4] + o[3].values.shape[1] / 2)) > tw / 2 or
                   abs(cy - (o[5] + o[3].values.shape[0] / 2)) > th / 2 or
                   max(c[3].size / o[3].size, o[3].size / c[3].size) >= SIZES_APART
                   for o in picked):
                picked.append(c)
            if len(picked) == CANDIDATES:
                break
        return picked

    def _align(self, fine: np.ndarray, fine_rgb: np.ndarray, m: Match) -> Match:
        """m with its box and measures taken again (`_measured_at`) after aligning the
        silhouette to fine by a homography (OpenCV's ECC, which maximises the grey correlation
        itself): a mark printed in perspective or on a curved surface matches its own shape
        only once warped. Where the alignment fails or moves a corner more than ALIGN_SHIFT
        of the mark, the measures are taken at the placement the search found, the box as it
        is."""
        cv2 = _cv2()
        t = self._fine_template(ALIGN_SIDE, round(m.angle, 1))
        th, tw = t.values.shape
        q = ALIGN_SIDE / m.size  # fine px -> alignment px
        cx, cy = (m.box[0] + m.box[2]) / 2, (m.box[1] + m.box[3]) / 2
        half = 0.75 * max(th, tw) / q
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(fine.shape[1], cx + half)), int(min(fine.shape[0], cy + half))
        wh = (round((x1 - x0) * q), round((y1 - y0) * q))
        if wh[0] < tw or wh[1] < th:
            return m
        how = cv2.INTER_AREA if q < 1 else cv2.INTER_LINEAR
        g = cv2.resize(np.ascontiguousarray(fine[y0:y1, x0:x1]), wh, interpolation=how)
        rgb = cv2.resize(np.ascontiguousarray(fine_rgb[y0:y1, x0:x1]), wh, interpolation=how)
        ix, iy = (t.ink[0] + t.ink[2]) / 2, (t.ink[1] + t.ink[3]) / 2
        w0 = np.array([[1, 0, (cx - x0) * q - ix], [0, 1, (cy - y0) * q - iy], [0, 0, 1]],
                      np.float32)
        to_fine = np.array([[1 / q, 0, x0], [0, 1 / q, y0], [0, 0, 1]])

        def measured(m: Match, w: np.ndarray) -> Match:
            out = _measured_at(m, rgb, w, t)
            out.frame = to_fine @ w @ t.from_mask
            return out

        sign = 1.0 if _warped_ncc(g, w0, t) >= 0 else -1.0  # ECC wants the mark's polarity
        try:
            _, w = cv2.findTransformECC(
                (sign * t.values).astype(np.float32), g, w0.copy(), cv2.MOTION_HOMOGRAPHY,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, ALIGN_ITERATIONS, 1e-4),
                None, 3)
        except cv2.error:  # did not converge: the placement stays as the search found it
            return measured(m, w0)
        corners = np.array([[0, 0], [tw, 0], [tw, th], [0, th]], np.float32)[:, None]
        moved = cv2.perspectiveTransform(corners, w) - cv2.perspectiveTransform(corners, w0)
        if not np.isfinite(moved).all() or np.abs(moved).max() > ALIGN_SHIFT * max(th, tw):
            return measured(m, w0)
        ink = np.array([[t.ink[0], t.ink[1]], [t.ink[2], t.ink[1]], [t.ink[2], t.ink[3]],
                        [t.ink[0], t.ink[3]]], np.float32)[:, None]
        p = cv2.perspectiveTransform(ink, w)[:, 0] / q + (x0, y0)
        box = (round(float(p[:, 0].min())), round(float(p[:, 1].min())),
               round(float(p[:, 0].max())), round(float(p[:, 1].max())))
        return measured(Match(m.score, m.correlation, box, m.size, m.angle, m.orientation), w)

    def _fine_template(self, size: float, angle: float) -> Template:
        """template(mask, size, angle), kept: photos of one size ask for the same ones."""
        f = self._fine.get((size, angle))  # the worker's fetch threads share it
        if f is None:
            if len(self._fine) >= FINE_TEMPLATES_KEPT:
                self._fine.clear()
            f = self._fine[(size, angle)] = template(self.mask, size, angle)
        return f

    def _refine(self, fine: np.ndarray, fine_rgb: np.ndarray, r: float, si: int, t: Template,
                x: int, y: int) -> Match | None:
        """The best size and angle near t's at (x, y), on fine (r times the coarse image's
        scale), the crop reduced so that the mark is at most FINE_CAP px; its box in fine's
        pixels. The size is searched first, then the angle at that size (9 templates, not the
        25 of every pair: the same scores on the realistic benchmark, docs/detector.md)."""
        cv2 = _cv2()
        th, tw = t.values.shape
        cx, cy = (x + tw / 2) * r, (y + th / 2) * r
        half = 0.75 * max(th, tw) * r
        x0, y0 = int(max(0, cx - half)), int(max(0, cy - half))
        x1, y1 = int(min(fine.shape[1], cx + half)), int(min(fine.shape[0], cy + half))
        crop = np.ascontiguousarray(fine[y0:y1, x0:x1])
        crop_rgb = np.ascontiguousarray(fine_rgb[y0:y1, x0:x1])
        g = min(1.0, FINE_CAP / (t.size * r))
        if g < 1.0:
            wh = (max(1, round(crop.shape[1] * g)), max(1, round(crop.shape[0] * g)))
            crop = cv2.resize(crop, wh, interpolation=cv2.INTER_AREA)
            crop_rgb = cv2.resize(crop_rgb, wh, interpolation=cv2.INTER_AREA)
        rmap = orientations(crop_rgb)
        best: Match | None = None
        best_value = -np.inf
        best_scale = 1.0

        def one(ds: float, da: float) -> None:
            nonlocal best, best_value, best_scale
            f = self._fine_template(t.size * r * g * ds, t.angle + da)
            if f.values.shape[0] >= crop.shape[0] or f.values.shape[1] >= crop.shape[1]:
                return
            c = correlation(crop, f)
            xs, ys = places(c)
            ori = orientation_at(rmap, f, xs, ys)
            vals = self._value(si, c[ys, xs], ori)
            j = int(np.argmax(vals))
            if vals[j] > best_value:
                xx, yy = int(xs[j]), int(ys[j])
                bx0, by0, bx1, by1 = _box(xx, yy, f)
                best = Match(float(c[yy, xx]), float(c[yy, xx]),
                             (x0 + round(bx0 / g), y0 + round(by0 / g),
                              x0 + round(bx1 / g), y0 + round(by1 / g)),
                             f.size / g, f.angle, float(ori[j]))
                best_value, best_scale = float(vals[j]), ds

        for ds in FINE_SCALES:  # the size at the coarse angle, then the angle at that size
            one(ds, 0.0)
        for da in FINE_ANGLES:
            if da:
                one(best_scale, da)
        return best


def _warped_ncc(g: np.ndarray, w: np.ndarray, t: Template) -> float:
    """The normalised cross-correlation of t with g sampled through the homography w (t's
    pixels to g's), the patch's contrast floored as in `correlation`."""
    cv2 = _cv2()
    th, tw = t.values.shape
    patch = cv2.warpPerspective(g, w, (tw, th), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)
    patch = patch - patch.mean()
    sd = max(float(np.sqrt((patch * patch).mean())), CONTRAST_FLOOR)
    return float((patch * t.values).sum() / (t.norm * sd * np.sqrt(patch.size)))


def _through(rgb: np.ndarray, w: np.ndarray, t: Template) -> np.ndarray:
    """rgb (H x W x 3) sampled through the homography w (t's pixels to rgb's) in t's frame."""
    cv2 = _cv2()
    th, tw = t.values.shape
    return cv2.warpPerspective(np.ascontiguousarray(rgb), w, (tw, th),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP)


def _colour_ncc(patch: np.ndarray, t: Template) -> float:
    """The multiple correlation of t with patch (`_through`) over t.read (inside the mark's
    outline): the |NCC| of t with the patch's best linear mix of its colour channels (least
    squares, each channel's variance raised by CONTRAST_FLOOR^2 / 3 as a ridge, so a flat
    patch does not match). At least the grey |NCC| over the same pixels, up to the floor; a
    mark whose colour differs from its surround's but whose grey does not is seen with its
    contrast."""
    x = patch[t.read].astype(np.float64)
    x -= x.mean(0)
    v = t.values[t.read].astype(np.float64)
    v -= v.mean()
    n = len(v)
    c = x.T @ v / n
    cov = x.T @ x / n + np.eye(3) * CONTRAST_FLOOR ** 2 / 3
    r2 = float(c @ np.linalg.solve(cov, c)) / max(float(v @ v) / n, 1e-12)
    return float(np.sqrt(min(max(r2, 0.0), 1.0)))


def _explained(patch: np.ndarray, t: Template) -> float:
    """The share of the photo's edges in t's frame (patch, `_through`) that an edge of the
    silhouette explains (`orientations`' match: the same orientation within ORIENT_SPREAD
    px), out of at least MIN_EDGES. A chance structure in clutter meets the mark's edges but
    brings many more of its own; a mark on its surface brings few."""
    cv2 = _cv2()
    gx = cv2.Sobel(patch, cv2.CV_32F, 1, 0, ksize=3)
    gy = cv2.Sobel(patch, cv2.CV_32F, 0, 1, ksize=3)
    mag = gx * gx + gy * gy
    ch = mag.argmax(-1)[..., None]
    strong = np.take_along_axis(mag, ch, -1)[..., 0] > EDGE_FLOOR ** 2
    strong[:2], strong[-2:], strong[:, :2], strong[:, -2:] = False, False, False, False
    ys, xs = np.nonzero(strong)  # (the frame's border is the warp's, not the photo's)
    if len(ys) == 0:
        return 0.0
    b = _orientation_bins(np.take_along_axis(gx, ch, -1)[ys, xs, 0],
                          np.take_along_axis(gy, ch, -1)[ys, xs, 0])
    return float(t.own[b, ys, xs].sum()) / max(len(ys), MIN_EDGES)


def _orientation_kappa(patch: np.ndarray, t: Template) -> float | None:
    """The edge-orientation share of t in patch (`_through`: the photo in t's frame, so a
    mark in perspective has its edges at t's orientations), corrected for chance: the share
    of t's edges met at their orientation less the share met at the perpendicular one, over
    one less that (floored at 0.1), like Cohen's kappa. In a dense texture (grass, a grid of
    lights, a starfield) every orientation is met everywhere, so the raw share is near 1
    wherever the mark is put; the perpendicular share is as high there, and near 0 along a
    mark's own edges. Over t's edges inside its outline where there are MIN_INNER_EDGES
    (`Template.inner`); None where t has no edge."""
    ey, ex_, eb = t.edges
    if t.inner.sum() >= MIN_INNER_EDGES:
        ey, ex_, eb = ey[t.inner], ex_[t.inner], eb[t.inner]
    if len(ey) == 0:
        return None
    rmap = orientations(patch)
    met = float(rmap[eb, ey, ex_].mean())
    perp = float(rmap[(eb + ORIENT_BINS // 2) % ORIENT_BINS, ey, ex_].mean())
    return (met - perp) / max(1.0 - perp, 0.1)


def _measured_at(m: Match, rgb: np.ndarray, w: np.ndarray, t: Template) -> Match:
    """m measured again at the placement w (t's pixels to rgb's), on the photo sampled in t's
    frame: its correlation the colour one (`_colour_ncc`), its edge-orientation share the
    chance-corrected one (`_orientation_kappa`) and the share of the photo's edges it
    explains (`_explained`)."""
    patch = _through(rgb, w, t)
    ori = _orientation_kappa(patch, t)
    return Match(m.score, _colour_ncc(patch, t), m.box, m.size, m.angle,
                 m.orientation if ori is None else ori, _explained(patch, t))


def _box(x: int, y: int, t: Template) -> tuple[int, int, int, int]:
    return (x + t.ink[0], y + t.ink[1], x + t.ink[2], y + t.ink[3])


def threshold_of(feed_scores: list[float]) -> float:
    """A brand's threshold on the z-score from its feed's refined scores (no label)."""
    return float(np.quantile(feed_scores, THRESHOLD_QUANTILE))


def detection_score(z: float, threshold: float) -> float:
    """A match's z-score in the detections' 0..1 score column: a logistic centred on the
    brand's threshold, so 0.5 is the threshold. It ranks like z; it is not a probability."""
    return float(1.0 / (1.0 + np.exp(-(z - threshold))))


@dataclass
class BrandLogo:
    """A brand matched from its logo file(s): one calibrated `Exemplar` per file and the
    brand's threshold on the z-score. An image's match is the best over the files."""

    exemplars: list[Exemplar]
    threshold: float
    info: dict[str, Any] = field(default_factory=dict)  # provenance: logo digests, feed size

    def find(self, img: Image.Image | Photo, full: tuple[int, int] | None = None,
             ) -> tuple[float, tuple[int, int, int, int] | None]:
        """(detection score, the mark's box) for img; the box in `full`'s pixels when given
        (the image's size before it was decoded smaller), else in img's."""
        photo = img if isinstance(img, Photo) else Photo(img)
        found = [m for m in (e.search(photo) for e in self.exemplars) if m is not None]
        if not found:
            return detection_score(float("-inf"), self.threshold), None
        best = max(found, key=lambda m: m.score)
        w, h = photo.img.size
        sx, sy = (1.0, 1.0) if full is None else (full[0] / w, full[1] / h)
        x0, y0, x1, y1 = best.box
        box = (round(x0 * sx), round(y0 * sy), round(x1 * sx), round(y1 * sy))
        return detection_score(best.score, self.threshold), box

    @classmethod
    def calibrated(cls, logos: list[Image.Image], feed: list[Image.Image],
                   progress: Any = None) -> tuple[BrandLogo, list[float]]:
        """Silhouettes of logos calibrated on feed (images the brand is mostly absent from),
        the threshold their `THRESHOLD_QUANTILE`; also the feed's z-scores. `progress` wraps
        an iterable (a progress bar) when given."""
        wrap = progress or (lambda it, **_: it)
        exemplars = [Exemplar(silhouette(logo)) for logo in logos]
        for img in wrap(feed, desc="calibrate", unit="img"):
            photo = Photo(img)
            for e in exemplars:
                e.calibrate_more([photo])
        zs = []
        for img in wrap(feed, desc="threshold", unit="img"):
            photo = Photo(img)
            found = [m.score for m in (e.search(photo) for e in exemplars) if m is not None]
            if found:
                zs.append(max(found))
        if len(zs) < 2:
            raise ValueError("too few feed images large enough to calibrate on")
        return cls(exemplars, threshold_of(zs)), zs

    def to_doc(self) -> tuple[dict[str, Any], list[np.ndarray]]:
        """(JSON-ready metadata, silhouettes) for a bundle."""
        return ({"threshold": self.threshold, "info": self.info,
                 "null": [[[si, *ms] for si, ms in sorted(e.null.items())]
                          for e in self.exemplars]},
                [e.mask.astype(np.float32) for e in self.exemplars])

    @classmethod
    def from_doc(cls, doc: dict[str, Any], masks: list[np.ndarray]) -> BrandLogo:
        exemplars = [Exemplar(np.asarray(m, np.float32),
                              {int(r[0]): (float(r[1]), float(r[2]), float(r[3]), float(r[4]))
                               for r in null})
                     for m, null in zip(masks, doc["null"], strict=True)]
        return cls(exemplars, float(doc["threshold"]), dict(doc.get("info", {})))


def decoded(data: bytes, max_pixels: int | None = None) -> tuple[Image.Image, tuple[int, int]]:
    """(image, full size) of an image's bytes, decoded as every logo search reads them (long
    side at least FINE_SIDE): a threshold set on these pixels holds where it is applied.
    Raises `detector.preprocess.ImageError`."""
    from detector.preprocess import DEFAULT_MAX_PIXELS, decode_for

    return decode_for(data, FINE_SIDE, max_pixels=max_pixels or DEFAULT_MAX_PIXELS)


def find_all(logos: dict[str, BrandLogo], data: bytes, max_pixels: int,
             ) -> dict[str, tuple[float, tuple[int, int, int, int] | None]]:
    """Each logo brand's (score, box in full-size pixels) for an image's bytes, `decoded`
    once; what the worker, `logowatch rescore`'s backfill and `logowatch evaluate` run, on
    the bytes as fetched. Raises `detector.preprocess.ImageError`."""
    if not logos:
        return {}
    img, full = decoded(data, max_pixels)
    photo = Photo(img)  # what every brand's search reads, computed once
    return {brand: logo.find(photo, full) for brand, logo in logos.items()}
