"""The model bundle: brand heads + thresholds + metadata in one directory, and its loader.

Layout of a bundle directory:

    bundle.json   metadata: backbone (name, weights provenance, digest, input size, taps,
                  precision),
                  preprocess version, brands, thresholds, tiles, training data fingerprint,
                  metrics, created_at, version
    heads.npz     mean, scale (embedding standardisation), kernel (D, B), bias (B,)
    logos.npz     only for brands matched from their logo files (`detector.exemplar`): each
                  logo's silhouette; their calibration and thresholds are in bundle.json
                  under "logos", and "brands" lists the heads' brands, then these

Heads are stored as plain arrays, not a Keras file: a head is a logistic regression on the
standardised embedding, so scoring is one matrix product that any process can run on
stored embeddings without TensorFlow. The version id is derived from the content, so the same
heads and thresholds always get the same id (results are upserted on it).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.preprocess import PREPROCESS_VERSION, TileSpec

log = logging.getLogger(__name__)
FORMAT = 1
META_FILE, HEADS_FILE, LOGOS_FILE = "bundle.json", "heads.npz", "logos.npz"


class BundleMismatchError(DetectorError):
    """The bundle was trained for another backbone, weights or preprocessing."""


@dataclass
class Heads:
    """Linear sigmoid heads over a standardised embedding, one column per brand."""

    brands: list[str]
    mean: np.ndarray
    scale: np.ndarray
    kernel: np.ndarray
    bias: np.ndarray

    def logits(self, embeddings: np.ndarray) -> np.ndarray:
        z = (np.asarray(embeddings, np.float32) - self.mean) / self.scale
        return (z @ self.kernel + self.bias).astype(np.float32)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 (N, D) → float32 (N, B) probabilities, every brand in one product."""
        if embeddings.ndim != 2 or embeddings.shape[1] != self.mean.shape[0]:
            raise DetectorError(
                f"embeddings must be (N, {self.mean.shape[0]}), got {embeddings.shape}"
            )
        with np.errstate(over="ignore"):
            return (1.0 / (1.0 + np.exp(-self.logits(embeddings)))).astype(np.float32)

    def with_brand(self, brand: str, kernel: np.ndarray, bias: float) -> Heads:
        """A copy with one brand's head added or replaced; the other heads stay as they are."""
        brands, k, b = list(self.brands), self.kernel.copy(), self.bias.copy()
        if brand in brands:
            i = brands.index(brand)
            k[:, i], b[i] = kernel, bias
        else:
            brands.append(brand)
            k = np.concatenate([k, kernel.reshape(-1, 1)], axis=1)
            b = np.append(b, bias)
        return Heads(brands, self.mean, self.scale, k.astype(np.float32), b.astype(np.float32))

    def without(self, brand: str) -> Heads:
        """A copy without brand's head (unchanged if it has none)."""
        if brand not in self.brands:
            return self
        i = self.brands.index(brand)
        keep = [j for j in range(len(self.brands)) if j != i]
        return Heads([b for b in self.brands if b != brand], self.mean, self.scale,
                     self.kernel[:, keep], self.bias[keep])

    def digest(self) -> str:
        h = hashlib.sha256(json.dumps(self.brands).encode())
        for a in (self.mean, self.scale, self.kernel, self.bias):
            h.update(np.ascontiguousarray(a, np.float32).tobytes())
        return h.hexdigest()


def _version(heads: Heads, thresholds: dict[str, float], backbone_id: str, tiles: Any,
             logos: str | None = None) -> str:
    parts = [heads.digest(), thresholds, backbone_id, tiles] + ([logos] if logos else [])
    doc = json.dumps(parts, sort_keys=True)
    return hashlib.sha256(doc.encode()).hexdigest()[:12]


def _logos_doc(logos: dict[str, Any]) -> tuple[dict[str, Any], dict[str, np.ndarray], str]:
    """(bundle.json's "logos", logos.npz's arrays, their digest) of {brand: BrandLogo}."""
    from detector.exemplar import METHOD

    doc: dict[str, Any] = {"method": METHOD, "brands": []}  # a list: bundle.json sorts keys
    arrays: dict[str, np.ndarray] = {}
    h = hashlib.sha256(METHOD.encode())
    for j, (brand, logo) in enumerate(logos.items()):
        meta, masks = logo.to_doc()
        one = hashlib.sha256(json.dumps([METHOD, meta], sort_keys=True).encode())
        for i, mask in enumerate(masks):
            arrays[f"b{j}_{i}"] = mask
            one.update(np.ascontiguousarray(mask, np.float32).tobytes())
        # the brand's matcher, whole: equal digests score every image alike, so a new
        # bundle version can copy this brand's rows from an old one (`logowatch rescore`)
        doc["brands"].append({"brand": brand, **meta, "digest": one.hexdigest()[:16]})
        h.update(f"{brand}:{one.hexdigest()}".encode())
    return doc, arrays, h.hexdigest()


def save_bundle(
    out_dir: str | Path,
    *,
    backbone: dict[str, Any],
    heads: Heads,
    thresholds: dict[str, float],
    tiles: TileSpec | None,
    extra: dict[str, Any] | None = None,
    logos: dict[str, Any] | None = None,
) -> Path:
    """Write a bundle; `backbone` is `Backbone.describe()`; `logos` the brands matched from
    their logo files ({brand: detector.exemplar.BrandLogo}; their threshold is 0.5 on the
    score scale, so `thresholds` need not name them). Returns the directory."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    logos = dict(logos or {})
    both = set(heads.brands) & set(logos)
    if both:
        raise DetectorError(f"brands {sorted(both)} have a head and a logo: one or the other")
    missing = set(heads.brands) - set(thresholds)
    if missing:
        raise DetectorError(f"no threshold for brands {sorted(missing)}")
    thresholds = {**{b: float(thresholds[b]) for b in heads.brands}, **{b: 0.5 for b in logos}}
    tiles_doc = None if tiles is None else {"grid": tiles.grid, "overlap": tiles.overlap}
    logos_doc, arrays, digest = _logos_doc(logos) if logos else (None, {}, None)
    meta: dict[str, Any] = {
        "format": FORMAT,
        "backbone": backbone,
        "backbone_id": backbone["backbone_id"],
        "preprocess_version": PREPROCESS_VERSION,
        "brands": [*heads.brands, *logos],
        "thresholds": thresholds,
        "tiles": tiles_doc,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        **(extra or {}),
    }
    if logos_doc:
        meta["logos"] = logos_doc
    meta["version"] = _version(heads, thresholds, backbone["backbone_id"], tiles_doc, digest)
    np.savez(out / HEADS_FILE, mean=heads.mean, scale=heads.scale, kernel=heads.kernel,
             bias=heads.bias)
    (out / LOGOS_FILE).unlink(missing_ok=True)
    if arrays:
        np.savez(out / LOGOS_FILE, **arrays)  # type: ignore[arg-type]
    (out / META_FILE).write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    return out


class Bundle:
    """A loaded bundle: heads, logos, thresholds and (unless `embed=False`) its backbone.
    `brands` is every brand: the heads' (`heads.brands`, the columns of `score`), then those
    matched from their logo files (`logos`, which need the image, not the embedding)."""

    def __init__(self, path: Path, metadata: dict[str, Any], heads: Heads, backbone: Any,
                 logos: dict[str, Any] | None = None) -> None:
        self.path, self.metadata, self.heads, self.backbone = path, metadata, heads, backbone
        self.logos: dict[str, Any] = dict(logos or {})
        self.version: str = metadata["version"]
        self.brands: list[str] = [*heads.brands, *self.logos]
        self.thresholds: dict[str, float] = dict(metadata["thresholds"])
        # the embeddings' id: the running backbone's (another precision changes it)
        self.backbone_id: str = backbone.backbone_id if backbone else metadata["backbone_id"]
        self.input_size: int = int(metadata["backbone"]["input_size"])
        t = metadata.get("tiles")
        self.tiles: TileSpec | None = TileSpec(t["grid"], t["overlap"]) if t else None

    @property
    def batch_size(self) -> int:
        return self._need_backbone().batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        self._need_backbone().batch_size = value

    def _need_backbone(self) -> Any:
        if self.backbone is None:
            raise DetectorError("bundle was loaded with embed=False: no backbone to run")
        return self.backbone

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) → float32 (N, D), fixed batch shape, no retracing."""
        return self._need_backbone().embed(pixels)

    def score(self, embeddings: np.ndarray) -> np.ndarray:
        """float32 (N, D) → float32 (N, len(brands)) probabilities."""
        return self.heads.score(np.asarray(embeddings, np.float32))


def with_logo(base: str | Path, out_dir: str | Path, brand: str, logo: Any) -> Path:
    """A copy of bundle base with brand matched from its logo file (`logo`, a calibrated
    `detector.exemplar.BrandLogo`): every head and every other logo unchanged, a head of
    brand's dropped. Returns the directory."""
    b = load_bundle(base, embed=False)
    heads = b.heads.without(brand)
    standard = {"format", "backbone", "backbone_id", "preprocess_version", "brands",
                "thresholds", "tiles", "created_at", "version", "logos"}
    return save_bundle(out_dir, backbone=b.metadata["backbone"], heads=heads,
                       thresholds={k: b.thresholds[k] for k in heads.brands}, tiles=b.tiles,
                       logos={**{k: v for k, v in b.logos.items() if k != brand}, brand: logo},
                       extra={k: v for k, v in b.metadata.items() if k not in standard})


def read_metadata(path: str | Path) -> dict[str, Any]:
    p = Path(path)
    try:
        meta = json.loads((p / META_FILE).read_text())
    except FileNotFoundError as exc:
        raise DetectorError(f"{p} is not a model bundle (no {META_FILE})") from exc
    except json.JSONDecodeError as exc:
        raise DetectorError(f"{p / META_FILE} is not valid JSON: {exc}") from exc
    if meta.get("format") != FORMAT:
        raise BundleMismatchError(f"bundle format {meta.get('format')!r}, expected {FORMAT}")
    return meta


def _weights_source(meta: dict[str, Any], weights: str | None) -> str:
    bb = meta["backbone"]
    if weights is not None:
        return weights
    source = bb.get("weights_source") or ("none" if bb["weights"].startswith("random(")
                                          else bb["weights"])
    if source != "file":
        return str(source)  # none, imagenet or an imported package's name
    raise BundleMismatchError(
        f"bundle was trained on backbone weights {bb['weights']}; pass that file with --weights"
    )


def load_bundle(
    path: str | Path,
    *,
    weights: str | None = None,
    backbone: Any = None,
    embed: bool = True,
    batch_size: int = 32,
    precision: str | None = None,
) -> Bundle:
    """Load and verify a bundle.

    Refuses (BundleMismatchError) a bundle whose preprocessing differs from this code's, or
    whose backbone id differs from the backbone built here (or passed in as `backbone`, to
    share one backbone between bundles). `precision` runs the backbone in another precision
    than the bundle was trained in: its embeddings then carry that backbone's own id (they
    are not interchangeable with the trained ones). Warns on every load when the weights are
    random.
    """
    p = Path(path)
    meta = read_metadata(p)
    if meta["preprocess_version"] != PREPROCESS_VERSION:
        raise BundleMismatchError(
            f"bundle {p} was trained with preprocessing {meta['preprocess_version']}, "
            f"this code does {PREPROCESS_VERSION}: retrain or use the matching release"
        )
    logos = _load_logos(p, meta)
    with np.load(p / HEADS_FILE) as z:
        heads = Heads([b for b in meta["brands"] if b not in logos], z["mean"], z["scale"],
                      z["kernel"], z["bias"])
    bb = meta["backbone"]
    if heads.kernel.shape != (bb["embed_dim"], len(heads.brands)):
        raise BundleMismatchError(f"heads shape {heads.kernel.shape} does not fit {bb}")
    recorded = bb.get("precision", "float32")
    if embed and backbone is None:
        from detector.model import Backbone

        backbone = Backbone(bb["name"], weights=_weights_source(meta, weights),
                            input_size=bb["input_size"], seed=bb.get("seed", 0),
                            batch_size=batch_size, taps=bb.get("taps"),
                            precision=precision or recorded)
    if backbone is not None and backbone.id_for(backbone.taps, recorded) != meta["backbone_id"]:
        raise BundleMismatchError(
            f"bundle {p} needs backbone {meta['backbone_id']} ({bb['name']}@{bb['input_size']}, "
            f"taps {','.join(bb.get('taps', []))}, weights {bb['weights']}), got "
            f"{backbone.backbone_id} ({backbone.name}@{backbone.input_size}, taps "
            f"{','.join(map(str, backbone.taps))}, weights {backbone.provenance})"
        )
    if backbone is not None and backbone.precision != recorded:
        log.warning("bundle %s was trained in %s, running it in %s: embeddings are stored "
                    "under backbone id %s, not %s", p, recorded, backbone.precision,
                    backbone.backbone_id, meta["backbone_id"])
    if bb.get("random_weights"):
        log.warning(
            "MODEL BUNDLE %s (version %s) USES A RANDOM-WEIGHT BACKBONE (%s): its scores are "
            "for tests and demos only, not for real brand analytics", p, meta["version"],
            bb["weights"],
        )
    return Bundle(p, meta, heads, backbone, logos)


def _load_logos(p: Path, meta: dict[str, Any]) -> dict[str, Any]:
    doc = meta.get("logos")
    if not doc:
        return {}
    from detector.exemplar import METHOD, BrandLogo

    if doc.get("method") != METHOD:
        raise BundleMismatchError(
            f"bundle {p} matches logo files by method {doc.get('method')!r}, this code by "
            f"{METHOD}: run 'brands add --logo' again or use the matching release")
    out = {}
    with np.load(p / LOGOS_FILE) as z:
        for j, d in enumerate(doc["brands"]):
            out[d["brand"]] = BrandLogo.from_doc(d, [z[f"b{j}_{i}"]
                                                     for i in range(len(d["null"]))])
    return out
