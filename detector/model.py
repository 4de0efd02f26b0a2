"""The shared backbone: Inception v3 (or another keras.applications net) → one embedding.

Every brand head reads the same embedding, so an image passes the expensive network once
whatever the number of brands. The backbone is identified by `backbone_id`, a digest of its
name, input size, preprocessing version and the actual weight values: two backbones with the
same id produce the same embeddings, so stored embeddings stay reusable by heads trained later,
and a bundle trained on one backbone is refused by another.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from detector.errors import DetectorError
from detector.preprocess import PREPROCESS_VERSION

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BackboneSpec:
    """What the net is built from; `scale` maps uint8 pixels to what the net expects."""

    constructor: str
    default_size: int
    min_size: int
    scale: str  # "tf": [-1, 1]; "raw": 0..255, the model rescales itself


BACKBONES: dict[str, BackboneSpec] = {
    "inception_v3": BackboneSpec("InceptionV3", 299, 75, "tf"),
    "mobilenet_v3_small": BackboneSpec("MobileNetV3Small", 224, 32, "raw"),
    "mobilenet_v3_large": BackboneSpec("MobileNetV3Large", 224, 32, "raw"),
    "efficientnet_b0": BackboneSpec("EfficientNetB0", 224, 32, "raw"),
}


def gpu_present() -> bool:
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def weights_provenance(weights: str, seed: int) -> str:
    """How the weights were obtained, as recorded in the bundle and shown on load."""
    if weights == "none":
        return f"random(seed={seed})"
    if weights == "imagenet":
        return "imagenet"
    path = Path(weights)
    if not path.is_file():
        raise DetectorError(f"backbone weights file not found: {weights}")
    return f"file:{path.name}"


class Backbone:
    """A built, compiled embedding function with a fixed batch shape.

    `embed` pads every call to multiples of `batch_size`, so the traced graph is reused for
    any number of images (no retracing in the worker's hot loop).
    """

    def __init__(
        self,
        name: str = "inception_v3",
        *,
        weights: str = "imagenet",
        input_size: int | None = None,
        seed: int = 0,
        batch_size: int = 32,
    ) -> None:
        if name not in BACKBONES:
            raise DetectorError(f"unknown backbone {name!r}; choose from {sorted(BACKBONES)}")
        spec = BACKBONES[name]
        size = input_size or spec.default_size
        if size < spec.min_size:
            raise DetectorError(f"{name} needs input size >= {spec.min_size}, got {size}")
        self.name, self.input_size, self.seed, self.weights = name, size, seed, weights
        self.provenance = weights_provenance(weights, seed)
        self.random_weights = weights == "none"
        self._spec = spec
        self._model = self._build()
        self.embed_dim = int(self._model.output_shape[-1])
        self.weights_digest = self._digest()
        self.backbone_id = hashlib.sha256(
            f"{name}|{size}|{PREPROCESS_VERSION}|{self.weights_digest}".encode()
        ).hexdigest()[:16]
        self._fn: Any = None
        self.batch_size = batch_size

    def _build(self) -> Any:
        import keras

        ctor = getattr(keras.applications, self._spec.constructor)
        if os.environ.get("LOGOWATCH_MIXED_PRECISION", "1") != "0":
            enable_gpu_speedups()
        kwargs: dict[str, Any] = {
            "include_top": False,
            "pooling": "avg",
            "input_shape": (self.input_size, self.input_size, 3),
        }
        if self.weights == "none":
            # Same seed → same random weights, so a random-backbone bundle reloads exactly.
            keras.utils.set_random_seed(self.seed)
            kwargs["weights"] = None
        elif self.weights == "imagenet":
            kwargs["weights"] = "imagenet"
        else:
            kwargs["weights"] = None
        try:
            model = ctor(**kwargs)
            if self.weights not in ("none", "imagenet"):
                model.load_weights(self.weights)
        except (ValueError, OSError) as exc:
            raise DetectorError(f"cannot build backbone {self.name}: {exc}") from exc
        return model

    def _digest(self) -> str:
        h = hashlib.sha256()
        for w in self._model.weights:
            h.update(np.ascontiguousarray(w.numpy()).tobytes())
        return h.hexdigest()[:16]

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
        self._fn = None  # retrace once for the new fixed shape

    def scale_pixels(self, x: Any) -> Any:
        """uint8 → the range the net was trained on (a TF op, shared by the SavedModel)."""
        import tensorflow as tf

        x = tf.cast(x, tf.float32)
        return x / 127.5 - 1.0 if self._spec.scale == "tf" else x

    def _compiled(self) -> Any:
        if self._fn is None:
            import tensorflow as tf

            shape = (self._batch_size, self.input_size, self.input_size, 3)
            xla = gpu_present() and os.environ.get("LOGOWATCH_XLA", "1") != "0"

            @tf.function(input_signature=[tf.TensorSpec(shape, tf.uint8)], jit_compile=xla)
            def fn(x: Any) -> Any:
                return tf.cast(self._model(self.scale_pixels(x), training=False), tf.float32)

            self._fn = fn
        return self._fn

    def embed(self, pixels: np.ndarray) -> np.ndarray:
        """uint8 (N, S, S, 3) → float32 (N, D), in fixed-size padded batches."""
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
        fn, out = self._compiled(), []
        for start in range(0, n, bs):
            chunk = pixels[start : start + bs]
            if len(chunk) < bs:
                pad = np.zeros((bs - len(chunk), *want), np.uint8)
                chunk = np.concatenate([chunk, pad])
            out.append(fn(chunk).numpy()[: min(bs, n - start)])
        return np.concatenate(out).astype(np.float32, copy=False)

    def describe(self) -> dict[str, Any]:
        """The backbone part of a bundle's metadata."""
        return {
            "name": self.name,
            "input_size": self.input_size,
            "weights": self.provenance,
            "random_weights": self.random_weights,
            "seed": self.seed,
            "weights_digest": self.weights_digest,
            "embed_dim": self.embed_dim,
            "backbone_id": self.backbone_id,
            "preprocess_version": PREPROCESS_VERSION,
        }


def enable_gpu_speedups() -> bool:
    """Mixed precision where a GPU is present (the embedding is cast back to float32)."""
    if not gpu_present():
        return False
    import keras

    keras.mixed_precision.set_global_policy("mixed_float16")
    log.info("GPU present: mixed precision and XLA on")
    return True
