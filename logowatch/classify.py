"""``logowatch classify``: score a folder, a list or some URLs now, without Kafka or Postgres.

One row per image and brand, CSV or JSON Lines, written as each image finishes. Images run
through the worker's own steps (``logowatch.scoring``), so a row has the score the worker would
store for the same bundle and image. With ``--out``, a second run skips the images already
there (a killed run loses at most the image it was writing), so a long list can be resumed.

Exit codes: 0 every image scored; 3 some images failed (their rows say why); 1 nothing could
be scored, or a one-line error; 2 a bad flag.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from collections.abc import Iterator
from concurrent.futures import FIRST_COMPLETED, Future, wait
from pathlib import Path
from typing import IO, Any

from logowatch import commands
from workers.errors import WorkerError

FIELDS = ("image", "brand", "score", "present", "region", "status", "error", "model_version")
IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".gif", ".webp", ".bmp", ".tif", ".tiff"}
SOME_FAILED, NONE_SCORED = 3, 1


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "classify", help="score images in folders, URL lists or URLs (CSV or JSON Lines)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", metavar="DIR | FILE.txt | URL",
                   help="a folder (its images, recursively), a text file (one URL or path a "
                   "line; # starts a comment), an http(s) URL or an image file")
    commands.add_scoring_flags(p, max_wait_ms=50, fetch_workers=8)
    p.add_argument("--out", type=Path,
                   help="write here instead of stdout; images already in it are skipped")
    p.add_argument("--format", choices=["csv", "jsonl"],
                   help="default: jsonl for an --out ending .jsonl or .json, else csv")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run_classify)


def inputs(args: list[str]) -> Iterator[str]:
    """Every image named by the arguments, in order: URLs as given, files as paths."""
    for arg in args:
        if arg.startswith(("http://", "https://")):
            yield arg
            continue
        path = Path(arg)
        if path.is_dir():
            yield from (str(p) for p in sorted(path.rglob("*"))
                        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.suffix.lower() == ".txt":
            try:
                lines = path.read_text().splitlines()
            except (OSError, UnicodeDecodeError) as exc:
                raise WorkerError(f"cannot read {arg}: {exc}") from None
            yield from (line.strip() for line in lines
                        if line.strip() and not line.lstrip().startswith("#"))
        elif path.is_file():
            yield arg
        else:
            raise WorkerError(f"{arg} is not a folder, a .txt list, an image file or a URL")


def _work(name: str) -> Any:
    from workers.config import ImageStatus
    from workers.stages import Work

    if name.startswith(("http://", "https://")):
        return Work(None, url=name)
    try:
        return Work(None, data=Path(name).read_bytes())
    except OSError as exc:
        return Work(None, status=ImageStatus.FETCH_FAILED, error=f"cannot read: {exc.strerror}")


class Output:
    """Rows of finished images, flushed per image so a killed run can be resumed."""

    def __init__(self, out: Path | None, fmt: str, brands: list[str], version: str) -> None:
        self.fmt, self.brands, self.version = fmt, brands, version
        self.done: set[str] = set()
        if out is None:
            self.stream: IO[str] = sys.stdout
        else:
            try:
                self.done = _resume(out, fmt, len(brands), version)
                self.stream = open(out, "a", newline="")  # noqa: SIM115 - closed by close()
            except OSError as exc:
                raise WorkerError(f"cannot write {out}: {exc.strerror or exc}") from None
        if fmt == "csv" and (out is None or self.stream.tell() == 0):
            self._write([dict(zip(FIELDS, FIELDS, strict=True))])

    def image(self, name: str, scored: Any) -> None:
        base = {"image": name, "status": scored.status, "error": scored.error,
                "model_version": self.version}
        found = {d["brand"]: d for d in scored.detections}
        self._write([{**base, "brand": b, "score": found.get(b, {}).get("score"),
                      "present": found.get(b, {}).get("present"),
                      "region": found.get(b, {}).get("region")} for b in self.brands])

    def _write(self, rows: list[dict[str, Any]]) -> None:
        buffer = io.StringIO()
        if self.fmt == "jsonl":
            for row in rows:
                buffer.write(json.dumps({k: row[k] for k in FIELDS}) + "\n")
        else:
            writer = csv.writer(buffer, lineterminator="\n")
            for row in rows:
                writer.writerow(_cell(row[k]) for k in FIELDS)
        self.stream.write(buffer.getvalue())  # one write per image
        self.stream.flush()

    def close(self) -> None:
        if self.stream is not sys.stdout:
            self.stream.close()


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, list):
        return " ".join(map(str, value))
    return value


def _resume(out: Path, fmt: str, per_image: int, version: str) -> set[str]:
    """The images ``out`` already has every row of; a partly written last image is cut off.
    Refuses a file of another format or model version (one file, one model)."""
    if not out.exists() or out.stat().st_size == 0:
        return set()
    text = out.read_bytes().decode("utf-8", "replace")
    lines = text.splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines.pop()
    header = 1 if fmt == "csv" else 0
    if fmt == "csv" and (not lines or lines[0].rstrip("\n") != ",".join(FIELDS)):
        raise WorkerError(f"{out} is not a classify CSV (header differs); pass another --out")
    try:
        rows = ([dict(zip(FIELDS, r, strict=True)) for r in csv.reader(lines[header:])]
                if fmt == "csv" else [json.loads(line) for line in lines])
        if not all(isinstance(r, dict) and {"image", "model_version"} <= set(r) for r in rows):
            raise ValueError("not a classify row")
    except (ValueError, TypeError):
        raise WorkerError(f"{out} is not classify {fmt} output; pass another --out") from None
    versions = {r["model_version"] for r in rows}
    if versions - {version}:
        raise WorkerError(f"{out} has rows of model {', '.join(sorted(versions))}, this is "
                          f"{version}: pass another --out")
    counts: dict[str, int] = {}
    for r in rows:
        counts[r["image"]] = counts.get(r["image"], 0) + 1
    # rows of one image are written together, so only the last image can be incomplete
    keep = header + len(rows)
    if rows and counts[rows[-1]["image"]] < per_image:
        keep -= counts.pop(rows[-1]["image"])
    size = sum(len(line.encode()) for line in lines[:keep])
    if size != out.stat().st_size:
        with open(out, "r+b") as f:
            f.truncate(size)
    return set(counts)


def run_classify(args: argparse.Namespace) -> int:
    from workers.metrics import StageMetrics

    fmt = args.format or ("jsonl" if args.out and args.out.suffix in (".jsonl", ".json")
                          else "csv")
    names = list(dict.fromkeys(inputs(args.inputs)))
    if not names:
        raise WorkerError("no images found in " + " ".join(args.inputs))
    scorer = commands.start_scorer(args, StageMetrics(), max_queue=4 * args.batch_size)
    try:
        output = Output(args.out, fmt, scorer.bundle.brands, scorer.bundle.version)
        todo = [n for n in names if n not in output.done]
        try:
            counts = _score_all(scorer, output, todo, progress=not args.no_progress)
        finally:
            output.close()
    finally:
        scorer.close(timeout=5)
    skipped = len(names) - len(todo)
    print(f"classify: {counts['ok']} scored, {counts['failed']} failed"
          + (f", {skipped} already in {args.out}" if skipped else ""), file=sys.stderr)
    if counts["failed"] and not counts["ok"] and not skipped:
        print("classify: error: no image could be scored", file=sys.stderr)
        return NONE_SCORED
    return SOME_FAILED if counts["failed"] else 0


def _score_all(scorer: Any, output: Output, names: list[str], *,
               progress: bool) -> dict[str, int]:
    """Submits as the scorer has room, writes each image as it finishes; counts ok/failed."""
    from detector.progress import progress as progress_bar
    from logowatch.scoring import Busy

    counts = {"ok": 0, "failed": 0}
    pending: dict[Future[Any], str] = {}

    def finish(futures: set[Future[Any]]) -> None:
        for future in futures:
            scored = future.result()
            output.image(pending.pop(future), scored)
            counts["ok" if scored.status == "ok" else "failed"] += 1
            bar.update()

    with progress_bar(total=len(names), unit="img", enabled=progress) as bar:
        for name in names:
            while True:
                try:
                    (future,) = scorer.submit([_work(name)])
                    break
                except Busy as exc:
                    if not pending:  # nothing of ours is queued: the scorer itself stopped
                        raise WorkerError(f"scoring stopped: {scorer.failure or exc}") from None
                    done, _ = wait(pending, return_when=FIRST_COMPLETED)
                    finish(done)
            pending[future] = name
            finish({f for f in pending if f.done()})
        while pending:
            done, _ = wait(pending, return_when=FIRST_COMPLETED)
            finish(done)
    return counts
