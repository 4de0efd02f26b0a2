"""End to end: real `logowatch detect` processes against the real broker and Postgres.

Each configuration gets a fresh topic and consumer group and fresh worker processes, so no
state leaks between runs. A run has three phases:

1. warm-up: one batch per process, so tracing the model and opening connections are not timed;
2. throughput: N records produced at once (a backlog); images/s = N / (last commit - first send),
   which includes filling the pipeline, as a worker catching up on lag would see it;
3. latency: records sent at a fixed fraction of that throughput (open loop) for a few seconds;
   p50 / p95 / p99 of send → commit. Below saturation is where latency means something.

Peak RSS is the kernel's high-water mark (VmHWM) of each worker process, read before it stops.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.services import Services, percentiles
from logowatch.services import REPO_ROOT, free_port


@dataclass
class RunSpec:
    batch_size: int
    records: int
    tiles: bool = False
    processes: int = 1
    latency_seconds: float = 10.0
    latency_load: float = 0.5
    max_wait_ms: int = 200
    fetch_workers: int = 16
    timeout: float = 600.0
    bundle: Path | None = None  # instead of the run's bundle (the logo section's)


class Child:
    """A `python -m logowatch.cli ...` child whose `/readyz` on ``port`` says it is ready."""

    def __init__(self, argv: list[str], port: int, log_path: Path,
                 env: dict[str, str] | None = None) -> None:
        self.port = port
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "TF_FORCE_GPU_ALLOW_GROWTH": "true",
               "PYTHONPATH": os.pathsep.join([str(REPO_ROOT), os.environ.get("PYTHONPATH", "")]),
               **(env or {})}
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - closed in stop()
        self.started = time.perf_counter()
        self.proc = subprocess.Popen([sys.executable, "-m", "logowatch.cli", *argv],
                                     stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, cwd=REPO_ROOT)
        self.ready_s: float | None = None

    def alive(self) -> bool:
        return self.proc.poll() is None

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=1) as r:
                return r.status == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"child exited with {self.proc.returncode}: {self.tail()}")
            if self.ready():
                self.ready_s = round(time.perf_counter() - self.started, 2)
                return
            time.sleep(0.2)
        raise RuntimeError(f"child not ready within {timeout:.0f}s: {self.tail()}")

    def peak_rss_mib(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024, 1)
        except OSError:
            pass
        import psutil  # not Linux: the current RSS is the best there is

        try:
            return round(psutil.Process(self.proc.pid).memory_info().rss / 2**20, 1)
        except psutil.Error:
            return None

    def tail(self, n: int = 1500) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-n:]

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()


class WorkerProcess(Child):
    """One `logowatch detect` child with its own metrics port (for /readyz)."""

    def __init__(self, bundle: Path, services: Services, topic: str, group: str, host: str,
                 spec: RunSpec, log_path: Path, *, once: bool = False) -> None:
        port = free_port()
        argv = ["detect", "--model", str(bundle),
                "--bootstrap-servers", str(services.bootstrap),
                "--database-url", str(services.database_url), "--topic", topic,
                "--group", group, "--batch-size", str(spec.batch_size),
                "--max-wait-ms", str(spec.max_wait_ms),
                "--fetch-workers", str(spec.fetch_workers), "--allow-host", host,
                "--metrics-port", str(port), "--drain-timeout", "30"]
        argv.append("--tiles" if spec.tiles else "--no-tiles")
        if once:
            argv.append("--once")
        super().__init__(argv, port, log_path)


def run(spec: RunSpec, *, services: Services, bundle: Path, server: Any, logs: Path,
        pid_hook: Any = None) -> dict[str, Any]:
    """One configuration: start `spec.processes` workers, warm up, backlog, paced latency."""
    topic = services.create_topic()
    tag = f"b{spec.batch_size}{'t' if spec.tiles else ''}p{spec.processes}-{topic[-4:]}"
    workers = [WorkerProcess(spec.bundle or bundle, services, topic, f"{topic}-g", server.host,
                             spec, logs / f"worker-{tag}-{i}.log")
               for i in range(spec.processes)]
    result: dict[str, Any] = {"batch_size": spec.batch_size, "tiles": spec.tiles,
                              "processes": spec.processes}
    try:
        for w in workers:
            w.wait_ready(spec.timeout)
        result["startup_s"] = [w.ready_s for w in workers]
        if pid_hook is not None:
            pid_hook([w.proc.pid for w in workers])

        def alive() -> bool:
            return all(w.alive() for w in workers)

        start = 10**6
        warm = spec.batch_size * spec.processes
        services.produce(topic, f"{tag}-warm", [server.url(start + i) for i in range(warm)])
        if services.wait_for(f"{tag}-warm", warm, spec.timeout, alive) < warm:
            raise RuntimeError(f"warm-up did not finish: {workers[0].tail()}")

        first = services.produce(topic, f"{tag}-bulk",
                                 [server.url(i) for i in range(spec.records)])
        got = services.wait_for(f"{tag}-bulk", spec.records, spec.timeout, alive)
        commits, _ = services.timings(f"{tag}-bulk")
        elapsed = float(commits.max() - first) if len(commits) else float("nan")
        result.update(records=spec.records, stored=got, seconds=round(elapsed, 2),
                      images_per_s=got / elapsed if elapsed > 0 else 0.0,
                      statuses=services.image_statuses(f"{tag}-bulk"))

        if spec.latency_seconds > 0 and result["images_per_s"] > 0:
            rate = spec.latency_load * result["images_per_s"]
            n = max(3, round(rate * spec.latency_seconds))
            services.produce(topic, f"{tag}-lat", [server.url(2 * start + i) for i in range(n)],
                             rate=rate)
            # A saturated configuration (a big padded batch per lone record) never catches
            # up; what did not arrive in time is reported as such, not waited for.
            lat_got = services.wait_for(f"{tag}-lat", n, max(30.0, 3 * spec.latency_seconds),
                                        alive)
            commits, sent = services.timings(f"{tag}-lat")
            result["latency"] = {"offered_per_s": round(rate, 2), "sent": n,
                                 "stored": lat_got, "clock": "commit" if
                                 services.commit_timestamps else "transaction start",
                                 **percentiles(commits - sent)}
        result["peak_rss_mib"] = [w.peak_rss_mib() for w in workers]
    finally:
        for w in workers:
            w.stop()
    return result
