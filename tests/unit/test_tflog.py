"""TensorFlow's native start-up lines: gone by default, back with TF_CPP_MIN_LOG_LEVEL=0."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from detector.tflog import kept

ROOT = Path(__file__).resolve().parents[2]
BANNER = "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR"
CHATTER = (
    f"{BANNER}\n"
    "I0000 00:00:1796278662.744654    4722 port.cc:153] oneDNN custom operations are on.\n"
    "I0000 00:00:1796278662.979269    4722 cpu_feature_guard.cc:227] This TensorFlow binary is"
    " optimized to use available CPU instructions.\n"
    "To enable the following instructions: AVX2 FMA, in other operations, rebuild TensorFlow.\n"
    "W0000 00:00:1796278662.990000    4722 some.cc:1] a warning\n"
    "E0000 00:00:1796278666.057398    4722 cuda_platform.cc:52] failed call to cuInit: (303)\n"
    "F0000 00:00:1796278666.100000    4722 fatal.cc:9] Check failed: it is fatal\n"
)


def test_lines_below_the_level_go_with_their_continuations_and_the_rest_stays() -> None:
    ours = "our own line on stderr\n"
    assert kept(ours + CHATTER, 3) == ours + CHATTER.splitlines(keepends=True)[-1]
    at2 = kept(CHATTER, 2)
    assert "cuInit" in at2 and "a warning" not in at2 and "AVX2" not in at2 and BANNER not in at2
    assert kept(CHATTER, 0) == CHATTER


def _import_tensorflow(**env: str) -> str:
    base = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = ("import sys; from detector import tflog; tflog.quiet(); import keras, tensorflow "
            "as tf; tf.config.list_physical_devices(); print('python stderr', file=sys.stderr)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, env={**base, **env, "PYTHONPATH": str(ROOT)}, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return run.stderr


def test_tensorflow_imports_quietly_by_default_and_the_user_can_turn_it_back_on() -> None:
    quiet = _import_tensorflow()
    for noise in ("absl", "cuInit", "cpu_feature_guard", "cudart_stub", "oneDNN"):
        assert noise not in quiet, quiet
    assert "python stderr" in quiet  # what is not TensorFlow's chatter is never held back
    loud = _import_tensorflow(TF_CPP_MIN_LOG_LEVEL="0")
    assert BANNER in loud  # this machine's TensorFlow does chatter: the quiet run proved something
