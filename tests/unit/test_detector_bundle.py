"""A trained bundle round-trips, exports to a SavedModel with the same scores, and refuses a
backbone it was not trained on. Random-init Inception v3 at 75 px keeps this fast."""

from __future__ import annotations

import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from detector.bundle import Bundle, BundleMismatchError, load_bundle, save_bundle
from detector.model import Backbone
from detector.preprocess import prepare
from detector.synth import generate
from detector.train import TrainConfig, train_bundle

SIZE = 75


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("synth")
    generate(out, n_images=48, brands=("acme", "globex"), logo_fraction=0.5, seed=7,
             size=(96, 72))
    return out


@pytest.fixture(scope="module")
def bundle_dir(data_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = TrainConfig(augment=1, validation_pct=25, test_pct=25, marks=False)  # heads
    return train_bundle(data_dir, tmp_path_factory.mktemp("b") / "bundle", input_size=SIZE,
                        weights="none", progress=False, config=cfg)


@pytest.fixture(scope="module")
def bundle(bundle_dir: Path) -> Bundle:
    """One loaded bundle (and one backbone build) shared by the tests that only read it."""
    return load_bundle(bundle_dir)


def png_bytes(side: int, seed: int = 0) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (side, side, 3), np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def test_bundle_round_trips_through_save_and_load(bundle: Bundle, tmp_path: Path) -> None:
    a = bundle
    px = np.stack([prepare(png_bytes(SIZE, s), SIZE)[0].pixels for s in range(3)])
    scores = a.score(a.embed(px))
    assert scores.shape == (3, 2) and scores.dtype == np.float32
    assert a.brands == ["acme", "globex"] and set(a.thresholds) == set(a.brands)
    copy = save_bundle(tmp_path / "copy", backbone=a.metadata["backbone"], heads=a.heads,
                       thresholds=a.thresholds, tiles=a.tiles)
    b = load_bundle(copy, backbone=a.backbone)
    assert b.version == a.version  # content-derived: same heads + thresholds = same id
    np.testing.assert_allclose(b.score(b.embed(px)), scores, rtol=1e-6)
    assert a.backbone_id == b.backbone_id == a.metadata["backbone"]["backbone_id"]


def test_saved_model_export_gives_the_same_scores(bundle: Bundle, tmp_path: Path) -> None:
    import tensorflow as tf

    from detector.export import export_saved_model

    out = export_saved_model(bundle, tmp_path / "sm")
    served = tf.saved_model.load(str(out))
    images = [png_bytes(SIZE, 1), png_bytes(SIZE, 2)]
    ours = bundle.score(bundle.embed(np.stack([prepare(d, SIZE)[0].pixels for d in images])))
    theirs = served.signatures["serving_default"](images=tf.constant(images))
    np.testing.assert_allclose(next(iter(theirs.values())).numpy(), ours, atol=1e-4)
    meta = json.loads((out / "assets.extra" / "brands.json").read_text())
    assert meta["brands"] == bundle.brands and meta["version"] == bundle.version


def test_bundle_with_mismatched_backbone_is_refused(bundle_dir: Path, tmp_path: Path) -> None:
    other = Backbone("inception_v3", weights="none", input_size=SIZE, seed=1)
    with pytest.raises(BundleMismatchError, match="needs backbone"):
        load_bundle(bundle_dir, backbone=other)
    meta = json.loads((bundle_dir / "bundle.json").read_text())
    meta["preprocess_version"] = "pp0-squash"
    (tmp_path / "old").mkdir()
    (tmp_path / "old" / "bundle.json").write_text(json.dumps(meta))
    (tmp_path / "old" / "heads.npz").write_bytes((bundle_dir / "heads.npz").read_bytes())
    with pytest.raises(BundleMismatchError, match="preprocessing"):
        load_bundle(tmp_path / "old", embed=False)


def test_random_backbone_warns_on_every_load(bundle_dir: Path,
                                             caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING):
        load_bundle(bundle_dir, embed=False)
        load_bundle(bundle_dir, embed=False)
    assert sum("RANDOM-WEIGHT BACKBONE" in r.message for r in caplog.records) == 2


def test_embed_pads_to_bucket_sizes_each_traced_once(bundle: Bundle) -> None:
    bundle.batch_size = 4
    px = np.stack([prepare(png_bytes(SIZE, s), SIZE)[0].pixels for s in range(9)])
    full = bundle.embed(px)  # 4 + 4 + 1
    for n in (1, 2, 3, 5, 3, 1):
        np.testing.assert_allclose(bundle.embed(px[:n]), full[:n], rtol=1e-5, atol=1e-6)
    assert bundle.backbone.buckets() == [1, 2, 4]
    for size in (1, 2, 4):
        assert bundle.backbone._compiled(size).experimental_get_tracing_count() == 1
    bundle.batch_size = 32


def test_adding_a_brand_keeps_the_other_heads(bundle_dir: Path, data_dir: Path,
                                              tmp_path: Path) -> None:
    base = load_bundle(bundle_dir, embed=False)
    cfg = TrainConfig(augment=1, validation_pct=25, test_pct=25, seed=5, marks=False)
    out = train_bundle(data_dir, tmp_path / "more", input_size=SIZE, progress=False,
                       config=cfg, brands=["globex"], base_bundle=bundle_dir)
    grown = load_bundle(out, embed=False)
    i = base.brands.index("acme")
    np.testing.assert_array_equal(grown.heads.kernel[:, i], base.heads.kernel[:, i])
    assert grown.thresholds["acme"] == base.thresholds["acme"]
    assert grown.version != base.version


def test_evaluate_writes_report_and_charts(bundle: Bundle, data_dir: Path,
                                           tmp_path: Path) -> None:
    from detector.evaluate import evaluate_bundle

    report = evaluate_bundle(bundle, data_dir, tmp_path / "ev", split="all",
                             validation_pct=25, test_pct=25, progress=False)
    assert set(report["modes"]) == {"whole_image", "tiles"}
    acme = report["modes"]["tiles"]["acme"]
    assert {"precision", "recall", "f1", "average_precision", "roc_auc", "tp"} <= set(acme)
    for name in ("report.json", "pr_curve.png", "confusion.png", "misclassified.png"):
        assert (tmp_path / "ev" / name).stat().st_size > 0
