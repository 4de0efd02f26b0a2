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
from collections import Counter
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
        for line_no, raw in enumerate(stream, start=1):
            text = _decode(raw, line_no)
            if text is None:
                yield line_no, "not UTF-8"
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
        text = io.TextIOWrapper(stream, encoding="utf-8-sig", errors="replace", newline="")
        reader = csv.DictReader(text)
        header = reader.fieldnames or []
        unknown = [h for h in header if h not in FIELDS]
        if unknown:
            raise IngestError(f"{self._name}: unknown CSV column(s) {', '.join(unknown)}; "
                              f"expected some of {', '.join(FIELDS)}")
        if "image_url" not in header:
            raise IngestError(f"{self._name}: the CSV header has no image_url column")
        try:
            for row in reader:
                line_no = reader.line_num
                if None in row:
                    yield line_no, "more cells than header columns"
                    continue
                fields: dict[str, Any] = dict(row)
                if fields.get("extra"):
                    try:
                        fields["extra"] = json.loads(fields["extra"])
                    except ValueError:
                        yield line_no, "extra: is not JSON"
                        continue
                yield line_no, self._build(fields)
        except csv.Error as exc:
            yield reader.line_num, f"unreadable CSV ({exc}); the rest of the file is skipped"
        finally:
            text.detach()

    def _urls(self, stream: IO[bytes]) -> Iterator[tuple[int, PostRecord | str]]:
        for line_no, raw in enumerate(stream, start=1):
            text = _decode(raw, line_no)
            if text is None:
                yield line_no, "not UTF-8"
                continue
            url = text.strip()
            if not url or url.startswith("#"):
                continue
            yield line_no, self._build({"image_url": url})


def _decode(raw: bytes, line_no: int) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return None
    return text.removeprefix("\ufeff") if line_no == 1 else text

