"""Progress bars: redrawn in place on a terminal, a line at a time in a log."""

from __future__ import annotations

import io

from detector import progress as progress_module
from detector.progress import progress


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_in_a_log_each_update_is_a_short_line_of_its_own(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(progress_module, "LOG_INTERVAL", 0.0)  # every update is due
    log = io.StringIO()
    for _ in progress(range(500), stream=log, desc="bottlenecks", unit="img", leave=False):
        pass
    text = log.getvalue()
    assert "\r" not in text
    lines = text.splitlines()
    assert len(lines) > 10 and max(map(len, lines)) < 120
    assert len(set(lines)) == len(lines)  # a redraw of the same state is written once
    assert lines[-1].startswith("bottlenecks: 100%") and "500/500" in lines[-1]


def test_in_a_log_lines_are_spaced_by_the_interval() -> None:
    log = io.StringIO()
    with progress(total=10_000, stream=log, desc="rescore") as bar:
        for _ in range(10_000):
            bar.update()
    lines = log.getvalue().splitlines()
    assert 1 <= len(lines) <= 3 and "10000/10000" in lines[-1]  # the start and the end


def test_a_terminal_gets_the_redrawn_bar_and_disabled_draws_nothing() -> None:
    tty = _Terminal()
    for _ in progress(range(3), stream=tty, desc="fetch"):
        pass
    assert "\r" in tty.getvalue()
    quiet = io.StringIO()
    for _ in progress(range(3), stream=quiet, enabled=False):
        pass
    assert quiet.getvalue() == ""
