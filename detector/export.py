"""A TF Serving SavedModel of a bundle: image bytes in, per-brand scores out.

Endpoints (also the serving signatures):
  `serve(images: string[N]) -> scores float32[N, B]`  encoded JPEG/PNG/GIF/BMP bytes
  `score_pixels(pixels: uint8[N, S, S, 3]) -> scores` already-prepared inputs

The graph re-implements the documented crop/pad policy with TF ops (long side to S, bilinear
with antialiasing, grey padding). It does not apply EXIF orientation, composite alpha on white
or use JPEG DCT scaling, so scores of such images can differ slightly from the Python path;
for an image already S x S the two paths agree to float precision. `assets.extra/brands.json`
names the score columns (TF Serving's place for extra files); it also holds the version.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from detector.bundle import Bundle
from detector.errors import DetectorError
from detector.preprocess import PAD_VALUE


def export_saved_model(bundle: Bundle, out_dir: str | Path) -> Path:
    """Write the SavedModel for `bundle` (which must have its backbone) to `out_dir`."""
    import keras
    import tensorflow as tf

    if bundle.backbone is None:
        raise DetectorError("export needs the bundle's backbone (load it with embed=True)")
    out = Path(out_dir)
    if out.exists() and any(out.iterdir()):
        raise DetectorError(f"{out} exists and is not empty; choose a new directory")
    bb, size = bundle.backbone, bundle.input_size
    heads = bundle.heads
    mean = tf.constant(heads.mean)
    scale = tf.constant(heads.scale)
    kernel = tf.constant(heads.kernel)
    bias = tf.constant(heads.bias)

    def score_pixels(pixels: Any) -> Any:
        emb = bb.features(pixels)  # the taps, pooled and joined, as in the worker
        return tf.sigmoid(tf.matmul((emb - mean) / scale, kernel) + bias)

    def one(data: Any) -> Any:
        img = tf.io.decode_image(data, channels=3, expand_animations=False)
        h = tf.cast(tf.shape(img)[0], tf.float32)
        w = tf.cast(tf.shape(img)[1], tf.float32)
        s = float(size) / tf.maximum(h, w)
        nh = tf.maximum(1, tf.cast(tf.round(h * s), tf.int32))
        nw = tf.maximum(1, tf.cast(tf.round(w * s), tf.int32))
        small = tf.image.resize(tf.cast(img, tf.float32), tf.stack([nh, nw]),
                                method="bilinear", antialias=True)
        small = tf.cast(tf.clip_by_value(tf.round(small), 0, 255), tf.uint8)
        top, left = (size - nh) // 2, (size - nw) // 2
        padded = tf.pad(small - PAD_VALUE[0], [[top, size - nh - top], [left, size - nw - left],
                                               [0, 0]])
        return padded + PAD_VALUE[0]  # uint8 wraps: pad with 0 then shift = pad with grey

    def serve(images: Any) -> Any:
        pixels = tf.map_fn(one, images, fn_output_signature=tf.TensorSpec((size, size, 3),
                                                                           tf.uint8))
        return score_pixels(pixels)

    archive = keras.export.ExportArchive()
    archive.track(bb.model)
    archive.add_endpoint("serve", serve, input_signature=[tf.TensorSpec([None], tf.string)])
    archive.add_endpoint("score_pixels", score_pixels,
                         input_signature=[tf.TensorSpec([None, size, size, 3], tf.uint8)])
    archive.write_out(str(out), verbose=False)
    extra = out / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / "brands.json").write_text(json.dumps({
        "brands": bundle.heads.brands,
        "thresholds": {b: bundle.thresholds[b] for b in bundle.heads.brands},
        "version": bundle.version, "backbone_id": bundle.backbone_id, "input_size": size,
        # matched from their logo files (OpenCV, not TensorFlow): not in this SavedModel
        "not_exported": list(bundle.logos),
    }, indent=2) + "\n")
    return out
