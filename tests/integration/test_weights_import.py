"""The real nsfwjs import: fetched with npm, it reproduces TF.js and keeps the frozen ImageNet part.

The session fixture runs `import_weights()` against the real npm registry into the user's
cache (`scripts/bootstrap.sh` has usually done it already, then it is instant). The reference
outputs were computed once by TF.js itself (`scripts/make_tfjs_reference.mjs`) on the inputs in
tests/fixtures/nsfwjs_inputs.npy; no test runs TF.js.
"""

from __future__ import annotations

import hashlib
import json
import socket
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector import tfjs, weights
from detector.errors import DetectorError

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SCALINGS = {"unit": lambda q: q / 255.0, "inception": lambda q: q / 127.5 - 1.0}


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="session")
def imported() -> Path:
    return weights.import_weights("nsfwjs")


@pytest.fixture(scope="session")
def reference() -> dict[str, Any]:
    return json.loads((FIXTURES / "nsfwjs_tfjs_reference.json").read_text())


@pytest.fixture(scope="session")
def tfjs_model(imported: Path) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    folder = imported.parent / weights.TFJS_DIR
    model = json.loads((folder / "model.json").read_text())
    values = tfjs.read_weights(model["weightsManifest"], (folder / "weights.bin").read_bytes())
    return model["modelTopology"], values


def test_reference_was_made_from_these_inputs_and_this_model(
        imported: Path, reference: dict[str, Any]) -> None:
    folder = imported.parent / weights.TFJS_DIR
    assert reference["inputs"]["sha256"] == _sha256(FIXTURES / "nsfwjs_inputs.npy")
    assert reference["model_json_sha256"] == _sha256(folder / "model.json")
    assert reference["weights_bin_sha256"] == _sha256(folder / "weights.bin")
    assert reference["nsfwjs_version"] == weights.SOURCES["nsfwjs"].version


def test_keras_nsfwjs_reproduces_the_tfjs_outputs(imported: Path,
                                                  reference: dict[str, Any]) -> None:
    model = weights.build_nsfwjs_full()
    pixels = np.load(FIXTURES / "nsfwjs_inputs.npy").astype(np.float64)
    for name, scale in SCALINGS.items():
        want = np.asarray(reference["outputs"][name], np.float64)
        got = model.predict(scale(pixels).astype(np.float32), batch_size=1, verbose=0)
        diff = float(np.abs(got - want).max())
        print(f"{name}: max abs diff {diff:.3g}")
        assert got.shape == want.shape == (len(pixels), 5)
        assert diff <= 1e-3, f"{name} scaling: Keras differs from TF.js by {diff}"
        # Saturated softmax hides errors in the small classes; log-probabilities do not.
        assert np.abs(np.log(got) - np.log(want)).max() <= 1e-2


def test_frozen_imagenet_layers_hold_exactly_the_dequantized_values(
        imported: Path, tfjs_model: tuple[dict[str, Any], dict[str, np.ndarray]]) -> None:
    import keras

    topology, values = tfjs_model
    net = keras.applications.InceptionV3(include_top=False, weights=None)
    net.load_weights(imported)
    # Keras 2 numbers auto-named layers from 1 (conv2d_1), Keras 3 from 0 (conv2d).
    by_creation = {}
    for cls, base in ((keras.layers.Conv2D, "conv2d"),
                      (keras.layers.BatchNormalization, "batch_normalization")):
        ordered = sorted((la for la in net.layers if type(la) is cls),
                         key=lambda la, b=base: tfjs.creation_index(la.name, b))
        by_creation.update({f"{base}_{i}": la for i, la in enumerate(ordered, start=1)})
    frozen = [n for n in tfjs.frozen_layers(topology) if n in by_creation]
    assert len(frozen) == 102  # 51 Conv2D + 51 BatchNormalization
    assert tfjs.frozen_through(topology) == "conv2d_55"
    for name in frozen:
        for w in by_creation[name].weights:
            want = values[f"{name}/{w.path.rsplit('/', 1)[-1]}"]
            assert np.array_equal(w.numpy(), want), f"{name} {w.path}"


def test_provenance_names_the_package_its_hash_licence_and_frozen_part(imported: Path) -> None:
    rec = weights.provenance("nsfwjs")
    src = weights.SOURCES["nsfwjs"]
    assert (rec["package"], rec["version"], rec["source"]) == ("nsfwjs", "4.4.0", "npm")
    assert rec["tarball_sha256"] == src.sha256
    assert rec["licence"] == "MIT"
    assert rec["frozen_through"] == "conv2d_55"
    assert rec["imagenet_frozen_layers"] == 167
    assert rec["keras_file_sha256"] == _sha256(imported)
    assert rec["created_at"] and rec["keras_version"]
    assert "Infinite Red" in (imported.parent / "LICENSE").read_text()
    assert weights.weights_file("nsfwjs") == imported
    assert weights.default_weights() == "nsfwjs"


def test_second_import_is_offline_and_instant(imported: Path, monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no npm, no node
    t0 = time.monotonic()
    assert weights.import_weights("nsfwjs", progress=False) == imported
    assert time.monotonic() - t0 < 1.0


def test_unreachable_registry_is_a_one_line_error_naming_the_alternatives(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    with socket.socket() as s:  # a loopback port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("npm_config_registry", f"http://127.0.0.1:{port}/")
    monkeypatch.setenv("npm_config_cache", str(tmp_path / "npm-cache"))
    monkeypatch.setenv("npm_config_fetch_retries", "0")
    with pytest.raises(DetectorError) as err:
        weights.import_weights("nsfwjs", cache=tmp_path / "cache", progress=False)
    text = str(err.value)
    assert "\n" not in text and "registry unreachable" in text
    assert "--weights imagenet" in text and "--weights none" in text
    assert weights.weights_file("nsfwjs", cache=tmp_path / "cache") is None
    assert list((tmp_path / "cache" / "weights").iterdir()) == []  # no half import left


def test_train_defaults_to_the_imported_weights_and_the_bundle_reloads_offline(
        imported: Path, tmp_path: Path) -> None:
    from detector.bundle import load_bundle
    from detector.synth import generate
    from detector.train import TrainConfig, train_bundle

    generate(tmp_path / "data", n_images=24, brands=("acme",), logo_fraction=0.5, seed=2,
             size=(120, 90))
    out = train_bundle(tmp_path / "data", tmp_path / "b", input_size=75, progress=False,
                       config=TrainConfig(augment=0, tiles=None, validation_pct=30,
                                          test_pct=0, taps=("mixed2:max",), marks=False))
    bb = json.loads((out / "bundle.json").read_text())["backbone"]
    assert bb["weights"] == "nsfwjs@4.4.0" and bb["weights_source"] == "nsfwjs"
    assert bb["random_weights"] is False and bb["taps"] == ["mixed2:max"]
    bundle = load_bundle(out)  # the recorded source, found in the cache: no download
    assert bundle.backbone.weights_file == str(imported)
    assert bundle.backbone_id == bb["backbone_id"]
