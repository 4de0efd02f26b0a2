"""Progress bars that read well on a terminal and in a log.

On a terminal a bar redraws in place (tqdm's carriage returns). Anywhere else (a file, a pipe,
CI, a supervisor's log) carriage returns pile up into one line of kilobytes, so there each
update is a line of its own, at most one every ``LOG_INTERVAL`` seconds (and the last one when
the work ends), like ``pip`` or ``docker build`` in a log.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

LOG_INTERVAL = 10.0  # seconds between two lines in a log


class _Lines:
    """A file for tqdm that turns each redraw into one line and drops repeats and blanks."""

    def __init__(self, stream: IO[str]) -> None:
        self.stream = stream
        self.last = ""

    def write(self, text: str) -> int:
        for part in text.replace("\n", "\r").split("\r"):
            line = part.rstrip()
            if line and line != self.last:
                self.stream.write(line + "\n")
                self.last = line
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def progress(iterable: Iterable[Any] | None = None, *, enabled: bool = True,
             stream: IO[str] | None = None, **options: Any) -> Any:
    """A ``tqdm`` bar over ``iterable`` (or updated by hand), drawn for a terminal or a log;
    ``enabled=False`` draws nothing. ``options`` are tqdm's (``total``, ``desc``, ``unit``...)."""
    from tqdm import tqdm

    out = stream if stream is not None else sys.stderr
    if enabled and not out.isatty():
        # leave=True: a log keeps the final count (leave=False would clear it with "\r")
        options = {**options, "file": _Lines(out), "mininterval": LOG_INTERVAL, "leave": True,
                   "ascii": True}
    else:
        options = {**options, "file": out}
    return tqdm(iterable, disable=not enabled, **options)
