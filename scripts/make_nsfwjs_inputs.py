"""Writes tests/fixtures/nsfwjs_inputs.npy: the fixed images the TF.js-vs-Keras proof feeds.

Run from the repository root: ``python scripts/make_nsfwjs_inputs.py``. Deterministic, no
network: two scikit-image sample photos (astronaut, coffee), centre-cropped to a square and
resized to 299x299 with Pillow's bilinear filter, and one synthetic pattern (colour gradients
under a checkerboard), as uint8 (3, 299, 299, 3). ``scripts/make_tfjs_reference.mjs`` reads
the same bytes, so both sides see bit-identical inputs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

SIZE = 299
OUT = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "nsfwjs_inputs.npy"
NAMES = ("astronaut", "coffee", "pattern")


def _square(img: np.ndarray) -> np.ndarray:
    h, w = img.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    crop = Image.fromarray(img[top : top + side, left : left + side])
    return np.asarray(crop.resize((SIZE, SIZE), Image.Resampling.BILINEAR), dtype=np.uint8)


def _pattern() -> np.ndarray:
    y, x = np.mgrid[0:SIZE, 0:SIZE]
    checker = ((x // 23 + y // 23) % 2) * 60
    rgb = np.stack([x * 255 // (SIZE - 1), y * 255 // (SIZE - 1), (x + y) * 255 // (2 * SIZE - 2)],
                   axis=-1)
    return np.clip(rgb * 0.75 + checker[..., None], 0, 255).astype(np.uint8)


def main() -> None:
    images = np.stack([_square(data.astronaut()), _square(data.coffee()), _pattern()])
    assert images.shape == (len(NAMES), SIZE, SIZE, 3) and images.dtype == np.uint8
    np.save(OUT, images)
    print(f"wrote {OUT} {images.shape} {images.dtype}")


if __name__ == "__main__":
    main()
