"""The shared backbone: Inception v3 (or another keras.applications net) → one embedding.

Every brand head reads the same embedding, so an image passes the expensive network once
whatever the number of brands. The embedding is whatever the *taps* define: global max or
average pooling of one or more blocks, concatenated (logos are local patterns: an early
block max-pooled beats the classic `mixed10:avg` by far), and the served net is cut after the
deepest tap. `backbone_id` digests the name, input size, preprocessing version, the actual
weight values, the taps and the compute precision: two backbones with the same id produce
the same embeddings, so stored embeddings stay reusable by heads trained later, and a bundle
trained on one backbone is refused by another. `features_id` is the same without the taps: the
bottleneck cache keys its entries by it plus the tap, so one pass fills every candidate tap.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.preprocess import PREPROCESS_VERSION

log = logging.getLogger(__name__)

TOP = "top"  # the net's last block, whatever its name
PRECISIONS = ("float32", "mixed_float16", "mixed_bfloat16")


@dataclass(frozen=True)
class BackboneSpec:
    """What the net is built from; `scale` maps uint8 pixels to what the net expects."""

    constructor: str
    default_size: int
    min_size: int
    scale: str  # "tf": [-1, 1]; "raw": 0..255, the model rescales itself
    # embeddings training chooses from on validation PR-AUC, cheapest first (ties go to it)
    candidates: tuple[tuple[str, ...], ...] = ((f"{TOP}:avg",),)


BACKBONES: dict[str, BackboneSpec] = {
    "inception_v3": BackboneSpec("InceptionV3", 299, 75, "tf", (
        ("mixed0:max",), ("mixed1:max",), ("mixed2:max",), ("mixed3:max",), ("mixed5:max",),
        ("mixed7:max",), ("mixed0:max", "mixed1:max"), ("mixed1:max", "mixed3:max"),
        ("mixed10:avg",))),
    "mobilenet_v3_small": BackboneSpec("MobileNetV3Small", 224, 32, "raw"),
    "mobilenet_v3_large": BackboneSpec("MobileNetV3Large", 224, 32, "raw"),
    "efficientnet_b0": BackboneSpec("EfficientNetB0", 224, 32, "raw"),
}


@dataclass(frozen=True)
class Tap:
    """One block's feature map, globally pooled: `mixed2:max`, `mixed10:avg`."""

    layer: str
    pool: str

    @classmethod
    def parse(cls, text: str) -> Tap:
        layer, _, pool = text.partition(":")
        if not layer or pool not in ("max", "avg"):
            raise DetectorError(f"tap {text!r}: expected LAYER:max or LAYER:avg, "
                                "e.g. mixed2:max")
        return cls(layer, pool)

    def __str__(self) -> str:
        return f"{self.layer}:{self.pool}"

    @property
    def key(self) -> str:
        """File-name-safe form, part of the bottleneck cache's file names."""
        return f"{self.layer}-{self.pool}"


def parse_taps(taps: Sequence[str] | str) -> tuple[Tap, ...]:
    items = taps.split(",") if isinstance(taps, str) else list(taps)
    out = tuple(Tap.parse(t.strip()) for t in items if t.strip())
    if not out:
        raise DetectorError("at least one tap is needed, e.g. mixed2:max")
    if len(set(out)) != len(out):
        raise DetectorError(f"duplicate taps in {','.join(map(str, out))}")
    return out


def gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def resolve_weights(weights: str, seed: int) -> tuple[str | None, str, str]:
    """`--weights` → (file to load or None, how it is recorded in bundles, source name).

    'none' (random, seeded), 'imagenet' (Keras downloads once), an imported package name
    ('nsfwjs', imported on first use: see detector.weights) or a Keras weights file."""
    if weights == "none":
        return None, f"random(seed={seed})", "none"
    if weights == "imagenet":
        return None, "imagenet", "imagenet"
    from detector import weights as imported

    if weights in imported.IMPORTED:
        path = imported.weights_file(weights) or imported.import_weights(weights)
        prov = imported.provenance(weights)
        return str(path), f"{prov['package']}@{prov['version']}", weights
    path = Path(weights)
    if not path.is_file():
        raise DetectorError(f"backbone weights {weights!r}: not 'imagenet', 'none', one of "
                            f"{', '.join(imported.IMPORTED)} or an existing weights file")
    return str(path), f"file:{path.name}", "file"


class Backbone:
    """A built embedding function over the taps, run in a few fixed batch shapes.

    `embed` pads a call to the next bucket size (1, 2, 4, ... batch_size), each traced once,
    so a half-full batch costs about half a full one and nothing retraces in the hot loop.
    """

    def __init__(
        self,
        name: str = "inception_v3",
        *,
        weights: str = "none",
        input_size: int | None = None,
        seed: int = 0,
        batch_size: int = 32,
        taps: Sequence[str] | str | None = None,
        precision: str = "float32",
    ) -> None:
        if name not in BACKBONES:
            raise DetectorError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
        if precision not in PRECISIONS:
            raise DetectorError(f"precision {precision!r}: choose from {', '.join(PRECISIONS)}")
        spec = BACKBONES[name]
        size = input_size or spec.default_size
        if size < spec.min_size:
            raise DetectorError(f"{name} needs input size >= {spec.min_size}, got {size}")
        self.name, self.input_size, self.seed, self.precision = name, size, seed, precision
        self.taps = parse_taps(taps or spec.candidates[0])
        self.weights_file, self.provenance, self.weights_source = resolve_weights(weights, seed)
        self.random_weights = weights == "none"
        self._spec = spec
        base = self._build_base(weights)
        self.weights_digest = _digest(base)
        self._model, self.tap_dims = self._cut(base)
        self.embed_dim = sum(self.tap_dims)
        self.features_id = _short_hash(f"{name}|{size}|{PREPROCESS_VERSION}|"
                                       f"{self.weights_digest}|{precision}")
        self.backbone_id = self.id_for(self.taps, precision)
        self._fns: dict[int, Any] = {}
        self.batch_size = batch_size

    def id_for(self, taps: Sequence[Tap], precision: str) -> str:
        """The id of this backbone's weights with other taps or another precision."""
        return _short_hash(f"{self.name}|{self.input_size}|{PREPROCESS_VERSION}|"
                           f"{self.weights_digest}|{','.join(map(str, taps))}|{precision}")

    def _build_base(self, weights: str) -> Any:
        import keras

        ctor = getattr(keras.applications, self._spec.constructor)
        kwargs: dict[str, Any] = {"include_top": False, "weights": None,
                                  "input_shape": (self.input_size, self.input_size, 3)}
        if weights == "none":
            # Same seed → same random weights, so a random-backbone bundle reloads exactly.
            keras.utils.set_random_seed(self.seed)
        elif weights == "imagenet":
            kwargs["weights"] = "imagenet"
        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(self.precision)  # this net only, restored below
        try:
            model = ctor(**kwargs)
            if self.weights_file is not None:
                model.load_weights(self.weights_file)
        except Exception as exc:  # Keras raises anything from a failed download or bad file
            raise DetectorError(_build_error(self.name, weights, exc)) from None
        finally:
            keras.config.set_dtype_policy(previous)
        return model

    def _cut(self, base: Any) -> tuple[Any, list[int]]:
        """The net up to the deepest tap, with one output per distinct tapped layer."""
        import keras

        names = list(dict.fromkeys(t.layer for t in self.taps))
        outputs = []
        for layer in names:
            if layer == TOP:
                outputs.append(base.output)
                continue
            try:
                outputs.append(base.get_layer(layer).output)
            except ValueError:
                raise DetectorError(f"{self.name} has no layer {layer!r} to tap") from None
        self._tap_output = [names.index(t.layer) for t in self.taps]
        model = keras.Model(base.input, outputs)
        return model, [int(outputs[i].shape[-1]) for i in self._tap_output]

    def columns(self, taps: Sequence[Tap]) -> np.ndarray:
        """Indices of `taps`' units in this backbone's embedding (taps must be among ours)."""
        starts = np.cumsum([0, *self.tap_dims])
        idx = []
        for t in taps:
            if t not in self.taps:
                raise DetectorError(f"tap {t} is not among {','.join(map(str, self.taps))}")
            i = self.taps.index(t)
            idx.append(np.arange(starts[i], starts[i + 1]))
        return np.concatenate(idx)

    @property
    def model(self) -> Any:
        return self._model

    @property
    def batch_size(self) -> int:
        return self._batch_size

    @batch_size.setter
    def batch_size(self, value: int) -> None:
        if value < 1:
            raise DetectorError(f"batch size must be >= 1, got {value}")
        self._batch_size = int(value)

    def buckets(self) -> list[int]:
        """The padded batch shapes: powers of two below the batch size, and the batch size."""
        out, b = [], 1
        while b < self._batch_size:
            out.append(b)
            b *= 2
        return [*out, self._batch_size]

    def scale_pixels(self, x: Any) -> Any:
        """uint8 → the range the net was trained on (a TF op, shared by the SavedModel)."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        return x / 127.5 - 1.0 if self._spec.scale == "tf" else x

    def features(self, x: Any) -> Any:
        """A TF function body: uint8 pixels → float32 (N, embed_dim), taps pooled, joined."""
        import tensorflow as tf

        maps = self._model(self.scale_pixels(x), training=False)
        maps = maps if isinstance(maps, list | tuple) else [maps]
        parts = []
        for tap, i in zip(self.taps, self._tap_output, strict=True):
            pool = tf.reduce_max if tap.pool == "max" else tf.reduce_mean
            parts.append(tf.cast(pool(maps[i], axis=[1, 2]), tf.float32))
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=-1)

    def _compiled(self, size: int) -> Any:
        if size not in self._fns:
            import tensorflow as tf

            shape = (size, self.input_size, self.input_size, 3)
            xla = gpu_present() and os.environ.get("LOGOWATCH_XLA", "1") != "0"
            self._fns[size] = tf.function(self.features, jit_compile=xla, input_signature=[
                tf.TensorSpec(shape, tf.uint8)])
        return self._fns[size]

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) → float32 (N, D), in bucket-padded batches."""
        pixels = np.asarray(pixels)
        want = (self.input_size, self.input_size, 3)
        if pixels.ndim != 4 or pixels.shape[1:] != want or pixels.dtype != np.uint8:
            raise DetectorError(
                f"embed wants uint8 (N, {self.input_size}, {self.input_size}, 3), "
                f"got {pixels.dtype} {pixels.shape}"
            )
        n, bs = len(pixels), self._batch_size
        if n == 0:
            return np.zeros((0, self.embed_dim), np.float32)
        out = []
        for start in range(0, n, bs):
            chunk = pixels[start : start + bs]
            size = next(b for b in self.buckets() if b >= len(chunk))
            if len(chunk) < size:
                pad = np.zeros((size - len(chunk), *want), np.uint8)
                chunk = np.concatenate([chunk, pad])
            out.append(self._compiled(size)(chunk).numpy()[: min(bs, n - start)])
        return np.concatenate(out).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        """The backbone part of a bundle's metadata."""
        return {
            "name": self.name,
            "input_size": self.input_size,
            "weights": self.provenance,
            "weights_source": self.weights_source,
            "random_weights": self.random_weights,
            "seed": self.seed,
            "weights_digest": self.weights_digest,
            "taps": [str(t) for t in self.taps],
            "precision": self.precision,
            "embed_dim": self.embed_dim,
            "features_id": self.features_id,
            "backbone_id": self.backbone_id,
            "preprocess_version": PREPROCESS_VERSION,
        }


def _short_hash(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _digest(model: Any) -> str:
    h = hashlib.sha256()
    for w in model.weights:
        h.update(np.ascontiguousarray(w.numpy()).tobytes())
    return h.hexdigest()[:16]


def _build_error(name: str, weights: str, exc: Exception) -> str:
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
    if weights == "imagenet":
        return (f"cannot get ImageNet weights for {name} (Keras downloads them, which needs "
                f"internet): {first}. Offline, use --weights nsfwjs (imported from npm, "
                "ImageNet-frozen layers), a weights file, or none (random, tests only)")
    return f"cannot build backbone {name} with weights {weights}: {first}"


def default_precision() -> str:
    """mixed float16 where a GPU is present, float32 elsewhere (LOGOWATCH_PRECISION wins)."""
    chosen = os.environ.get("LOGOWATCH_PRECISION")
    if chosen:
        return chosen
    return "mixed_float16" if gpu_present() else "float32"
