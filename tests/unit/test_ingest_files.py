"""File sources keep the good lines, name the bad ones by line number, and never crash."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from ingest.checkpoints import Checkpoint
from ingest.errors import IngestError
from ingest.files import FileSource, url_post_id


def _read(path: Path, fmt: str = "auto") -> tuple[list[str], int, list[str]]:
    source = FileSource(str(path), fmt)
    ids, bad = [], 0
    for batch in source.batches(Checkpoint()):
        ids += [r.post_id for r in batch.records]
        bad += batch.bad_lines
    return ids, bad, []


def test_jsonl_keeps_good_lines_and_reports_bad_ones_by_number(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    lines = [
        json.dumps({"post_id": "a", "image_url": "https://x.example/a.jpg", "caption": "#Nike"}),
        "{not json",
        "",
        json.dumps({"post_id": "b", "image_url": "file:///etc/passwd"}),
        json.dumps(["a", "list"]),
        json.dumps({"image_url": "https://x.example/c.jpg", "posted_at": "2024-05-01T12:00:00Z"}),
        json.dumps({"post_id": "d", "image_url": "https://x.example/d.jpg", "likes": 3}),
    ]
    path = tmp_path / "posts.jsonl"
    path.write_text("\n".join(lines) + "\n")
    ids, bad, _ = _read(path)
    assert ids == ["a", url_post_id("https://x.example/c.jpg")]
    assert bad == 4
    messages = [r.getMessage() for r in caplog.records]
    assert any("line 2: not JSON" in m for m in messages)
    assert any("line 4: image_url: must be an http or https URL" in m for m in messages)
    assert any("line 5: expected a JSON object" in m for m in messages)
    assert any("line 7: likes: is not a field" in m for m in messages)


def test_csv_rows_become_records_and_bad_rows_are_skipped(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "posts.csv"
    path.write_text(
        "\ufeffpost_id,image_url,caption,posted_at\n"
        "p1,https://x.example/1.jpg,\"hello, #world\",2024-05-01T12:00:00+00:00\n"
        "p2,not a url,,\n"
        "p3,https://x.example/3.jpg,,yesterday\n"
        "p4,https://x.example/4.jpg,,\n"
    )
    ids, bad, _ = _read(path)
    assert ids == ["p1", "p4"] and bad == 2
    assert any("line 3: image_url" in r.getMessage() for r in caplog.records)


def test_csv_with_unknown_columns_is_a_clear_fatal_error(tmp_path: Path) -> None:
    path = tmp_path / "posts.csv"
    path.write_text("id,url\n1,https://x.example/1.jpg\n")
    with pytest.raises(IngestError, match="unknown CSV column"):
        _read(path)


def test_url_list_derives_stable_ids_and_skips_comments_and_garbage(tmp_path: Path) -> None:
    path = tmp_path / "images.txt"
    path.write_bytes(b"# my list\nhttps://x.example/1.jpg\n\nnot-a-url\n\xff\xfe\n"
                     b"https://x.example/2.jpg\n")
    ids, bad, _ = _read(path)
    assert ids == [url_post_id("https://x.example/1.jpg"), url_post_id("https://x.example/2.jpg")]
    assert url_post_id("https://x.example/1.jpg") == url_post_id("https://x.example/1.jpg")
    assert bad == 2


def test_a_missing_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(IngestError, match="cannot read"):
        _read(tmp_path / "nope.jsonl")


def _bad_lines(caplog: pytest.LogCaptureFixture) -> dict[int, str]:
    out = {}
    for record in caplog.records:
        message = record.getMessage()
        if " line " in message and message.endswith("(skipped)"):
            number, reason = message.split(" line ", 1)[1].split(": ", 1)
            out[int(number)] = reason.removesuffix(" (skipped)")
    return out


ROW = "p{0},https://x.example/{0}.jpg,caption {0}\n"


@pytest.mark.parametrize("bad, reason", [
    ('p2,https://x.example/2.jpg,"' + "x" * (11 << 20) + '"\n', "longer than 1024 KiB"),
    ('p2,https://x.example/2.jpg,"never closed\n', "a quote that is never closed"),
    ("p2,https://x.example/2.jpg,nul\x00here\n", "contains a NUL byte"),
    ('p2,https://x.example/2.jpg,"quoted"tail\n', "not valid CSV (a quote inside a cell?)"),
], ids=["oversized", "broken-quote", "nul", "quote-inside"])
def test_a_bad_csv_line_costs_that_line_only_with_its_number(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str, reason: str) -> None:
    caplog.set_level(logging.WARNING)
    path = tmp_path / "posts.csv"
    rows = [ROW.format(n) for n in range(1, 12)]
    rows[1] = bad  # p2, on line 3 of the file (after the header)
    rows[5] = 'p6,https://x.example/6.jpg,"a caption\nover ""two"" lines"\n'
    path.write_text("post_id,image_url,caption\n" + "".join(rows))
    ids, bad_count, _ = _read(path)
    assert ids == [f"p{n}" for n in range(1, 12) if n != 2]
    assert bad_count == 1
    assert _bad_lines(caplog) == {3: reason}


@pytest.mark.parametrize("bad, reason", [
    ('{"post_id": "p2", "caption": "' + "x" * (11 << 20) + '"}\n', "longer than 1024 KiB"),
    ('{"post_id": "p2", "image_url": "https://x.example/2.jpg"}\x00\n', "contains a NUL byte"),
], ids=["oversized", "nul"])
def test_a_bad_jsonl_line_costs_that_line_only_with_its_number(
        tmp_path: Path, caplog: pytest.LogCaptureFixture, bad: str, reason: str) -> None:
    caplog.set_level(logging.WARNING)
    lines = [json.dumps({"post_id": f"p{n}", "image_url": f"https://x.example/{n}.jpg"}) + "\n"
             for n in range(1, 5)]
    lines[1] = bad
    path = tmp_path / "posts.jsonl"
    path.write_text("".join(lines))
    ids, bad_count, _ = _read(path)
    assert ids == ["p1", "p3", "p4"] and bad_count == 1
    assert _bad_lines(caplog) == {2: reason}


@pytest.mark.parametrize("name", ["empty.csv", "empty.jsonl", "empty.txt"])
def test_an_empty_file_of_any_format_produces_nothing_and_is_no_error(
        tmp_path: Path, name: str) -> None:
    path = tmp_path / name
    path.write_text("")
    assert _read(path) == ([], 0, [])


def test_a_metrics_file_that_cannot_be_written_is_one_line_before_any_work(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from logowatch.cli import main

    path = tmp_path / "p.jsonl"
    path.write_text("")
    code = main(["ingest", "file", str(path), "--no-checkpoint", "--bootstrap-servers",
                 "127.0.0.1:9", "--metrics-file", str(tmp_path / "no" / "such" / "m.prom")])
    err = capsys.readouterr().err
    assert code == 1
    assert err.strip().splitlines() == [
        f"logowatch ingest: error: cannot write metrics to {tmp_path}/no/such/m.prom: "
        "No such file or directory"]
