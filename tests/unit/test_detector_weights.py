"""Weight sources: TF.js manifest reading, dequantization, creation-order mapping, the cache.

Pure functions on tiny hand-made topologies and manifests; the real nsfwjs import is proven in
tests/integration/test_weights_import.py.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from detector import tfjs, weights
from detector.errors import DetectorError
from detector.tfjs import LayerSpec


def _quantize(values: np.ndarray) -> tuple[np.ndarray, float, float]:
    lo, hi = float(values.min()), float(values.max())
    scale = (hi - lo) / 255 or 1.0
    return np.round((values - lo) / scale).astype(np.uint8), lo, scale


def _manifest(arrays: dict[str, np.ndarray]) -> tuple[list[dict[str, Any]], bytes, dict]:
    """A one-group uint8 manifest, its shard bytes and the values TF.js would decode."""
    specs, parts, expected = [], [], {}
    for name, values in arrays.items():
        q, lo, scale = _quantize(values)
        specs.append({"name": name, "shape": list(values.shape), "dtype": "float32",
                      "quantization": {"min": lo, "scale": scale, "dtype": "uint8"}})
        parts.append(q.tobytes())
        expected[name] = np.float32(q.astype(np.float64) * scale + lo)
    return [{"paths": ["group1-shard1of1"], "weights": specs}], b"".join(parts), expected


def _layer(name: str, cls: str, trainable: bool, inbound: list[str], **config: Any) -> dict:
    return {"name": name, "class_name": cls,
            "config": {"name": name, "trainable": trainable, **config},
            "inbound_nodes": [[[n, 0, 0, {}] for n in inbound]] if inbound else []}


def _conv(name: str, filters: int, k: int, trainable: bool, inbound: str) -> dict:
    return _layer(name, "Conv2D", trainable, [inbound], filters=filters, kernel_size=[k, k],
                  strides=[1, 1], padding="same", dilation_rate=[1, 1], use_bias=False,
                  activation="linear")


def _bn(name: str, trainable: bool, inbound: str) -> dict:
    return _layer(name, "BatchNormalization", trainable, [inbound], epsilon=0.001,
                  center=True, scale=False)


def _topology() -> dict[str, Any]:
    """Two branches listed in the opposite of their creation order, then a dense head."""
    layers = [
        _layer("input_1", "InputLayer", True, [], batch_input_shape=[None, 8, 8, 3]),
        _conv("conv2d_2", 6, 3, False, "input_1"),
        _conv("conv2d_1", 4, 1, False, "input_1"),
        _bn("batch_normalization_2", False, "conv2d_2"),
        _bn("batch_normalization_1", True, "conv2d_1"),
        _layer("mixed0", "Concatenate", True, ["batch_normalization_1",
                                                "batch_normalization_2"], axis=3),
        _layer("flatten_1", "Flatten", True, ["mixed0"]),
        _layer("dense_1", "Dense", True, ["flatten_1"], units=2, activation="softmax",
               use_bias=True),
    ]
    return {"keras_version": "2.2.4", "model_config": {"config": {"layers": layers}}}


def _tiny_weights() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    shapes = {"conv2d_1/kernel": (1, 1, 3, 4), "conv2d_2/kernel": (3, 3, 3, 6),
              "batch_normalization_1/beta": (4,), "batch_normalization_1/moving_mean": (4,),
              "batch_normalization_1/moving_variance": (4,),
              "batch_normalization_2/beta": (6,), "batch_normalization_2/moving_mean": (6,),
              "batch_normalization_2/moving_variance": (6,)}
    return {n: rng.normal(size=s).astype(np.float32) for n, s in shapes.items()}


def test_dequantize_computes_min_plus_scale_times_q_like_tfjs() -> None:
    q = np.array([0, 1, 128, 255], np.uint8)
    got = tfjs.dequantize(q, -1.4470329237919228, 0.022262044981414198)
    assert got.dtype == np.float32
    want = np.array([np.float32(v * 0.022262044981414198 + -1.4470329237919228)
                     for v in (0, 1, 128, 255)])
    assert np.array_equal(got, want)


def test_manifest_offsets_run_through_groups_in_order_with_stored_sizes() -> None:
    manifest = [
        {"paths": ["a"], "weights": [
            {"name": "x", "shape": [2, 3], "dtype": "float32",
             "quantization": {"min": 0, "scale": 1, "dtype": "uint8"}},
            {"name": "y", "shape": [4], "dtype": "float32",
             "quantization": {"min": 0, "scale": 1, "dtype": "uint16"}}]},
        {"paths": ["b"], "weights": [{"name": "z", "shape": [5], "dtype": "float32"}]},
    ]
    specs = tfjs.parse_manifest(manifest)
    assert [(s.name, s.offset, s.nbytes) for s in specs] == [("x", 0, 6), ("y", 6, 8),
                                                            ("z", 14, 20)]
    assert specs[0].quant_dtype == "uint8" and specs[2].quant_dtype is None


def test_read_weights_decodes_every_weight_at_its_offset() -> None:
    arrays = _tiny_weights()
    manifest, blob, expected = _manifest(arrays)
    got = tfjs.read_weights(manifest, blob)
    assert got.keys() == expected.keys()
    for name, values in expected.items():
        assert got[name].shape == arrays[name].shape
        assert np.array_equal(got[name], values)
        assert np.abs(got[name] - arrays[name]).max() <= np.ptp(arrays[name]) / 255


def test_read_weights_refuses_shards_of_the_wrong_size() -> None:
    manifest, blob, _ = _manifest(_tiny_weights())
    with pytest.raises(DetectorError, match="bytes"):
        tfjs.read_weights(manifest, blob[:-1])


def test_unsupported_quantization_is_a_user_error() -> None:
    manifest = [{"paths": ["a"], "weights": [{"name": "x", "shape": [1], "dtype": "float32",
                                              "quantization": {"dtype": "float16"}}]}]
    with pytest.raises(DetectorError, match="unsupported quantization"):
        tfjs.parse_manifest(manifest)


def test_creation_index_reads_keras_auto_names() -> None:
    assert tfjs.creation_index("conv2d", "conv2d") == 0
    assert tfjs.creation_index("conv2d_55", "conv2d") == 55
    with pytest.raises(DetectorError, match="auto-named"):
        tfjs.creation_index("mixed_conv", "conv2d")


def test_layers_pair_by_creation_order_not_list_order() -> None:
    source = [LayerSpec("conv2d_2", "conv", {"k": 3}, {"kernel": (3, 3, 3, 6)}),
              LayerSpec("conv2d_1", "conv", {"k": 1}, {"kernel": (1, 1, 3, 4)})]
    target = [LayerSpec("conv2d_8", "conv", {"k": 1}, {"kernel": (1, 1, 3, 4)}),
              LayerSpec("conv2d_9", "conv", {"k": 3}, {"kernel": (3, 3, 3, 6)})]
    pairs = tfjs.pair_layers(source, target, "conv2d")
    assert [(s.name, t.name) for s, t in pairs] == [("conv2d_1", "conv2d_8"),
                                                    ("conv2d_2", "conv2d_9")]


@pytest.mark.parametrize(("change", "message"), [
    ({"shapes": {"kernel": (1, 1, 3, 5)}}, "shapes differ"),
    ({"config": {"k": 2}}, "config differs"),
])
def test_pairing_refuses_any_shape_or_config_mismatch(change: dict, message: str) -> None:
    src = LayerSpec("conv2d_1", "conv", {"k": 1}, {"kernel": (1, 1, 3, 4)})
    dst = LayerSpec(**{"name": "conv2d", "kind": "conv", "config": {"k": 1},
                       "shapes": {"kernel": (1, 1, 3, 4)}, **change})
    with pytest.raises(DetectorError, match=message):
        tfjs.pair_layers([src], [dst], "conv2d")


def test_pairing_refuses_a_different_layer_count() -> None:
    src = LayerSpec("conv2d_1", "conv", {}, {})
    with pytest.raises(DetectorError, match="2 conv2d layers to import"):
        tfjs.pair_layers([src, LayerSpec("conv2d_2", "conv", {}, {})], [src], "conv2d")


def test_frozen_through_is_the_last_frozen_conv_in_list_order() -> None:
    topology = _topology()
    assert tfjs.frozen_layers(topology) == ["conv2d_2", "conv2d_1", "batch_normalization_2"]
    assert tfjs.frozen_through(topology) == "conv2d_1"


def test_head_is_the_chain_after_the_last_concatenate() -> None:
    topology = _topology()
    assert [layer["name"] for layer in tfjs.head_layers(topology)] == ["flatten_1", "dense_1"]
    topology["model_config"]["config"]["layers"][-1]["inbound_nodes"] = [[["mixed0", 0, 0, {}]]]
    with pytest.raises(DetectorError, match="not fed by flatten_1"):
        tfjs.head_layers(topology)


def test_assign_copies_each_weight_into_the_keras_layer_created_in_the_same_order() -> None:
    import keras

    inputs = keras.Input((8, 8, 3))
    convs = [keras.layers.Conv2D(4, 1, padding="same", use_bias=False),
             keras.layers.Conv2D(6, 3, padding="same", use_bias=False)]
    bns = [keras.layers.BatchNormalization(scale=False) for _ in range(2)]
    late = bns[1](convs[1](inputs))  # applied before the first pair: list order differs
    early = bns[0](convs[0](inputs))
    model = keras.Model(inputs, keras.layers.Concatenate()([early, late]))
    topology, values = _topology(), _tiny_weights()
    used = weights.assign_by_creation_order(model, topology, values)
    assert used == set(values)
    for i, (conv, bn) in enumerate(zip(convs, bns, strict=True), start=1):
        assert np.array_equal(conv.kernel.numpy(), values[f"conv2d_{i}/kernel"])
        assert np.array_equal(bn.moving_mean.numpy(),
                              values[f"batch_normalization_{i}/moving_mean"])


def test_cache_root_follows_logowatch_cache_then_xdg_then_home(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.delenv("LOGOWATCH_CACHE", raising=False)
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    assert weights.cache_root() == tmp_path / "home" / ".cache" / "logowatch"
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert weights.cache_root() == tmp_path / "xdg" / "logowatch"
    monkeypatch.setenv("LOGOWATCH_CACHE", str(tmp_path / "lw"))
    assert weights.cache_root() == tmp_path / "lw" / "logowatch"


def test_nothing_imported_means_no_file_and_default_none(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("LOGOWATCH_CACHE", str(tmp_path))
    assert weights.weights_file("nsfwjs") is None
    assert weights.default_weights() == "none"
    with pytest.raises(DetectorError, match="logowatch weights import nsfwjs"):
        weights.provenance("nsfwjs")
    with pytest.raises(DetectorError, match="unknown weights source"):
        weights.weights_file("inception_from_somewhere")


def test_import_without_npm_is_a_one_line_error_naming_the_alternatives(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    with pytest.raises(DetectorError) as err:
        weights.import_weights("nsfwjs", cache=tmp_path, progress=False)
    text = str(err.value)
    assert "\n" not in text and "npm" in text
    assert "--weights imagenet" in text and "--weights none" in text
    assert not (tmp_path / "weights").exists() or not any((tmp_path / "weights").iterdir())


def test_weights_show_without_import_exits_1_with_one_line(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
        capsys: pytest.CaptureFixture) -> None:
    from logowatch.cli import main

    monkeypatch.setenv("LOGOWATCH_CACHE", str(tmp_path))
    assert main(["weights", "show", "nsfwjs"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("logowatch weights: error:") and "\n" not in err
