"""Peak memory of decoding each hostile corpus image, in a fresh process per image.

The worker's fetch threads decode untrusted images side by side, so one image must not be able
to take much more than its decoded pixels: each is bounded at ``LIMIT_MB`` over the process's
baseline (imports done, one small image decoded), whatever its format, mode or frames. Run with
``-s`` to print the table that ``docs/reliability.md`` shows.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.harness import REPO

pytestmark = pytest.mark.reliability

CORPUS = REPO / "tests" / "corpus"
EXPECTED = json.loads((CORPUS / "expected.json").read_text())["images"]
LIMIT_MB = 250

# Prepares one image the way the worker does (Inception's 299 px input with tiles: the
# largest reduction target) and prints the status and the peak RSS growth in MiB.
MEASURE = """
import resource, sys
from detector.preprocess import ImageError, TileSpec, prepare
ok = open(sys.argv[2], "rb").read()
prepare(ok, 299, tiles=TileSpec())
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
data = open(sys.argv[1], "rb").read()
try:
    prepare(data, 299, tiles=TileSpec())
    status = "ok"
except ImageError as exc:
    status = exc.status
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(status, (peak - base) / 1024)
"""


def _measure(path: Path) -> tuple[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", MEASURE, str(path), str(CORPUS / "images" / "ok.jpg")],
        capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO)}, check=True,
    ).stdout.split()
    return out[0], float(out[1])


def test_no_corpus_image_takes_more_than_250_mb_over_the_baseline() -> None:
    table = {}
    for name, spec in sorted(EXPECTED.items()):
        status, grown = _measure(CORPUS / "images" / name)
        table[name] = (spec["status"], status, grown)
    print("\n| image | status | peak RSS over baseline (MiB) |\n|---|---|---|")
    for name, (_, status, grown) in table.items():
        print(f"| `{name}` | `{status}` | {grown:.0f} |")
    assert {n: got for n, (_, got, _) in table.items()} == {n: e for n, (e, _, _) in table.items()}
    assert {n: g for n, (_, _, g) in table.items() if g > LIMIT_MB} == {}
