"""File sources: JSONL and CSV posts, and plain lists of image URLs, from a path or stdin.

These are how collections made outside the API (exports, hand-labelled sets, a scraper's dump)
get into the stream. A bad line never stops a file: it is reported with its line number and
skipped, and the exit code says some were (see ``pipeline.EXIT_SKIPPED``).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import logging
import sys
from collections import Counter, deque
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from ingest.checkpoints import Checkpoint
from ingest.errors import IngestError
from ingest.pipeline import Batch
from ingest.records import PostRecord, RecordError, build

log = logging.getLogger(__name__)

FIELDS = ("post_id", "source", "image_url", "caption", "author", "posted_at", "permalink",
          "extra")
BATCH = 1000
MAX_LINE = 1 << 20  # bytes: a longer line (or CSV record) is one bad line, never a stopped file
MAX_RECORD_LINES = 100  # lines one quoted CSV cell may span


def url_post_id(url: str) -> str:
    """A stable id for a post known only by its image URL: the same URL gives the same id."""
    return "url:" + hashlib.sha256(url.encode("utf-8")).hexdigest()[:32]


def detect_format(path: str, given: str) -> str:
    if given != "auto":
        return given
    suffix = Path(path).suffix.lower()
    if suffix in (".csv", ".tsv"):
        return "csv"
    if suffix in (".txt", ".urls", ".list"):
        return "urls"
    return "jsonl"  # stdin and .jsonl / .ndjson / .json


def _open(path: str) -> IO[bytes]:
    if path == "-":
        return sys.stdin.buffer
    try:
        return open(path, "rb")  # closed by the batches() generator
    except OSError as exc:
        raise IngestError(f"cannot read {path}: {exc.strerror}") from None


class FileSource:
    """Posts from a JSONL, CSV or URL-list file; ``-`` reads standard input."""

    label = "file"

    def __init__(self, path: str, fmt: str = "auto", default_source: str | None = None,
                 key: str | None = None, batch_size: int = BATCH) -> None:
        self.path = path
        self.format = detect_format(path, fmt)
        if self.format == "urls":
            self.label = "urls"
        self.default_source = default_source or self.label
        self.key = key or ("stdin" if path == "-" else f"{self.label}:{Path(path).resolve()}")
        self.batch_size = batch_size

    def batches(self, start: Checkpoint) -> Iterator[Batch]:
        stream = _open(self.path)
        reader = {"jsonl": self._jsonl, "csv": self._csv, "urls": self._urls}[self.format]
        newest = start.newest_at
        batch = Batch(records=[], skipped=Counter())
        try:
            for line_no, item in reader(stream):
                if isinstance(item, str):
                    log.warning("%s line %d: %s (skipped)", self._name, line_no, item)
                    batch.skipped["invalid_line"] += 1
                    batch.bad_lines += 1
                else:
                    batch.records.append(item)
                    if item.posted_at and (newest is None or item.posted_at > newest):
                        newest = item.posted_at
                if len(batch.records) >= self.batch_size:
                    batch.checkpoint = Checkpoint({"line": line_no}, newest)
                    yield batch
                    batch = Batch(records=[], skipped=Counter())
            batch.checkpoint = Checkpoint(None, newest)
            yield batch
        finally:
            if stream is not sys.stdin.buffer:
                stream.close()

    @property
    def _name(self) -> str:
        return "stdin" if self.path == "-" else self.path

    def _build(self, fields: dict[str, Any]) -> PostRecord | str:
        fields = {k: v for k, v in fields.items() if v not in (None, "")}
        fields.setdefault("source", self.default_source)
        if "post_id" not in fields and isinstance(fields.get("image_url"), str):
            fields["post_id"] = url_post_id(fields["image_url"])
        try:
            return build(**fields)
        except RecordError as exc:
            return str(exc)

    def _jsonl(self, stream: IO[bytes]) -> Iterator[tuple[int, PostRecord | str]]:
        for line_no, text, problem in _lines(stream):
            if problem:
                yield line_no, problem
                continue
            if not text.strip():
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                yield line_no, f"not JSON ({exc.msg} at column {exc.colno})"
                continue
            if not isinstance(obj, dict):
                yield line_no, f"expected a JSON object, got {type(obj).__name__}"
                continue
            obj.pop("schema_version", None)
            yield line_no, self._build(obj)

    def _csv(self, stream: IO[bytes]) -> Iterator[tuple[int, PostRecord | str]]:
        rows = _csv_rows(_lines(stream))
        first = next(rows, None)
        if first is None:
            return  # an empty file has nothing to produce, like an empty JSONL file
        line_no, header = first
        if isinstance(header, str):
            raise IngestError(f"{self._name} line {line_no}: unreadable CSV header ({header})")
        unknown = [h for h in header if h not in FIELDS]
        if unknown:
            raise IngestError(f"{self._name}: unknown CSV column(s) {', '.join(unknown)}; "
                              f"expected some of {', '.join(FIELDS)}")
        if "image_url" not in header:
            raise IngestError(f"{self._name}: the CSV header has no image_url column")
        for line_no, row in rows:
            if isinstance(row, str):
                yield line_no, row
                continue
            if len(row) > len(header):
                yield line_no, "more cells than header columns"
                continue
            fields: dict[str, Any] = dict(zip(header, row, strict=False))
            if fields.get("extra"):
                try:
                    fields["extra"] = json.loads(fields["extra"])
                except ValueError:
                    yield line_no, "extra: is not JSON"
                    continue
            yield line_no, self._build(fields)

    def _urls(self, stream: IO[bytes]) -> Iterator[tuple[int, PostRecord | str]]:
        for line_no, text, problem in _lines(stream):
            if problem:
                yield line_no, problem
                continue
            url = text.strip()
            if not url or url.startswith("#"):
                continue
            yield line_no, self._build({"image_url": url})


def _lines(stream: IO[bytes]) -> Iterator[tuple[int, str, str]]:
    """``(number, text, problem)`` per physical line; a line that cannot be used has an empty
    text and says why. A line longer than ``MAX_LINE`` is read past, never held whole."""
    line_no = 0
    while raw := stream.readline(MAX_LINE + 1):
        line_no += 1
        if len(raw) > MAX_LINE and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = stream.readline(MAX_LINE)
            yield line_no, "", f"longer than {MAX_LINE // 1024} KiB"
            continue
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield line_no, "", "not UTF-8"
            continue
        if "\x00" in text:
            yield line_no, "", "contains a NUL byte"
            continue
        yield line_no, text.removeprefix("\ufeff") if line_no == 1 else text, ""


def _csv_rows(lines: Iterator[tuple[int, str, str]]) -> Iterator[tuple[int, list[str] | str]]:
    """CSV rows (or why a line is not one), numbered by the line each starts on.

    A quoted cell may span lines (a caption with line breaks), up to ``MAX_RECORD_LINES`` lines
    and ``MAX_LINE`` bytes. A quote that never closes within that, or a record that is not
    valid CSV, costs its first line only: the lines it took in are read again as rows.
    """
    again: deque[tuple[int, str, str]] = deque()

    def take() -> tuple[int, str, str] | None:
        return again.popleft() if again else next(lines, None)

    while (line := take()) is not None:
        line_no, text, problem = line
        if problem:
            yield line_no, problem
            continue
        if not text.strip():
            continue
        taken = [line]
        record = text
        while record.count('"') % 2 and len(taken) < MAX_RECORD_LINES and len(record) <= MAX_LINE:
            following = take()
            if following is None:
                break
            taken.append(following)
            if following[2]:
                break
            record += following[1]
        rows = None
        if not record.count('"') % 2 and len(record) <= MAX_LINE:
            try:
                rows = list(csv.reader(io.StringIO(record, newline=""), strict=True))
            except csv.Error:
                rows = None
        if rows is not None and len(rows) == 1:
            yield line_no, rows[0]
            continue
        again.extendleft(reversed(taken[1:]))
        yield line_no, ("a quote that is never closed" if len(taken) > 1 or record.count('"') % 2
                        else "not valid CSV (a quote inside a cell?)")
