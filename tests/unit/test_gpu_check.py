"""The GPU check (bench/gpu.sh) dry-runs here exactly as the lent device would run it: the
bundle's network exported once with TensorFlow, then rebuilt and measured in PyTorch in a
process where TensorFlow (and everything else the device lacks) cannot be imported."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# What the lent machine does not have: importing any of these there would fail.
ABSENT = ("tensorflow", "keras", "tensorboard", "sqlalchemy", "kafka", "psycopg2", "pydantic",
          "starlette", "uvicorn", "alembic", "matplotlib", "requests", "tqdm", "yaml", "lz4",
          "zstandard", "snappy")
# None in sys.modules is how Python spells "not installed": import raises ModuleNotFoundError
# and importlib.util.find_spec answers None, as both do on the device.
BLOCKER = f"import sys\nsys.modules.update(dict.fromkeys({ABSENT!r}))\n"


@pytest.fixture()
def without_tensorflow(tmp_path: Path) -> dict[str, str]:
    """An environment whose Python refuses the absent packages (a sitecustomize blocker)."""
    block = tmp_path / "block"
    block.mkdir()
    (block / "sitecustomize.py").write_text(BLOCKER)
    return {**os.environ, "PYTHONPATH": str(block)}


def test_preprocessing_imports_and_runs_without_tensorflow(
        without_tensorflow: dict[str, str]) -> None:
    code = ("import io, numpy as np; from PIL import Image; from detector.preprocess import "
            "prepare; buf = io.BytesIO(); Image.new('RGB', (64, 48), 'red').save(buf, 'JPEG'); "
            "print(prepare(buf.getvalue(), 32)[0].pixels.shape)")
    env = {**without_tensorflow, "PYTHONPATH": f"{without_tensorflow['PYTHONPATH']}:{ROOT}"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                         cwd=ROOT, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "(32, 32, 3)"
    blocked = subprocess.run([sys.executable, "-c", "import tensorflow"], capture_output=True,
                             text=True, env=env, timeout=60)
    assert "ModuleNotFoundError" in blocked.stderr  # the blocker itself works


def test_export_then_dry_run_matches_tensorflow(
        tiny_bundle: Path, tmp_path: Path, without_tensorflow: dict[str, str]) -> None:
    from bench.gpu_export import export

    folder = tmp_path / "export"
    net = export(tiny_bundle, folder, images=4, progress=lambda _m: None)
    assert net["taps"] == [{"op": "mixed2", "pool": "max"}, {"op": "mixed5", "pool": "max"}]
    assert {op["op"] for op in net["ops"]} == {"conv", "maxpool", "avgpool", "concat"}

    env = {**without_tensorflow, "PYTHON": sys.executable, "OUT": str(tmp_path / "out")}
    run = subprocess.run(["bash", "bench/gpu.sh", "--dry-run", "--export", str(folder)],
                         capture_output=True, text=True, env=env, cwd=ROOT, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    doc = json.loads((tmp_path / "out" / "gpu-check.json").read_text())
    assert doc["errors"] == [] and doc["dry_run"] is True
    assert doc["environment"]["device"] == "cpu"
    check = doc["check"]
    assert check["float32"]["embedding_max_rel_diff"] < 1e-4
    assert check["float32"]["scores_max_abs_diff"] < 1e-4
    assert check["bfloat16"]["embedding_max_rel_diff"] < 0.05
    for precision in ("bfloat16", "float32"):
        points = doc["model"]["by_precision"][precision]
        assert set(points) == {"2", "4"}
        assert all(p["per_s"] > 0 and p["compiled"] for p in points.values())
        # batch 4 holds the 4 reference images: the compiled graph's outputs are checked too
        assert points["4"]["embedding_max_abs_diff"] < 0.05 * check["embedding_max_abs"]
        assert doc["summary"][precision]["decode_cores_needed"] > 0
    assert doc["decode"]["per_s"] > 0 and doc["decode"]["workers"] == 2
    assert "| bfloat16 | 4 |" in run.stdout


@pytest.mark.parametrize(("layer", "message"), [
    ("conv_same_stride2", "asymmetric"),
    ("depthwise", "not supported by the export"),
])
def test_export_refuses_what_it_cannot_rebuild(layer: str, message: str) -> None:
    import keras

    from bench.gpu_export import graph
    from detector.errors import DetectorError

    x = keras.Input((16, 16, 3))
    if layer == "conv_same_stride2":
        y = keras.layers.Conv2D(4, 3, strides=2, padding="same")(x)
    else:
        y = keras.layers.DepthwiseConv2D(3)(x)
    with pytest.raises(DetectorError, match=message):
        graph(keras.Model(x, y))
