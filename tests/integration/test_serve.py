"""`logowatch serve` over real HTTP on 127.0.0.1 (uvicorn, requests as the client), the real
tiny bundle, and real image servers: refusals, limits, SSRF, shared batches, draining, and
the worker's own scores."""

from __future__ import annotations

import base64
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import requests

from logowatch import keys, serve
from logowatch.scoring import Scorer, ScorerConfig
from logowatch.services import REPO_ROOT, free_port
from tests.support.http_server import ImageServer
from tests.support.memory_consumer import assert_same_detections, worker_detections
from tests.support.model import BRANDS
from workers.fetch import FetchConfig, Fetcher

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def bundle(tiny_bundle: Path):  # type: ignore[no-untyped-def]
    from detector.bundle import load_bundle

    return load_bundle(tiny_bundle, batch_size=8)


@pytest.fixture(scope="module")
def images(synth_images: list[tuple[str, bytes]]) -> list[bytes]:
    return [body for _, body in synth_images[:6]]


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    path = tmp_path_factory.mktemp("keys") / "api-keys.json"
    made = {name: keys.add(path, name) for name in ("alice", "bob", "gone")}
    keys.revoke(path, "gone")
    return path, made


@contextmanager
def _scorer(bundle: Any, allow: list[str], **config: Any) -> Iterator[tuple[Scorer, Any]]:
    metrics = serve.ServeMetrics()
    fetcher = Fetcher(FetchConfig(allow_hosts=allow, retries=0, read_timeout=5,
                                  total_timeout=10))
    scorer = Scorer(bundle, fetcher, metrics.stages,
                    ScorerConfig(**{"batch_size": 8, "max_wait": 0.05, "fetch_workers": 4,
                                    **config}))
    try:
        yield scorer, metrics
    finally:
        scorer.close(timeout=30)


@contextmanager
def _running(app: Any) -> Iterator[str]:
    sock = serve.bind("127.0.0.1", 0)
    srv = serve.server(app, drain_timeout=10)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not srv.started:
        assert time.monotonic() < deadline and thread.is_alive(), "server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(30)


@pytest.fixture(scope="module")
def image_host() -> Iterator[ImageServer]:
    server = ImageServer().start()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def api(bundle, key_file, image_host: ImageServer) -> Iterator[tuple[str, Any]]:  # type: ignore[no-untyped-def]
    limits = serve.Limits(max_images=4, max_body_bytes=300_000, max_image_bytes=100_000,
                          rate_per_minute=6000)
    with _scorer(bundle, [image_host.host]) as (scorer, metrics), \
            _running(serve.build_app(scorer, keys.KeyStore(key_file[0]), limits,
                                     metrics)) as url:
        yield url, key_file[1]


def _post(url: str, key: str | None, body: Any = None, data: bytes | None = None,
          **kw: Any) -> requests.Response:
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{url}/v1/classify", json=body, data=data, headers=headers,
                         timeout=120, **kw)


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _held(gate: threading.Event, body: bytes) -> Any:
    """An image route that answers only once ``gate`` is set."""
    def handler(request: Any) -> None:
        gate.wait(120)
        request.send_response(200)
        request.send_header("Content-Type", "image/jpeg")
        request.send_header("Content-Length", str(len(body)))
        request.end_headers()
        request.wfile.write(body)
    return handler


def _error(response: requests.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_scoring_and_the_model_list_need_an_active_key(api, key_file, images) -> None:  # type: ignore[no-untyped-def]
    url, made = api
    body = {"images": [{"content": _b64(images[0])}]}
    _error(_post(url, None, body), 401, "unauthorized")
    _error(_post(url, "lw_not-a-key", body), 401, "unauthorized")
    _error(_post(url, made["gone"], body), 401, "unauthorized")
    _error(requests.get(f"{url}/v1/models", timeout=30), 401, "unauthorized")
    assert _post(url, made["bob"], body).status_code == 200
    keys.revoke(key_file[0], "bob")  # takes effect on the running server
    _error(_post(url, made["bob"], body), 401, "unauthorized")

    models = requests.get(f"{url}/v1/models", timeout=30,
                          headers={"Authorization": f"Bearer {made['alice']}"}).json()
    (model,) = models["models"]
    assert model["brands"] == list(BRANDS) and set(model["thresholds"]) == set(BRANDS)
    assert model["weights"]["random"] is True and model["weights"]["digest"]
    assert model["limits"]["max_images"] == 4
    assert requests.get(f"{url}/healthz", timeout=30).status_code == 200
    assert requests.get(f"{url}/readyz", timeout=30).status_code == 200


def test_malformed_bodies_are_400_with_a_json_error(api, images) -> None:  # type: ignore[no-untyped-def]
    url, made = api
    key = made["alice"]
    _error(_post(url, key, data=b"{not json"), 400, "malformed_json")
    _error(_post(url, key, {"pictures": []}), 400, "invalid_request")
    _error(_post(url, key, {"images": []}), 400, "invalid_request")
    _error(_post(url, key, {"images": ["http://x/y.jpg"]}), 400, "invalid_request")
    _error(_post(url, key, {"images": [{"url": "http://x/a.jpg", "content": "AAAA"}]}), 400,
           "invalid_request")
    _error(_post(url, key, {"images": [{"content": "not base64!"}]}), 400, "invalid_base64")
    _error(_post(url, key, {"images": [{"id": "a", "content": _b64(images[0])},
                                       {"id": "a", "content": _b64(images[1])}]}),
           400, "invalid_request")
    _error(requests.get(f"{url}/v1/classify", timeout=30), 405, "method_not_allowed")
    _error(requests.get(f"{url}/v1/nothing", timeout=30), 404, "not_found")


def test_body_size_and_image_count_are_413_and_the_rate_limit_429(
        bundle, key_file, api, images) -> None:  # type: ignore[no-untyped-def]
    url, made = api
    key = made["alice"]
    _error(_post(url, key, data=b"x" * 400_000), 413, "body_too_large")
    _error(_post(url, key, {"images": [{"content": _b64(images[0])}] * 5}), 413,
           "too_many_images")
    big = _post(url, key, {"images": [{"content": _b64(b"\xff" * 150_000)}]})
    assert big.status_code == 200 and big.json()["images"][0]["status"] == "too_large"

    slow = serve.Limits(max_images=2, rate_per_minute=0.001)  # a burst of 2, then none
    with _scorer(bundle, []) as (scorer, metrics), \
            _running(serve.build_app(scorer, keys.KeyStore(key_file[0]), slow,
                                     metrics)) as limited:
        one = {"images": [{"content": _b64(images[0])}]}
        assert _post(limited, key, {"images": one["images"] * 2}).status_code == 200
        refused = _post(limited, key, one)
        _error(refused, 429, "rate_limited")
        assert int(refused.headers["Retry-After"]) > 0
        metrics_text = requests.get(f"{limited}/metrics", timeout=30).text
        assert 'logowatch_serve_requests_total{code="429"} 1.0' in metrics_text


def test_a_full_queue_is_503_and_readyz_says_so(bundle, key_file, images) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    server = ImageServer(routes={"/held.jpg": _held(gate, images[0])}).start()
    key = key_file[1]["alice"]
    try:
        with _scorer(bundle, [server.host], max_queue=1) as (scorer, metrics), \
                _running(serve.build_app(scorer, keys.KeyStore(key_file[0]), serve.Limits(),
                                         metrics)) as url, ThreadPoolExecutor(1) as pool:
            first = pool.submit(_post, url, key, {"images": [{"url": server.url("/held.jpg")}]})
            deadline = time.monotonic() + 120
            while "/held.jpg" not in server.requests:  # admitted, and being fetched
                assert time.monotonic() < deadline and not first.done()
                time.sleep(0.05)
            refused = _post(url, key, {"images": [{"content": _b64(images[1])}]})
            _error(refused, 503, "busy")
            assert refused.headers["Retry-After"] == "1"
            assert requests.get(f"{url}/readyz", timeout=30).status_code == 503
            gate.set()
            assert first.result(timeout=120).json()["images"][0]["status"] == "ok"
            assert requests.get(f"{url}/readyz", timeout=30).status_code == 200
    finally:
        gate.set()
        server.stop()


def test_urls_go_through_the_ssrf_safe_fetcher_only(api, images, canary_server) -> None:  # type: ignore[no-untyped-def]
    url, made = api
    canary_server.add("/x.jpg", images[0])
    response = _post(url, made["alice"], {"images": [
        {"id": "canary", "url": canary_server.url("/x.jpg")},
        {"id": "metadata", "url": "http://169.254.169.254/latest/meta-data/"},
        {"id": "file", "url": "file:///etc/passwd"},
    ]})
    assert response.status_code == 200
    got = {i["id"]: i for i in response.json()["images"]}
    assert {k: v["status"] for k, v in got.items()} == {
        "canary": "blocked", "metadata": "blocked", "file": "blocked"}
    assert all(v["brands"] == [] and v["batch"] is None for v in got.values())
    assert canary_server.requests == []


def test_scores_are_the_workers_for_the_same_bundle_and_images(
        api, bundle, images, image_host: ImageServer) -> None:  # type: ignore[no-untyped-def]
    url, made = api
    urls = [image_host.add(f"/same{i}.jpg", body) for i, body in enumerate(images[:4])]
    worker = worker_detections(bundle, urls, [image_host.host])
    assert len(worker) == 4 * len(BRANDS)

    # the same images by URL and as bytes, in one request
    body = {"images": [{"id": u, "url": u} for u in urls]}
    by_url = _post(url, made["alice"], body).json()["images"]
    body = {"images": [{"id": u, "content": _b64(b)} for u, b in zip(urls, images, strict=False)]}
    by_bytes = _post(url, made["alice"], body).json()["images"]
    for answer in (by_url, by_bytes):
        served = {(i["id"], b["brand"]): (b["score"], b["present"], b["region"])
                  for i in answer for b in i["brands"]}
        assert_same_detections(served, worker)


def test_concurrent_requests_share_one_model_batch(bundle, key_file, images) -> None:  # type: ignore[no-untyped-def]
    # A batch closes at 2 images or after an hour: only two requests together can close it.
    with _scorer(bundle, [], batch_size=2, max_wait=3600) as (scorer, metrics), \
            _running(serve.build_app(scorer, keys.KeyStore(key_file[0]), serve.Limits(),
                                     metrics)) as url:
        key = key_file[1]["alice"]
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(
                lambda b: _post(url, key, {"images": [{"content": _b64(b)}]}), images[:2]))
        batches = [a.json()["images"][0]["batch"] for a in answers]
        assert batches[0] == batches[1] and batches[0]["size"] == 2
        text = requests.get(f"{url}/metrics", timeout=30).text
        assert "logowatch_serve_batch_size_count 1.0" in text


def test_sigterm_finishes_the_request_in_flight_then_exits_0(
        tiny_bundle: Path, key_file, images) -> None:  # type: ignore[no-untyped-def]
    gate = threading.Event()
    server = ImageServer(routes={"/slow.jpg": _held(gate, images[0])}).start()
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TF_CPP_MIN_LOG_LEVEL": "3",
           "LOGOWATCH_API_KEYS": "", "LOGOWATCH_KEYS_FILE": ""}
    proc = subprocess.Popen(
        [sys.executable, "-m", "logowatch.cli", "serve", "--model", str(tiny_bundle),
         "--keys-file", str(key_file[0]), "--port", str(port), "--allow-host", server.host,
         "--batch-size", "4", "--fetch-timeout", "60", "--drain-timeout", "120"],
        env=env, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        base = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, proc.stdout.read().decode()  # type: ignore[union-attr]
            try:
                if requests.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.2)
        with ThreadPoolExecutor(1) as pool:
            answer = pool.submit(_post, base, key_file[1]["alice"],
                                 {"images": [{"id": "slow", "url": server.url("/slow.jpg")}]})
            while "/slow.jpg" not in server.requests:  # the request is in flight
                assert time.monotonic() < deadline and not answer.done()
                time.sleep(0.05)
            proc.send_signal(signal.SIGTERM)
            while True:  # new connections are refused while it drains
                try:
                    requests.get(f"{base}/healthz", timeout=5)
                except requests.ConnectionError:
                    break
                assert time.monotonic() < deadline, "still accepting after SIGTERM"
                time.sleep(0.05)
            assert proc.poll() is None  # still draining
            gate.set()
            response = answer.result(timeout=120)
        assert response.status_code == 200
        assert response.json()["images"][0]["status"] == "ok"
        assert proc.wait(120) == 0
    finally:
        gate.set()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        server.stop()
