"""``logowatch demo``: the whole pipeline on a demo feed, on a machine with nothing running.

Starts Kafka and PostgreSQL locally (unless KAFKA_BOOTSTRAP_SERVERS and DATABASE_URL point at
running ones), migrates, trains a demo model on synthetic images when no model is given,
serves a synthetic feed's images over HTTP on 127.0.0.1, ingests the feed into Kafka through
the file source, runs the detector worker and prints what landed in Postgres.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from logowatch import commands
from workers.errors import WorkerError

log = logging.getLogger(__name__)

DEMO_BRANDS = ("acme", "globex", "initech")

IMAGENET_FILE = "inception_v3_weights_tf_dim_ordering_tf_kernels_notop.h5"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "demo",
        help="run the whole pipeline on a synthetic demo feed (services included)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands.add_worker_flags(p, model_required=False)
    p.add_argument("--once", action="store_true",
                   help="process the demo feed, print the summary and exit (services stay up; "
                   "`logowatch services down` stops them)")
    p.add_argument("--posts", type=commands._positive, default=120,
                   help="posts in the demo feed (default 120)")
    p.add_argument("--train-images", type=commands._positive, default=400,
                   help="synthetic images the demo model is trained on, when no --model is "
                        "given (default 400: ~25 validation positives per brand, so the "
                        "thresholds tuned for precision hold)")
    p.add_argument("--state-dir", type=Path, default=commands.DEFAULT_STATE,
                   help="services' data, the demo model and feed (default .logowatch)")
    p.add_argument("--kafka-port", type=int, default=9092, help="local broker port (9092)")
    p.add_argument("--postgres-port", type=int, default=5432, help="local Postgres port (5432)")
    p.set_defaults(func=run_demo)


def _services(args: argparse.Namespace) -> tuple[str, str]:
    if os.environ.get("KAFKA_BOOTSTRAP_SERVERS") and os.environ.get("DATABASE_URL"):
        return args.bootstrap_servers, args.database_url
    ns = argparse.Namespace(action="up", state_dir=args.state_dir, kafka_port=args.kafka_port,
                            postgres_port=args.postgres_port, no_postgres=False)
    commands.run_services(ns)
    state = json.loads((args.state_dir.resolve() / "services.json").read_text())
    return state["bootstrap"], state["database_url"]


def _demo_weights() -> tuple[str, int]:
    """ImageNet weights when Keras already has them, else the ImageNet-derived weights
    imported from npm (importing them once), else random weights, said loudly."""
    from detector.errors import DetectorError
    from detector.weights import import_weights, weights_file

    cached = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "models" / IMAGENET_FILE
    if cached.exists():
        return "imagenet", 299
    try:
        if weights_file("nsfwjs") is None:
            print("demo: importing the ImageNet-derived Inception v3 weights from npm (once)")
            import_weights("nsfwjs")
        return "nsfwjs", 299
    except DetectorError as exc:
        print(f"demo: {exc}")
        return "none", 139


def _demo_model(state_dir: Path, n_images: int) -> Path:
    from detector.bundle import META_FILE, BundleMismatchError, load_bundle
    from detector.synth import generate
    from detector.train import TrainConfig, train_bundle

    weights, size = _demo_weights()
    out = state_dir / f"demo-model-{weights}-{size}-{n_images}"
    if (out / META_FILE).exists():
        try:
            load_bundle(out, embed=False)  # made by an older release: train it again
            print(f"demo: reusing the demo model in {out}")
            return out
        except BundleMismatchError as exc:
            print(f"demo: retraining the demo model ({exc})")
    if weights == "none":
        print("demo: no pretrained weights on this machine: the demo model uses a RANDOM "
              "backbone, so its detections are not meaningful (the plumbing is)")
    data = state_dir / f"demo-train-{n_images}"
    if not (data / "manifest.csv").exists():
        print(f"demo: drawing {n_images} synthetic training images")
        generate(data, n_images=n_images, brands=DEMO_BRANDS, logo_fraction=0.5, seed=11)
    print(f"demo: training brand heads on {weights} Inception v3 at {size}px (the embedding "
          "taps are chosen on validation, then tiles and augmentations are embedded)")
    # ~25 validation positives per brand make a precision target noisy: aim above the 0.9
    # the feed should show. Heads only: on marks drawn over 16 known photos a head is near
    # perfect, and mining marks (detector.mining) would add minutes to the demo's first run
    cfg = TrainConfig(augment=2, validation_pct=25.0, threshold_policy="precision>=0.95",
                      marks=False)
    return train_bundle(data, out, weights=weights, input_size=size, config=cfg)


def _feed_images(state_dir: Path, n: int) -> tuple[Path, list[Any]]:
    from detector.synth import generate

    folder = state_dir / "demo-feed"
    return folder, generate(folder, n_images=n, brands=DEMO_BRANDS, logo_fraction=0.4, seed=29)


def _post_id(i: int) -> str:
    return f"demo-{i:05d}"


def _posts(rows: list[Any], base_url: str) -> list[dict[str, Any]]:
    posts = []
    for i, row in enumerate(rows):
        # A third of the logo posts say the brand in text; the rest show it without saying it.
        said = row.brands[0] if row.brands and i % 3 == 0 else None
        if said is None and i % 7 == 0:
            said = DEMO_BRANDS[i % 3]  # text-only mentions
        caption = f"Weekend vibes #{said} with @{said}" if said else f"Weekend vibes, post {i}"
        posts.append({"post_id": _post_id(i), "source": "demo", "caption": caption,
                      "image_url": f"{base_url}/{row.file}", "author": f"user{i % 17}",
                      "posted_at": f"2024-05-{1 + i % 28:02d}T12:00:00Z"})
    return posts


def _serve(folder: Path) -> ThreadingHTTPServer:
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0),
                                 functools.partial(Quiet, directory=str(folder)))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="demo-images", daemon=True).start()
    return server


def _cli(*argv: str) -> int:
    """Run a real ``logowatch ingest`` / ``brands`` subcommand in-process, parsed by those
    packages' own parsers (``logowatch.cli`` imports this module, so not through it)."""
    from analytics import cli as analytics_cli
    from ingest import cli as ingest_cli

    parser = argparse.ArgumentParser(prog="logowatch")
    sub = parser.add_subparsers(dest="command", required=True)
    ingest_cli.register(sub)
    analytics_cli.register(sub)
    args = parser.parse_args(list(argv))
    return int(args.func(args) or 0)


def _ingest(bootstrap: str, database_url: str, topic: str, posts: list[dict[str, Any]],
            path: Path) -> None:
    """The feed goes in through the real ``logowatch ingest file`` command, exactly as a user
    would run it, but without cross-run dedup: every demo run sends its whole feed again, so a
    new demo model scores every post (the worker's upserts make the repeat harmless)."""
    path.write_text("".join(json.dumps(p) + "\n" for p in posts))
    code = _cli("ingest", "file", str(path), "--once", "--bootstrap-servers", bootstrap,
                "--database-url", database_url, "--topic", topic, "--metrics-port", "0",
                "--no-checkpoint")
    if code not in (0, 3):
        raise WorkerError(f"ingesting the demo feed failed (exit {code})")


def run_demo(args: argparse.Namespace) -> int:
    from logowatch import migrate

    args.once_requested = args.once
    state_dir: Path = args.state_dir.resolve()
    state_dir.mkdir(parents=True, exist_ok=True)
    bootstrap, database_url = _services(args)
    args.bootstrap_servers, args.database_url = bootstrap, database_url
    migrate.upgrade(database_url)
    print("demo: database migrated")
    model = Path(args.model) if args.model else _demo_model(state_dir, args.train_images)
    args.model = str(model)
    bundle = commands.load_model(args)
    for brand in bundle.brands:  # the catalogue the views match captions against
        _cli("brands", "add", brand, "--database-url", database_url)
    from logowatch.services import ensure_topics

    ensure_topics(bootstrap, [args.topic, f"{args.topic}.dlq"], partitions=4)
    folder, rows = _feed_images(state_dir, args.posts)
    server = _serve(folder)
    try:
        host = f"127.0.0.1:{server.server_address[1]}"
        _ingest(bootstrap, database_url, args.topic, _posts(rows, f"http://{host}"),
                state_dir / "demo-feed.jsonl")
        args.allow_host = [*args.allow_host, host]
        where = (f"http://127.0.0.1:{args.metrics_port}/metrics" if args.metrics_port
                 else "off")
        tiles = commands.tiles_spec(args, bundle) is not None
        print(f"demo: detector running (metrics: {where}, tiles: {tiles}), processing "
              "the feed")
        args.once = True
        interrupted = _run_worker(commands.worker_config(args, bundle), bundle)
        _summary(database_url, bundle)
        _accuracy(database_url, bundle, rows)
        if not (args.once_requested or interrupted):
            print("\ndemo: the detector keeps watching the topic for new posts; Ctrl-C stops it")
            args.once = False
            _run_worker(commands.worker_config(args, bundle), bundle)
    finally:
        server.shutdown()
    return 0


def _run_worker(worker_config: Any, bundle: Any) -> bool:
    """Run a worker until it is done or stopped; True when a signal stopped it."""
    from workers.worker import Worker

    worker = Worker(worker_config, bundle)
    worker.install_signal_handlers()
    worker.run()
    return worker.stop_event.is_set()


def _summary(database_url: str, bundle: Any) -> None:
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            statuses = conn.execute(text(
                "SELECT image_status, count(*) FROM posts GROUP BY 1 ORDER BY 1")).all()
            brands = conn.execute(text(
                "SELECT brand, count(*) FILTER (WHERE in_image), count(*) FILTER (WHERE in_text),"
                " count(*) FILTER (WHERE kind = 'image_only') FROM brand_mentions "
                "GROUP BY 1 ORDER BY 1")).all()
            total = conn.execute(text("SELECT count(*) FROM detections")).scalar_one()
    finally:
        engine.dispose()
    if not statuses:
        raise WorkerError("the demo wrote no rows: see the log above")
    print("\nposts by image status: " + ", ".join(f"{s}={n}" for s, n in statuses))
    print(f"detection rows: {total} (model {bundle.version})")
    print("mentions per brand (view brand_mentions; image-only = the reach text analytics "
          "misses):")
    print(f"{'brand':<10} {'in image':>9} {'in text':>8} {'image only':>11}")
    for brand, seen, said, image_only in brands:
        print(f"{brand:<10} {seen:>9} {said:>8} {image_only:>11}")
    print(f"\nquery it: psql '{database_url.replace('+psycopg2', '')}'")
    print("stop the services: logowatch services down")


# What the numbers above are not: measured by `python -m bench.real_logos` (docs/benchmarks.md).
REALISTIC = ("this feed is drawn by detector.synth, the easy case. On real brand marks in "
             "photographs training never saw, the demo's recipe (heads only) measures mean AP "
             "0.10 (chance 0.05); `logowatch train` with its defaults (marks mined from the "
             "photos) 0.70 and `brands add --logo` 0.72, at precision 1.00 and recall "
             "0.14-0.44: see docs/benchmarks.md, 'Detector quality on real marks in "
             "photographs'")


def _accuracy(database_url: str, bundle: Any, rows: list[Any]) -> None:
    """Precision and recall of the stored detections against the feed's synthetic truth."""
    from sqlalchemy import create_engine, text

    engine = create_engine(database_url)
    try:
        with engine.connect() as conn:
            found = conn.execute(text(
                "SELECT post_id, brand FROM detections WHERE model_version = :v AND present"),
                {"v": bundle.version}).all()
            scored = {r[0] for r in conn.execute(text(
                "SELECT DISTINCT post_id FROM detections WHERE model_version = :v"),
                {"v": bundle.version})}
    finally:
        engine.dispose()
    said = {(post, brand) for post, brand in found}
    truth = {(_post_id(i), b) for i, row in enumerate(rows) for b in row.brands
             if _post_id(i) in scored}
    if not scored:
        return
    print(f"\nagainst the feed's known truth ({len(scored)} scored posts, "
          f"{bundle.metadata['backbone']['weights']} weights):")
    print(f"{'brand':<10} {'precision':>9} {'recall':>7} {'tp':>4} {'fp':>4} {'fn':>4}")
    for brand in [*bundle.brands, "all"]:
        s = {x for x in said if brand in ("all", x[1])}
        t = {x for x in truth if brand in ("all", x[1])}
        tp = len(s & t)
        precision = tp / len(s) if s else float("nan")
        recall = tp / len(t) if t else float("nan")
        print(f"{brand:<10} {precision:>9.2f} {recall:>7.2f} {tp:>4} {len(s - t):>4} "
              f"{len(t - s):>4}")
    print(REALISTIC)
