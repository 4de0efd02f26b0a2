"""`logowatch serve` under load: a real server process and real HTTP clients on 127.0.0.1.

1. warm-up: requests of 1, 2, 4 ... batch-size images one after another, so every padded
   batch shape the model will see is traced before anything is timed;
2. throughput: `clients` threads (8) each post requests of `images_per_request` base64 JPEGs
   back to back until `images` have been scored; images/s = images / wall time, with the
   clients' own JSON work on the same cores, as a caller on the same machine would have;
3. latency: one-image requests sent open loop at `latency_load` (half) of that throughput for
   `latency_seconds`; p50 / p95 / p99 of send → answer.

Every answer's batch sizes are kept, so the result shows that concurrent clients shared
batches (the mean images per model batch).
"""

from __future__ import annotations

import base64
import json
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from bench.e2e import Child
from bench.services import percentiles
from logowatch.services import free_port


@dataclass
class ServeSpec:
    batch_size: int = 32
    clients: int = 8
    images: int = 256
    images_per_request: int = 4
    latency_seconds: float = 10.0
    latency_load: float = 0.5
    max_wait_ms: int = 50
    timeout: float = 600.0


def _bodies(images: list[bytes], per_request: int) -> list[bytes]:
    """Request bodies made once, each a different run of the images."""
    encoded = [base64.b64encode(b).decode() for b in images]
    return [json.dumps({"images": [{"content": encoded[(i + k) % len(encoded)]}
                                   for k in range(per_request)]}).encode()
            for i in range(len(encoded))]


def run(spec: ServeSpec, *, bundle: Path, images: list[bytes], logs: Path) -> dict[str, Any]:
    import requests

    key = "lw_" + secrets.token_urlsafe(32)  # this run's only key, never written anywhere
    port = free_port()
    child = Child(["serve", "--model", str(bundle), "--port", str(port),
                   "--batch-size", str(spec.batch_size), "--max-wait-ms", str(spec.max_wait_ms),
                   "--rate-limit", "1e9", "--max-images", str(max(spec.batch_size,
                                                                   spec.images_per_request)),
                   "--max-queue", str(4 * spec.batch_size * spec.clients),
                   "--keys-file", str(logs / "no-keys-file.json")],
                  port, logs / "serve.log", env={"LOGOWATCH_API_KEYS": key})
    url = f"http://127.0.0.1:{port}/v1/classify"
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    sizes: list[int] = []
    lock = threading.Lock()

    def post(session: Any, body: bytes) -> int:
        r = session.post(url, data=body, headers=headers, timeout=spec.timeout)
        r.raise_for_status()
        answer = r.json()["images"]
        with lock:
            sizes.extend(i["batch"]["size"] for i in answer if i["batch"])
        return sum(i["status"] == "ok" for i in answer)

    result: dict[str, Any] = {"batch_size": spec.batch_size, "clients": spec.clients,
                              "images_per_request": spec.images_per_request}
    try:
        child.wait_ready(spec.timeout)
        result["startup_s"] = child.ready_s
        with requests.Session() as s:
            n = 1
            while n <= spec.batch_size:
                post(s, _bodies(images[:n], n)[0])
                n *= 2
        sizes.clear()

        bodies = _bodies(images, spec.images_per_request)
        todo = [spec.images // spec.images_per_request]

        def client(c: int) -> int:
            done = 0
            with requests.Session() as s:
                i = c
                while True:
                    with lock:
                        if todo[0] <= 0:
                            return done
                        todo[0] -= 1
                    done += post(s, bodies[i % len(bodies)])
                    i += spec.clients

        started = time.perf_counter()
        with ThreadPoolExecutor(spec.clients) as pool:
            scored = sum(pool.map(client, range(spec.clients)))
        seconds = time.perf_counter() - started
        result.update(images=scored, seconds=round(seconds, 2),
                      images_per_s=scored / seconds,
                      mean_batch=round(float(np.mean(sizes)), 2) if sizes else None)

        if spec.latency_seconds > 0 and scored:
            rate = spec.latency_load * result["images_per_s"]
            n = max(3, round(rate * spec.latency_seconds))
            singles = _bodies(images, 1)
            sessions = threading.local()

            def one(i: int, due: float) -> float:
                if not hasattr(sessions, "s"):
                    sessions.s = requests.Session()
                post(sessions.s, singles[i % len(singles)])
                return time.perf_counter() - due

            begin = time.perf_counter()
            with ThreadPoolExecutor(max(8, spec.clients * 2)) as pool:
                futures = []
                for i in range(n):
                    due = begin + i / rate
                    time.sleep(max(0.0, due - time.perf_counter()))
                    futures.append(pool.submit(one, i, due))
                latencies = np.array([f.result() for f in futures])
            result["latency"] = {"offered_per_s": round(rate, 2), "sent": n,
                                 **percentiles(latencies)}
    finally:
        child.stop()
    return result
