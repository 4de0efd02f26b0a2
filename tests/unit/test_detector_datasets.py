"""Stable hash splits, the bottleneck cache, synthetic data and the metrics behind thresholds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from detector.datasets import BottleneckCache, embed_files, list_examples, split_of
from detector.errors import DetectorError
from detector.metrics import average_precision, choose_threshold, recall_at_precision, roc_auc
from detector.synth import generate, read_manifest


def test_split_is_stable_when_images_are_added(tmp_path: Path) -> None:
    generate(tmp_path, n_images=30, brands=("acme",), logo_fraction=0.3, seed=1, size=(64, 48))
    before = {e.path.name: e.split for e in list_examples(tmp_path)[0]}
    generate(tmp_path, n_images=90, brands=("acme",), logo_fraction=0.3, seed=1, size=(64, 48))
    after = {e.path.name: e.split for e in list_examples(tmp_path)[0]}
    assert len(after) == 90 and all(after[name] == s for name, s in before.items())
    assert {"train", "validation", "test"} <= set(after.values())


def test_nohash_variants_share_a_split() -> None:
    names = [f"photo{i}_nohash_{k}.jpg" for i in range(50) for k in range(3)]
    for i in range(50):
        assert len({split_of(n) for n in names[3 * i : 3 * i + 3]}) == 1


def test_bottleneck_cache_is_hit_on_the_second_run(tmp_path: Path) -> None:
    generate(tmp_path / "d", n_images=10, brands=("acme",), logo_fraction=0.5, seed=2,
             size=(64, 48))
    paths = [e.path for e in list_examples(tmp_path / "d")[0]]
    calls: list[int] = []

    def embed(px: np.ndarray) -> np.ndarray:
        calls.append(len(px))
        return px.reshape(len(px), -1)[:, :8].astype(np.float32)

    first = BottleneckCache(tmp_path / "cache", "bb1")
    a = embed_files(paths, "whole", first, embed, 75, batch=4, progress=False)
    assert first.stats.misses == 10 and sum(calls) == 10 and max(calls) <= 4 + 1
    second = BottleneckCache(tmp_path / "cache", "bb1")
    b = embed_files(paths, "whole", second, embed, 75, progress=False)
    assert second.stats.hits == 10 and second.stats.misses == 0 and sum(calls) == 10
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    other = BottleneckCache(tmp_path / "cache", "bb2")  # another backbone never shares entries
    embed_files(paths[:2], "whole", other, embed, 75, progress=False)
    assert other.stats.misses == 2


def test_augmented_variants_are_cached_and_deterministic(tmp_path: Path) -> None:
    generate(tmp_path / "d", n_images=3, brands=("acme",), logo_fraction=1.0, seed=3,
             size=(64, 48))
    paths = [e.path for e in list_examples(tmp_path / "d")[0]]

    def embed(px: np.ndarray) -> np.ndarray:
        return px.reshape(len(px), -1)[:, :16].astype(np.float32)

    a = embed_files(paths, "auga2-0", BottleneckCache(tmp_path / "c1", "x"), embed, 75,
                    progress=False)
    b = embed_files(paths, "auga2-0", BottleneckCache(tmp_path / "c2", "x"), embed, 75,
                    progress=False)
    c = embed_files(paths, "auga2-1", BottleneckCache(tmp_path / "c2", "x"), embed, 75,
                    progress=False)
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_synth_is_deterministic_and_lists_ground_truth(tmp_path: Path) -> None:
    rows = generate(tmp_path / "a", n_images=12, brands=("acme", "globex"), logo_fraction=0.5,
                    seed=4, size=(120, 90))
    generate(tmp_path / "b", n_images=12, brands=("acme", "globex"), logo_fraction=0.5,
             seed=4, size=(120, 90))
    for r in rows:
        assert (tmp_path / "a" / r.file).read_bytes() == (tmp_path / "b" / r.file).read_bytes()
        assert len(r.boxes) == len(r.brands)
        assert r.file.split("/")[0] == (r.brands[0] if r.brands else "no-logo")
    assert read_manifest(tmp_path / "a") == rows
    assert any(r.brands for r in rows) and any(not r.brands for r in rows)
    big = generate(tmp_path / "c", n_images=2, brands=("acme",), logo_fraction=0.0, seed=0)
    assert (tmp_path / "c" / big[0].file).stat().st_size > 10_000  # realistic JPEG size


def test_synth_refuses_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(DetectorError):
        generate(tmp_path, n_images=1, brands=("no-logo",))
    with pytest.raises(DetectorError):
        generate(tmp_path, n_images=1, logo_fraction=1.5)


def test_metrics_match_hand_computed_values() -> None:
    y = np.array([1, 0, 1, 0, 0])
    s = np.array([0.9, 0.8, 0.7, 0.2, 0.1])
    assert average_precision(y, s) == pytest.approx((1.0 + 2 / 3) / 2)
    assert roc_auc(y, s) == pytest.approx(5 / 6)
    assert recall_at_precision(y, s, 1.0) == 0.5
    assert choose_threshold(y, s, "precision>=0.9") == pytest.approx(0.9)
    assert choose_threshold(y, s, "f1") == pytest.approx(0.7)
    with pytest.raises(DetectorError):
        choose_threshold(y, s, "magic")


def test_tiles_are_labelled_from_manifest_boxes(tmp_path: Path) -> None:
    from detector.preprocess import TileSpec
    from detector.train import tile_labels

    rows = generate(tmp_path, n_images=40, brands=("acme",), logo_fraction=0.5, seed=5,
                    size=(200, 150), small_fraction=1.0)
    examples = {e.path.name: e for e in list_examples(tmp_path)[0]}
    spec = TileSpec(2, 0.25)
    for r in rows:
        lab = tile_labels(examples[Path(r.file).name], "acme", spec)
        if not r.brands:
            assert (lab == 0).all()  # every tile of a no-logo image is a negative
        else:
            assert examples[Path(r.file).name].boxes == r.boxes
            assert (lab == 1).any()  # a small logo lies whole inside some tile
