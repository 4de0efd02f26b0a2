"""Start-up and operator errors: each is one clear line on stderr and a documented exit code
(1 error, 2 bad flag, 3 for ingest's skipped input lines), never a traceback or a page of
client logs, and never a wait without end (each process is waited on with a generous deadline
that only turns a hang into a failure)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from logowatch.services import free_port
from tests.reliability.harness import REPO

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def _logowatch(*argv: str, timeout: float = 300) -> tuple[int, list[str]]:
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("KAFKA_", "LOGOWATCH_")) and k != "DATABASE_URL"}
    env.update(TF_CPP_MIN_LOG_LEVEL="3", PYTHONPATH=str(REPO))
    done = subprocess.run([sys.executable, "-m", "logowatch.cli", *argv], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=timeout)
    # TensorFlow's native start-up lines are the command's to keep out (detector.tflog)
    return done.returncode, [line for line in (done.stdout + done.stderr).splitlines()
                             if line.strip()]


@pytest.fixture
def busy_port() -> Iterator[int]:
    with socket.create_server(("127.0.0.1", 0)) as sock:
        yield sock.getsockname()[1]


def _detect(bundle: Path, *extra: str) -> list[str]:
    return ["detect", "--model", str(bundle), "--database-url",
            "postgresql+psycopg2://nobody@127.0.0.1:1/none", *extra]


def _one_error_line(lines: list[str], command: str, text: str) -> None:
    """The last line is the error; before it only our own start-up lines (``detect`` warns
    loudly that the test bundle has random weights), no traceback, no Kafka client logs."""
    assert lines[-1].startswith(f"logowatch {command}: error: "), lines
    assert text in lines[-1], lines
    assert sum("error" in line.lower() for line in lines) == 1, lines
    assert not any("Traceback" in line or " kafka." in line for line in lines), lines


def test_detect_with_an_unreachable_broker_says_so_in_one_line(tiny_bundle: Path) -> None:
    port = free_port()
    code, lines = _logowatch(*_detect(tiny_bundle, "--bootstrap-servers", f"127.0.0.1:{port}",
                                      "--metrics-port", "0"))
    assert code == 1
    _one_error_line(lines, "detect", f"cannot reach Kafka at 127.0.0.1:{port}")


@pytest.mark.parametrize("port", ["70000", "-1", "http"])
def test_a_metrics_port_out_of_range_is_a_bad_flag(tiny_bundle: Path, port: str) -> None:
    code, lines = _logowatch(*_detect(tiny_bundle, "--metrics-port", port))
    assert code == 2
    assert len(lines) == 1 and "--metrics-port" in lines[0], lines


def test_a_metrics_port_in_use_is_one_line(tiny_bundle: Path, busy_port: int) -> None:
    code, lines = _logowatch(*_detect(tiny_bundle, "--bootstrap-servers", "127.0.0.1:1",
                                      "--metrics-port", str(busy_port)))
    assert code == 1
    _one_error_line(lines, "detect", f"cannot serve metrics on 127.0.0.1:{busy_port}")


def test_once_on_a_topic_that_does_not_exist_ends_with_one_line(
    tiny_bundle: Path, bootstrap: str, migrated_db: str,
) -> None:
    topic = f"missing-{uuid.uuid4().hex[:8]}"
    code, lines = _logowatch("detect", "--model", str(tiny_bundle), "--bootstrap-servers",
                             bootstrap, "--database-url", migrated_db, "--topic", topic,
                             "--metrics-port", "0", "--once")
    assert code == 1
    _one_error_line(lines, "detect", f"topic {topic!r} does not exist")


def test_ingest_with_an_unreachable_broker_prints_one_line_and_no_client_logs(
    tmp_path: Path,
) -> None:
    feed = tmp_path / "posts.jsonl"
    feed.write_text('{"post_id": "a", "source": "t", "image_url": "http://example.com/a.jpg"}\n')
    port = free_port()
    code, lines = _logowatch("ingest", "file", str(feed), "--no-checkpoint",
                             "--bootstrap-servers", f"127.0.0.1:{port}")
    assert code == 1
    assert len(lines) == 1, lines
    _one_error_line(lines, "ingest", f"cannot reach Kafka at 127.0.0.1:{port}")


def test_ingest_with_its_metrics_port_in_use_prints_one_line(
    tmp_path: Path, busy_port: int,
) -> None:
    feed = tmp_path / "posts.jsonl"
    feed.write_text("")
    code, lines = _logowatch("ingest", "file", str(feed), "--no-checkpoint",
                             "--metrics-port", str(busy_port))
    assert code == 1
    _one_error_line(lines, "ingest", f"cannot serve metrics on 127.0.0.1:{busy_port}")


def test_ingest_skips_a_timestamp_out_of_range_with_its_documented_exit_code(
    tmp_path: Path, bootstrap: str, topic: str,
) -> None:
    feed = tmp_path / "posts.jsonl"
    feed.write_text(
        '{"post_id": "y1", "source": "t", "image_url": "http://example.com/a.jpg", '
        '"posted_at": "0001-01-01T00:00:00+14:00"}\n'
        '{"post_id": "ok", "source": "t", "image_url": "http://example.com/b.jpg"}\n')
    code, lines = _logowatch("ingest", "file", str(feed), "--no-checkpoint",
                             "--bootstrap-servers", bootstrap, "--topic", topic)
    assert code == 3, lines  # docs/ingest.md: invalid input lines skipped
    assert not any("Traceback" in line for line in lines), lines
    assert any("out of range" in line for line in lines), lines
