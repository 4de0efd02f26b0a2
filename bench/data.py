"""The benchmark's inputs: realistic JPEGs, a local image server and a model bundle.

The JPEGs are photographs bundled with scikit-image, cropped, resized to Instagram's sizes
(1080x1080 and 1080x1350), recoloured and given sensor-like noise, then saved at quality 85.
Noise matters: a flat synthetic picture compresses to a fraction of a real photo's bytes and
decodes faster, which would flatter the decode bound.

The bundle wraps the default backbone weights (imported nsfwjs where they exist, else random)
with random heads: speed does not depend on the weights' values, only on their shapes and on
where the net is cut (the taps). The shipped recipe's taps (`mixed0:max,mixed1:max`, what
`bench.quality` chose) and the full net (`mixed10:avg`, the 2016 prototype's) are both
measured.
"""

from __future__ import annotations

import io
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
from PIL import Image

PHOTOS = ("astronaut.png", "coffee.png", "chelsea.png", "rocket.jpg", "motorcycle_left.png",
          "hubble_deep_field.jpg", "coins.png", "horse.png", "immunohistochemistry.png")
SIZES = ((1080, 1080), (1080, 1350))
BRANDS = ("acme", "globex", "initech")


def _photo(name: str) -> Image.Image | None:
    import skimage.data

    path = Path(skimage.data.__file__).parent / name
    if not path.exists():
        return None
    return Image.open(path).convert("RGB")


def make_jpegs(n: int, seed: int = 7, quality: int = 85) -> list[bytes]:
    """`n` JPEGs, half square and half portrait, each a different crop of a real photo."""
    rng = np.random.default_rng(seed)
    photos = [p for p in (_photo(name) for name in PHOTOS) if p is not None]
    out = []
    for i in range(n):
        src = photos[i % len(photos)]
        w, h = SIZES[i % 2]
        sw, sh = src.size
        frac = rng.uniform(0.6, 1.0)
        cw = max(32, int(min(sw, sh * w / h) * frac))
        ch = max(32, int(cw * h / w))
        x, y = int(rng.integers(0, sw - cw + 1)), int(rng.integers(0, max(1, sh - ch + 1)))
        img = src.crop((x, y, x + cw, y + ch)).resize((w, h), Image.Resampling.BICUBIC)
        arr = np.asarray(img, np.float32)[:, :, rng.permutation(3)]
        arr = arr * rng.uniform(0.8, 1.15) + rng.uniform(-15, 15)
        arr += rng.normal(0.0, 4.0, arr.shape)  # sensor noise, as a phone photo has
        buf = io.BytesIO()
        Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8)).save(
            buf, "JPEG", quality=quality, optimize=False)
        out.append(buf.getvalue())
    return out


class ImageServer:
    """Serves ``/<i>.jpg`` as ``images[i % len(images)]`` from memory on 127.0.0.1.

    Every record gets its own URL while the set of distinct photos stays small; the worker
    does not cache, so each request is fetched and decoded in full.
    """

    def __init__(self, images: list[bytes]) -> None:
        self.images = images
        self.requests = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as a CDN would

            def do_GET(self) -> None:
                name = self.path.split("?", 1)[0].strip("/")
                try:
                    body = owner.images[int(name.split(".", 1)[0]) % len(owner.images)]
                except ValueError:
                    self.send_error(404)
                    return
                owner.requests += 1
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="bench-images",
                         daemon=True).start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    def url(self, i: int) -> str:
        return f"http://{self.host}/{i}.jpg"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def make_bundle(out: Path, input_size: int, seed: int = 0,
                taps: str = "mixed0:max,mixed1:max") -> Path:
    """Random heads on the backbone tapped at `taps` (imported weights where they exist),
    tiles on (grid 2)."""
    from detector.bundle import Heads, save_bundle
    from detector.model import Backbone
    from detector.preprocess import TileSpec
    from detector.weights import default_weights

    backbone = Backbone("inception_v3", weights=default_weights(), input_size=input_size,
                        seed=seed, taps=taps)
    rng = np.random.default_rng(seed)
    d, b = backbone.embed_dim, len(BRANDS)
    heads = Heads(list(BRANDS), np.zeros(d, np.float32), np.ones(d, np.float32),
                  rng.normal(0, 0.02, (d, b)).astype(np.float32), np.zeros(b, np.float32))
    return save_bundle(out, backbone=backbone.describe(), heads=heads,
                       thresholds=dict.fromkeys(BRANDS, 0.5), tiles=TileSpec(2, 0.25),
                       extra={"note": "benchmark bundle: random heads"})


LOGO_BRAND = "benchlogo"


def with_bench_logo(base: Path, out: Path, images: list[bytes]) -> Path:
    """base with one more brand matched from a logo file (`detector.exemplar`): a drawn
    two-part mark, calibrated on the benchmark's own images. Its matches mean nothing; its
    cost is what the worker pays per image for each brand onboarded with `brands add --logo`."""
    from PIL import ImageDraw

    from detector.bundle import with_logo
    from detector.exemplar import FINE_SIDE, BrandLogo
    from detector.preprocess import decode_for

    logo = Image.new("RGBA", (240, 120), (0, 0, 0, 0))
    draw = ImageDraw.Draw(logo)
    draw.ellipse((0, 0, 119, 119), fill=(200, 20, 20, 255))
    draw.polygon([(130, 110), (185, 5), (239, 110)], fill=(200, 20, 20, 255))
    feed = [decode_for(b, FINE_SIDE)[0] for b in images]
    found, _ = BrandLogo.calibrated([logo], feed)
    return with_logo(base, out, LOGO_BRAND, found)
