"""Shared parts of the reliability suite: worker processes, lag, completeness, waiting.

Waiting is bounded by generous deadlines that only turn a hang into a clear failure; no test
asserts how fast anything happened.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from tests.support.http_server import ImageServer
from tests.support.model import BRANDS
from tests.support.pipeline import post, rows

REPO = Path(__file__).resolve().parents[2]


def wait_for(predicate: Callable[[], Any], timeout: float, what: str,
             interval: float = 0.25) -> Any:
    """Poll ``predicate`` until it returns something truthy; fail naming ``what``."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})")


class WorkerProcess:
    """``python -m logowatch.cli detect ...`` with its output in a file (a pipe could fill up
    and stall a long-running worker)."""

    def __init__(self, log_path: Path, argv: list[str], env: dict[str, str]) -> None:
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in wait()/kill()
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     text=True, env=env, cwd=REPO)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            if self.proc.poll() is not None:
                self._log.close()

    def kill(self) -> None:
        if self.alive():
            self.proc.kill()
            self.proc.wait(timeout=30)
        self._log.close()


def detect(bundle: Path, bootstrap: str, db: str, topic: str, group: str, log_path: Path,
           *extra: str, allow: list[str] | None = None,
           env: dict[str, str] | None = None) -> WorkerProcess:
    argv = [sys.executable, "-m", "logowatch.cli", "detect", "--model", str(bundle),
            "--bootstrap-servers", bootstrap, "--database-url", db, "--topic", topic,
            "--group", group, "--batch-size", "8", "--max-wait-ms", "100",
            "--fetch-workers", "4", "--drain-timeout", "10"]
    for host in allow or []:
        argv += ["--allow-host", host]
    if "--metrics-port" not in extra:
        argv += ["--metrics-port", "0"]
    argv += list(extra)
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "LOGOWATCH_", "INSTAGRAM_")) and k != "DATABASE_URL"}
    base.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    base.update(env or {})
    return WorkerProcess(log_path, argv, base)


def image_posts(server: ImageServer, images: list[tuple[str, bytes]], n: int, prefix: str,
                delay: float = 0.0) -> list[tuple[bytes, bytes]]:
    """``n`` posts whose images the server answers (optionally after ``delay`` seconds)."""
    records = []
    for i in range(n):
        body = images[i % len(images)][1]
        path = f"/{prefix}/{i}.jpg"
        if delay:
            def handler(req, body: bytes = body) -> None:  # type: ignore[no-untyped-def]
                time.sleep(delay)
                req.send_response(200)
                req.send_header("Content-Type", "image/jpeg")
                req.send_header("Content-Length", str(len(body)))
                req.end_headers()
                req.wfile.write(body)

            server.routes[path] = handler
            url = server.url(path)
        else:
            url = server.add(path, body)
        records.append(post(f"{prefix}-{i}", url, caption=f"#acme {prefix} {i}"))
    return records


def count(db: str, prefix: str) -> int:
    return int(rows(db, "SELECT count(*) FROM posts WHERE post_id LIKE :p",
                    p=f"{prefix}-%")[0][0])


def check_complete(db: str, ids: list[str], status: str = "ok") -> None:
    """Every id has exactly one post row (with ``status``) and one detection row per brand."""
    posts = rows(db, "SELECT post_id, image_status FROM posts WHERE post_id = ANY(:ids)",
                 ids=ids)
    assert sorted(p for p, _ in posts) == sorted(ids), "missing or extra post rows"
    assert {s for _, s in posts} <= {status}, sorted({s for _, s in posts})
    per_post = rows(db, "SELECT post_id, brand, count(*) FROM detections "
                        "WHERE post_id = ANY(:ids) GROUP BY post_id, brand", ids=ids)
    assert len(per_post) == len(ids) * len(BRANDS), "a detection row is missing"
    assert {c for _, _, c in per_post} == {1}, "a detection row is duplicated"
    assert {b for _, b, _ in per_post} == set(BRANDS)


def lag(bootstrap: str, group: str, topic: str) -> int:
    """End offsets minus the group's committed offsets, summed over the topic's partitions
    (-1 while the group's coordinator is not known yet, or while a loaded broker answers
    metadata without itself: a passing state, not the test's verdict)."""
    try:
        admin = KafkaAdminClient(bootstrap_servers=bootstrap)
        consumer = KafkaConsumer(bootstrap_servers=bootstrap)
    except KafkaError:
        return -1
    try:
        committed = admin.list_group_offsets({group: None}).get(group, {})
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in parts]
        ends = consumer.end_offsets(tps)
        total = 0
        for tp in tps:
            done = committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
            total += ends[tp] - done
        return total
    except KafkaError:
        return -1
    finally:
        consumer.close()
        admin.close()


def committed(bootstrap: str, group: str) -> dict[int, int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {tp.partition: om.offset
                for tp, om in admin.list_group_offsets({group: None}).get(group, {}).items()}
    finally:
        admin.close()


def wait_lag_zero(bootstrap: str, group: str, topic: str, timeout: float = 240) -> None:
    wait_for(lambda: lag(bootstrap, group, topic) == 0, timeout, f"lag of {group} to reach 0")


def http_status(url: str) -> int | None:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
    except OSError:
        return None


def traceback_from_our_code(output: str) -> bool:
    """True when a logged traceback has a frame in logowatch's own packages (kafka-python
    may log one of its own while its sockets close at shutdown; that is not ours)."""
    return re.search(r'File ".*/(workers|ingest|detector|analytics)/', output) is not None


Handler = Callable[[socket.socket], None]


class RawServer:
    """Accepts TCP connections on ``host`` and runs ``handler`` on each; counts connections,
    bytes sent and how long each connection lasted (until the client hung up)."""

    def __init__(self, handler: Handler, host: str = "127.0.0.1", port: int = 0) -> None:
        self.handler = handler
        self.sock = socket.create_server((host, port))
        self.host, self.port = self.sock.getsockname()[:2]
        self.accepted = 0
        self.sent = 0
        self.durations: list[float] = []
        self._lock = threading.Lock()
        threading.Thread(target=self._serve, daemon=True).start()

    @property
    def hostport(self) -> str:
        return f"{self.host}:{self.port}"

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted += 1
            threading.Thread(target=self._run, args=(conn,), daemon=True).start()

    def _run(self, conn: socket.socket) -> None:
        started = time.monotonic()
        try:
            self.handler(conn)
        except OSError:
            pass  # the client hung up: what a hostile server sees when the fetcher gives up
        finally:
            with self._lock:
                self.durations.append(time.monotonic() - started)
            conn.close()

    def send(self, conn: socket.socket, data: bytes) -> None:
        conn.sendall(data)
        with self._lock:
            self.sent += len(data)

    def close(self) -> None:
        self.sock.close()


def read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
