"""Real HTTP servers on 127.0.0.1 that serve generated images and record every request."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

Route = tuple[int, str, bytes] | Callable[[BaseHTTPRequestHandler], None]


@dataclass
class ImageServer:
    """Serves ``routes`` (path → (status, content type, body) or a handler function)."""

    routes: dict[str, Route] = field(default_factory=dict)
    requests: list[str] = field(default_factory=list)
    server: ThreadingHTTPServer | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.server_address[1])

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def url(self, path: str) -> str:
        return f"http://{self.host}{path}"

    def add(self, path: str, body: bytes, content_type: str = "image/jpeg",
            status: int = 200) -> str:
        self.routes[path] = (status, content_type, body)
        return self.url(path)

    def start(self) -> ImageServer:
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                owner.requests.append(self.path)
                route = owner.routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                if callable(route):
                    route(self)
                    return
                status, ctype, body = route
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()


def jpeg_bytes(width: int = 320, height: int = 240, seed: int = 0, quality: int = 85) -> bytes:
    """A small photographic-looking JPEG (smooth gradients plus noise), generated."""
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([
        (x * 255 / max(width - 1, 1)),
        (y * 255 / max(height - 1, 1)),
        ((x + y) * 127 / max(width + height - 2, 1)),
    ], axis=-1)
    noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype("uint8")
    out = io.BytesIO()
    Image.fromarray(noisy).save(out, format="JPEG", quality=quality)
    return out.getvalue()


@pytest.fixture
def image_server() -> Iterator[ImageServer]:
    server = ImageServer().start()
    yield server
    server.stop()


@pytest.fixture
def canary_server() -> Iterator[ImageServer]:
    """A second loopback server that must never be contacted (SSRF canary)."""
    server = ImageServer().start()
    yield server
    server.stop()
