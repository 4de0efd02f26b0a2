"""TensorFlow's native start-up chatter, kept out of every command's output by default.

On a machine without a GPU driver, importing TensorFlow 2.21 prints absl's banner ("All log
messages before absl::InitializeLog() is called are written to STDERR"), oneDNN, cudart_stub
and cpu_feature_guard lines, and its first device query logs "failed call to cuInit ... (303)"
at ERROR. The plain ``tensorflow`` wheel does this by itself: its bundled CUDA stub looks for a
driver (the CUDA libraries that PyTorch's wheel brings change nothing; docs/architecture.md).

``TF_CPP_MIN_LOG_LEVEL`` (0 all, 1 no INFO, 2 no WARNING, 3 no ERROR) governs what TensorFlow
logs once absl is initialised; the lines written before that ignore it. So :func:`quiet`
defaults the variable to 3 (a user's own value wins, and ``TF_CPP_MIN_LOG_LEVEL=0`` brings
everything back) and imports TensorFlow, the first time anything does, with the process's
stderr caught; afterwards the caught lines are written back except absl lines (and their
continuation lines) below that level. Nothing else is held back, only delayed to the end of the
import.
"""

from __future__ import annotations

import contextlib
import importlib.abc
import importlib.machinery
import importlib.util
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from types import ModuleType

LEVEL_VAR = "TF_CPP_MIN_LOG_LEVEL"
DEFAULT_LEVEL = "3"
_BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
_ABSL = re.compile(r"^([IWEF])\d{4} [\d:.]+ +\d+ [^\]\s]+\] ")  # "I0000 00:00:17.5  42 x.cc:1] "
_RANK = {"I": 0, "W": 1, "E": 2, "F": 3}


def level() -> int:
    try:
        return int(os.environ.get(LEVEL_VAR, DEFAULT_LEVEL))
    except ValueError:
        return 0


def kept(text: str, min_level: int) -> str:
    """``text`` without absl's banner and its lines below ``min_level`` (fatal ones stay)."""
    out: list[str] = []
    dropping = False
    for line in text.splitlines(keepends=True):
        bare = line.rstrip("\n")
        found = _ABSL.match(bare)
        if bare == _BANNER:
            dropping = False  # one line of its own
            if min_level > 0:
                continue
        elif found:
            dropping = _RANK[found.group(1)] < min(min_level, 3)
            if dropping:
                continue
        elif dropping:  # the rest of a dropped multi-line message
            continue
        out.append(line)
    return "".join(out)


@contextlib.contextmanager
def _stderr_filtered(min_level: int) -> Iterator[None]:
    """Everything written to file descriptor 2 meanwhile (C++ and Python alike) is caught and
    written back, filtered, when the block ends."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as caught:
        os.dup2(caught.fileno(), 2)
        try:
            yield
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            caught.seek(0)
            text = kept(caught.read().decode("utf-8", "replace"), min_level)
            if text:
                sys.stderr.write(text)
                sys.stderr.flush()


class _QuietLoader(importlib.abc.Loader):
    def __init__(self, loader: importlib.abc.Loader) -> None:
        self.loader = loader

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        return self.loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        with _stderr_filtered(level()):
            self.loader.exec_module(module)


class _QuietFinder(importlib.abc.MetaPathFinder):
    """Finds ``tensorflow`` once, through the other finders, and loads it filtered."""

    def find_spec(self, fullname: str, path: object = None,
                  target: object = None) -> importlib.machinery.ModuleSpec | None:
        if fullname != "tensorflow":
            return None
        sys.meta_path.remove(self)
        spec = importlib.util.find_spec(fullname)
        if spec is not None and spec.loader is not None:
            spec.loader = _QuietLoader(spec.loader)
        return spec


def quiet() -> None:
    """Default the log level and import TensorFlow quietly whenever something first imports it
    (``import keras`` included); instant, and a no-op when TensorFlow is already loaded."""
    os.environ.setdefault(LEVEL_VAR, DEFAULT_LEVEL)
    if "tensorflow" in sys.modules or level() <= 0:
        return
    if not any(isinstance(f, _QuietFinder) for f in sys.meta_path):
        sys.meta_path.insert(0, _QuietFinder())
