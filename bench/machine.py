"""What the numbers were measured on: ratios only mean something next to the machine.

Load averages are sampled per section, because this project's machines are often shared with
other test suites and a noisy section should be visible in the JSON, not guessed afterwards.
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from typing import Any

PACKAGES = ("tensorflow", "keras", "numpy", "pillow", "kafka-python", "sqlalchemy",
            "psycopg2-binary", "requests", "psutil", "opencv-python-headless")


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _command(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def gpus() -> list[str]:
    """NVIDIA GPUs by name, from nvidia-smi (empty where there is none)."""
    line = _command(["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"])
    return [line] if line and "failed" not in line.lower() else []


def describe() -> dict[str, Any]:
    import psutil

    from logowatch.services import KAFKA_VERSION

    mem = psutil.virtual_memory().total
    return {
        "cpu_model": _cpu_model(),
        "logical_cpus": os.cpu_count(),
        "physical_cores": psutil.cpu_count(logical=False),
        "memory_gib": round(mem / 2**30, 1),
        "gpus": gpus(),
        "os": platform.platform(),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "kafka_broker": KAFKA_VERSION,
        "java": _command(["java", "-version"]),
        "git_commit": _command(["git", "rev-parse", "--short", "HEAD"]),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]
