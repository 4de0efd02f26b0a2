"""Embedding taps, the tap-aware bottleneck cache, the full-batch head solver and tap choice.

Random-weight backbones at 75 px: these tests prove the mechanics (what is cut, cached,
identified and chosen), not quality; quality is bench/quality.py's business.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from detector.bundle import BundleMismatchError, load_bundle, save_bundle
from detector.datasets import BottleneckCache, embed_files, list_examples
from detector.errors import DetectorError
from detector.metrics import average_precision
from detector.model import Backbone, Tap, parse_taps
from detector.synth import generate
from detector.train import TrainConfig, choose_taps, fit_head

SIZE = 75


@pytest.fixture(scope="module")
def two_taps() -> Backbone:
    return Backbone("inception_v3", weights="none", input_size=SIZE, seed=3,
                    taps="mixed2:max,mixed5:avg", batch_size=4)


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (5, SIZE, SIZE, 3), np.uint8)


def test_tap_strings_parse_and_bad_ones_name_the_form() -> None:
    assert parse_taps("mixed2:max, mixed10:avg") == (Tap("mixed2", "max"), Tap("mixed10", "avg"))
    assert Tap.parse("mixed7:max").key == "mixed7-max"
    for bad in ("mixed2", "mixed2:sum", ":max", ""):
        with pytest.raises(DetectorError):
            parse_taps(bad)
    with pytest.raises(DetectorError, match="duplicate"):
        parse_taps("mixed2:max,mixed2:max")


def test_an_unknown_layer_is_a_clear_error() -> None:
    with pytest.raises(DetectorError, match="no layer 'mixed99'"):
        Backbone("inception_v3", weights="none", input_size=SIZE, taps="mixed99:max")


def test_joined_taps_equal_each_single_tap_net_so_cut_nets_share_the_cache(
    two_taps: Backbone, images: np.ndarray
) -> None:
    joined = two_taps.embed(images)
    assert two_taps.tap_dims == [288, 768] and joined.shape == (5, 288 + 768)
    for tap in two_taps.taps:
        single = Backbone("inception_v3", weights="none", input_size=SIZE, seed=3,
                          taps=[str(tap)], batch_size=4)
        np.testing.assert_allclose(single.embed(images), joined[:, two_taps.columns([tap])],
                                   rtol=1e-5, atol=1e-5)
        assert single.features_id == two_taps.features_id
        assert single.backbone_id != two_taps.backbone_id
    with pytest.raises(DetectorError):
        two_taps.columns([Tap("mixed7", "max")])


def test_max_pool_tap_is_the_maximum_of_the_block_over_space(
    two_taps: Backbone, images: np.ndarray
) -> None:
    import keras

    block = keras.Model(two_taps.model.input, two_taps.model.outputs[0])
    maps = block(images.astype(np.float32) / 127.5 - 1.0, training=False).numpy()
    got = two_taps.embed(images)[:, two_taps.columns([Tap("mixed2", "max")])]
    np.testing.assert_allclose(got, maps.max(axis=(1, 2)), rtol=1e-5, atol=1e-5)


def test_backbone_id_names_weights_taps_and_precision(two_taps: Backbone) -> None:
    ids = {two_taps.id_for(two_taps.taps, p) for p in ("float32", "mixed_float16")}
    ids.add(two_taps.id_for(parse_taps("mixed2:max"), "float32"))
    assert len(ids) == 3 and two_taps.backbone_id in ids
    other_seed = Backbone("inception_v3", weights="none", input_size=SIZE, seed=4,
                          taps="mixed2:max,mixed5:avg")
    assert other_seed.backbone_id != two_taps.backbone_id
    d = two_taps.describe()
    assert d["taps"] == ["mixed2:max", "mixed5:avg"] and d["precision"] == "float32"
    assert d["embed_dim"] == 1056 and d["weights_source"] == "none"


def test_building_a_backbone_leaves_the_global_precision_policy_alone() -> None:
    import keras

    Backbone("inception_v3", weights="none", input_size=SIZE, taps="mixed0:max",
             precision="mixed_bfloat16")
    assert keras.config.dtype_policy().name == "float32"


def test_cache_fills_every_tap_in_one_pass_and_a_single_tap_reads_its_part(
    two_taps: Backbone, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    generate(data, n_images=6, brands=("acme",), logo_fraction=0.5, seed=1, size=(96, 72))
    paths = sorted(data.rglob("*.jpg"))
    calls: list[int] = []

    def embed(px: np.ndarray) -> np.ndarray:
        calls.append(len(px))
        return two_taps.embed(px)

    both = BottleneckCache.for_backbone(tmp_path / "c", two_taps)
    joined = embed_files(paths, "whole", both, embed, SIZE, progress=False)
    one = BottleneckCache(tmp_path / "c", two_taps.features_id, [("mixed5-avg", 768)])
    parts = embed_files(paths, "whole", one, lambda px: pytest.fail("cache miss"), SIZE,
                        progress=False)
    for a, b in zip(joined, parts, strict=True):
        np.testing.assert_array_equal(a[:, 288:], b)
    assert one.stats.hits == len(paths) and sum(calls) == len(paths)


def test_head_solver_is_deterministic_and_separates_a_planted_direction() -> None:
    rng = np.random.default_rng(1)
    direction = rng.normal(0, 1, 64)
    y = (rng.random(3000) < 0.1).astype(np.float32)
    x = rng.normal(0, 1, (3000, 64)) + 0.5 * y[:, None] * direction
    k1, b1, info = fit_head(x, y, TrainConfig(), progress=False)
    k2, b2, _ = fit_head(x, y, TrainConfig(), progress=False)
    np.testing.assert_array_equal(k1, k2)
    assert b1 == b2 and info["converged"]
    yt = (rng.random(1000) < 0.1).astype(np.float32)
    xt = rng.normal(0, 1, (1000, 64)) + 0.5 * yt[:, None] * direction
    assert average_precision(yt, xt @ k1 + b1) > 0.8  # held out: learnt, not memorised


def test_class_weights_move_the_decision_towards_the_rare_class() -> None:
    rng = np.random.default_rng(2)
    y = (rng.random(2000) < 0.05).astype(np.float32)
    x = rng.normal(0, 1, (2000, 8)) + 0.7 * y[:, None]
    kw, bw, _ = fit_head(x, y, TrainConfig(class_weights=True), progress=False)
    kn, bn, _ = fit_head(x, y, TrainConfig(class_weights=False), progress=False)
    flagged = lambda k, b: int(((x @ k + b) > 0).sum())  # noqa: E731
    assert flagged(kw, bw) > flagged(kn, bn)


def test_head_solver_refuses_a_single_class() -> None:
    with pytest.raises(DetectorError, match="positives and negatives"):
        fit_head(np.zeros((10, 3)), np.zeros(10, np.float32), TrainConfig(), progress=False)


def test_tap_choice_keeps_the_candidate_with_the_best_validation_ap(
    two_taps: Backbone, tmp_path: Path
) -> None:
    data = tmp_path / "data"
    generate(data, n_images=24, brands=("acme",), logo_fraction=0.5, seed=4, size=(96, 72))
    examples, _ = list_examples(data, validation_pct=30, test_pct=0)
    train = [e for e in examples if e.split == "train"]
    val = [e for e in examples if e.split == "validation"]
    candidates = [parse_taps("mixed2:max"), parse_taps("mixed5:avg"), two_taps.taps]
    chosen, scores = choose_taps(train, val, ["acme"], two_taps,
                                 BottleneckCache.for_backbone(tmp_path / "c", two_taps),
                                 candidates, TrainConfig(), progress=False)
    assert set(scores) == {"mixed2:max", "mixed5:avg", "mixed2:max,mixed5:avg"}
    assert scores[",".join(map(str, chosen))] == max(scores.values())


def test_bundle_records_taps_and_refuses_a_backbone_with_other_taps(
    two_taps: Backbone, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from detector.bundle import Heads

    d = two_taps.embed_dim
    heads = Heads(["acme"], np.zeros(d, np.float32), np.ones(d, np.float32),
                  np.full((d, 1), 0.01, np.float32), np.zeros(1, np.float32))
    path = save_bundle(tmp_path / "b", backbone=two_taps.describe(), heads=heads,
                       thresholds={"acme": 0.5}, tiles=None)
    loaded = load_bundle(path, batch_size=4)
    assert [str(t) for t in loaded.backbone.taps] == ["mixed2:max", "mixed5:avg"]
    assert loaded.backbone_id == two_taps.backbone_id
    other = Backbone("inception_v3", weights="none", input_size=SIZE, seed=3, taps="mixed2:max")
    with pytest.raises(BundleMismatchError, match="taps"):
        load_bundle(path, backbone=other)
    with caplog.at_level(logging.WARNING):
        half = load_bundle(path, precision="mixed_bfloat16")
    assert half.backbone_id != two_taps.backbone_id  # its embeddings are not interchangeable
    assert "trained in float32" in caplog.text
