"""`logowatch ingest file|urls` against the real broker and Postgres: exact records, honest
summaries and exit codes, and nothing produced twice across runs."""

from __future__ import annotations

import io
import json
import logging
import sys
import uuid
from pathlib import Path

import pytest
from kafka import KafkaConsumer

from ingest.files import url_post_id
from ingest.records import parse
from logowatch.cli import main

pytestmark = pytest.mark.integration


def consume_all(bootstrap: str, topic: str, idle_ms: int = 2500) -> list[tuple[bytes, bytes]]:
    consumer = KafkaConsumer(topic, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=idle_ms, group_id=None)
    out = [(m.key, m.value) for m in consumer]
    consumer.close()
    return out


def _args(bootstrap: str, topic: str, db: str, *more: str) -> list[str]:
    return [*more, "--bootstrap-servers", bootstrap, "--topic", topic, "--database-url", db]


def test_file_with_good_and_bad_lines_produces_exactly_the_good_ones(
        tmp_path: Path, bootstrap: str, topic: str, migrated_db: str,
        capsys: pytest.CaptureFixture[str]) -> None:
    good = [{"post_id": f"f{i}", "image_url": f"https://x.example/{i}.jpg",
             "caption": f"post {i} #Brand @fan{i}", "posted_at": "2024-05-01T12:00:00Z"}
            for i in range(3)]
    lines = [json.dumps(good[0]), "{broken", json.dumps(good[1]),
             json.dumps({"post_id": "x", "image_url": "javascript:alert(1)"}), json.dumps(good[2])]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n")

    code = main(["ingest", "file", str(path), *_args(bootstrap, topic, migrated_db)])
    out, err = capsys.readouterr()
    assert code == 3
    assert "seen 5: produced 3, known 0, skipped 2 (invalid_line 2), failed 0" in out
    assert "Traceback" not in err
    messages = consume_all(bootstrap, topic)
    records = sorted((parse(v) for _, v in messages), key=lambda r: r.post_id)
    assert [r.post_id for r in records] == ["f0", "f1", "f2"]
    assert all(k == r.encode() for (k, _), r in zip(sorted(messages), ["f0", "f1", "f2"],
                                                       strict=True))
    assert records[1].hashtags == ["brand"] and records[1].mentions == ["fan1"]

    # A rerun (a restart, or the same file again) produces nothing twice.
    code = main(["ingest", "file", str(path), *_args(bootstrap, topic, migrated_db)])
    out, _ = capsys.readouterr()
    assert code == 3 and "produced 0, known 3, skipped 2 (invalid_line 2)" in out
    assert len(consume_all(bootstrap, topic)) == 3


def test_clean_csv_exits_zero(tmp_path: Path, bootstrap: str, topic: str, migrated_db: str,
                              capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "posts.csv"
    path.write_text("post_id,image_url,author\nc1,https://x.example/1.jpg,ann\n"
                    "c2,https://x.example/2.jpg,bob\n")
    prom = tmp_path / "ingest.prom"
    assert main(["ingest", "file", str(path), *_args(bootstrap, topic, migrated_db),
                 "--metrics-file", str(prom)]) == 0
    assert 'logowatch_ingest_posts_produced_total{source="file"}' in prom.read_text()
    assert "produced 2, known 0, skipped 0, failed 0" in capsys.readouterr().out
    assert sorted(k for k, _ in consume_all(bootstrap, topic)) == [b"c1", b"c2"]


def test_url_list_from_stdin_without_a_database(
        bootstrap: str, topic: str, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    data = b"https://x.example/a.jpg\nhttps://x.example/b.jpg\nnope\nhttps://x.example/a.jpg\n"
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(data)))
    code = main(["ingest", "urls", "-", "--no-checkpoint", "--bootstrap-servers", bootstrap,
                 "--topic", topic])
    out, _ = capsys.readouterr()
    assert code == 3
    assert "produced 2, known 1, skipped 1 (invalid_line 1)" in out
    records = [parse(v) for _, v in consume_all(bootstrap, topic)]
    assert sorted(r.post_id for r in records) == sorted(
        url_post_id(f"https://x.example/{c}.jpg") for c in "ab")
    assert {r.source for r in records} == {"urls"}


def test_unreachable_database_is_one_line_exit_1(
        tmp_path: Path, bootstrap: str, topic: str, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "p.jsonl"
    path.write_text(json.dumps({"post_id": "a", "image_url": "https://x.example/a.jpg"}) + "\n")
    code = main(["ingest", "file", str(path), "--bootstrap-servers", bootstrap, "--topic", topic,
                 "--database-url", "postgresql+psycopg2://nobody@127.0.0.1:9/none"])
    err = capsys.readouterr().err
    assert code == 1
    assert "checkpoint database" in err and "Traceback" not in err


def test_a_csv_with_an_oversized_cell_a_broken_quote_and_a_nul_loses_those_lines_only(
        tmp_path: Path, bootstrap: str, migrated_db: str, capsys: pytest.CaptureFixture[str],
        caplog: pytest.LogCaptureFixture) -> None:
    rows = [f"g{n},https://x.example/{n}.jpg,fine\n" for n in range(8)]
    rows[1] = 'b1,https://x.example/b1.jpg,"' + "x" * (10 << 20) + '"\n'  # line 3
    rows[3] = 'b2,https://x.example/b2.jpg,"a quote that never closes\n'  # line 5
    rows[5] = "b3,https://x.example/b3.jpg,a NUL \x00 byte\n"  # line 7
    path = tmp_path / "posts.csv"
    path.write_text("post_id,image_url,caption\n" + "".join(rows))
    fresh_topic = f"new-{uuid.uuid4().hex[:8]}"  # not created yet: the first produce makes it

    code = main(["ingest", "file", str(path), *_args(bootstrap, fresh_topic, migrated_db)])
    assert code == 3
    assert "produced 5, known 0, skipped 3 (invalid_line 3), failed 0" in capsys.readouterr().out
    assert [r.getMessage() for r in caplog.records if "(skipped)" in r.getMessage()] == [
        f"{path} line 3: longer than 1024 KiB (skipped)",
        f"{path} line 5: a quote that is never closed (skipped)",
        f"{path} line 7: contains a NUL byte (skipped)"]
    # No client log noise about the topic the first produce created.
    assert not [r for r in caplog.records if r.name.startswith("kafka") and
                r.levelno >= logging.WARNING]
    assert sorted(k.decode() for k, _ in consume_all(bootstrap, fresh_topic)) == [
        "g0", "g2", "g4", "g6", "g7"]
