"""Subcommands that belong to the composition root: local services and migrations."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path
from typing import Any

from workers import config
from workers.errors import WorkerError
from workers.metrics import DEFAULT_PORT as DEFAULT_METRICS_PORT

DEFAULT_STATE = Path(os.environ.get("LOGOWATCH_STATE_DIR", ".logowatch"))


def register(sub: argparse._SubParsersAction) -> None:
    services = sub.add_parser(
        "services",
        help="start/stop a local Kafka broker and PostgreSQL (no Docker needed)",
        description="Run the official Apache Kafka broker (KRaft, jars from Maven Central) and a "
        "private PostgreSQL cluster on 127.0.0.1, with data kept under --state-dir.",
    )
    services.add_argument("action", choices=["up", "down", "status"])
    services.add_argument("--state-dir", type=Path, default=DEFAULT_STATE,
                          help="where data, logs and pids live (env LOGOWATCH_STATE_DIR; "
                          "default .logowatch)")
    services.add_argument("--kafka-port", type=int, default=9092,
                          help="broker port on 127.0.0.1 (default 9092)")
    services.add_argument("--postgres-port", type=int, default=5432,
                          help="PostgreSQL port on 127.0.0.1 (default 5432); ignored when "
                          "DATABASE_URL points at an existing server")
    services.add_argument("--no-postgres", action="store_true",
                          help="start Kafka only (use the server in DATABASE_URL)")
    services.set_defaults(func=run_services)

    migrate = sub.add_parser(
        "migrate",
        help="upgrade (or downgrade) the database schema",
        description="Apply the Alembic migrations in migrations/ to DATABASE_URL, then set "
        "the passwords of the roles they create from LOGOWATCH_READER_PASSWORD, "
        "LOGOWATCH_WORKER_PASSWORD, LOGOWATCH_INGEST_PASSWORD and "
        "LOGOWATCH_WATCHDOG_PASSWORD, each when set.",
    )
    migrate.add_argument("--database-url", default=config.database_url(),
                         help="SQLAlchemy URL (env DATABASE_URL)")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--downgrade", action="store_true",
                         help="downgrade to --revision instead of upgrading (e.g. base)")
    migrate.set_defaults(func=run_migrate)

    detect = sub.add_parser(
        "detect",
        help="run the streaming detector worker (Kafka posts -> Postgres detections)",
        description="Consume the posts topic in a consumer group, fetch and decode each image, "
        "run the model bundle's backbone once per image and every brand head, and write posts, "
        "detections and embeddings to Postgres. Offsets are committed only after the database "
        "commit. Scale out by starting more workers with the same --group.",
    )
    add_worker_flags(detect)
    detect.add_argument("--once", action="store_true",
                        help="process what is in the topic now, then exit")
    detect.set_defaults(func=run_detect)


def add_worker_flags(p: argparse.ArgumentParser, *, model_required: bool = True) -> None:
    env = config.env
    add_scoring_flags(p, model_required=model_required, max_wait_ms=200, fetch_workers=16)
    p.add_argument("--bootstrap-servers", default=config.bootstrap_servers(),
                   help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS)")
    p.add_argument("--database-url", default=config.database_url(),
                   help="SQLAlchemy URL (env DATABASE_URL)")
    p.add_argument("--topic", default=env("LOGOWATCH_TOPIC", "posts"),
                   help="topic to consume (default posts; dead letters go to TOPIC.dlq)")
    p.add_argument("--group", default=env("LOGOWATCH_GROUP", "logowatch-detectors"),
                   help="consumer group (default logowatch-detectors)")
    p.add_argument("--max-inflight", type=_positive, default=256,
                   help="records in flight before partitions are paused (default 256)")
    p.add_argument("--metrics-port", type=_port,
                   default=env("LOGOWATCH_METRICS_PORT", str(DEFAULT_METRICS_PORT)),
                   help="serve /metrics, /healthz, /readyz here; 0 disables (default "
                   f"{DEFAULT_METRICS_PORT}; env LOGOWATCH_METRICS_PORT)")
    p.add_argument("--metrics-host", default=env("LOGOWATCH_METRICS_HOST", "127.0.0.1"),
                   help="address the metrics server binds (default 127.0.0.1, this machine "
                   "only; 0.0.0.0 for every interface, as in compose; env "
                   "LOGOWATCH_METRICS_HOST)")
    p.add_argument("--drain-timeout", type=float, default=30.0,
                   help="seconds to finish in-flight work on shutdown or revoke (default 30)")
    p.add_argument("--stall-timeout", type=float, default=120.0,
                   help="seconds without progress while records wait before /healthz turns "
                   "unhealthy; after twice this the worker exits 1 for its supervisor to "
                   "restart it (default 120)")
    p.add_argument("--pseudonymise-authors", action="store_true",
                   help="store authors as a keyed HMAC (key from env LOGOWATCH_AUTHOR_KEY)")


def add_scoring_flags(p: argparse.ArgumentParser, *, model_required: bool = True,
                      max_wait_ms: int, fetch_workers: int) -> None:
    """What `detect`, `classify` and `serve` share: the model, batching, tiles, the fetcher."""
    env = config.env
    p.add_argument("--model", required=model_required and not env("LOGOWATCH_MODEL"),
                   default=env("LOGOWATCH_MODEL"),
                   help="model bundle directory (env LOGOWATCH_MODEL)")
    p.add_argument("--weights", default=env("LOGOWATCH_WEIGHTS"),
                   help="backbone weights: imagenet, none or a file (default: as recorded in "
                   "the bundle; env LOGOWATCH_WEIGHTS)")
    p.add_argument("--batch-size", type=_positive, default=32,
                   help="images per inference batch (default 32)")
    p.add_argument("--max-wait-ms", type=_positive, default=max_wait_ms,
                   help=f"close a partial batch after this many ms (default {max_wait_ms})")
    p.add_argument("--tiles", action=argparse.BooleanOptionalAction, default=None,
                   help="score an overlapping grid of tiles per image too (small logos), "
                   "keeping the best score per brand and its region. Default: as the bundle "
                   "was trained (its thresholds were tuned on the max over the image and its "
                   "tiles); --no-tiles scores the whole image only")
    add_fetch_flags(p, fetch_workers=fetch_workers)


def add_fetch_flags(p: argparse.ArgumentParser, *, fetch_workers: int) -> None:
    """How images are fetched: every command that fetches uses the worker's fetcher."""
    p.add_argument("--fetch-workers", type=_positive, default=fetch_workers,
                   help=f"threads fetching and decoding images (default {fetch_workers})")
    p.add_argument("--allow-host", action="append", default=[], metavar="HOST:PORT",
                   help="let the fetcher reach this exact non-public host:port (repeatable; "
                   "for a local image server). Everything non-public is refused otherwise")
    p.add_argument("--max-image-bytes", type=_positive, default=20 * 1024 * 1024,
                   help="refuse images larger than this (default 20 MiB)")
    p.add_argument("--fetch-timeout", type=float, default=10.0,
                   help="longest wait for any one network read, in seconds; twice this is "
                   "the deadline for the whole fetch of an image, retries, redirects, connect, "
                   "headers and body included (default 10)")
    p.add_argument("--fetch-retries", type=int, default=2,
                   help="retries on timeouts and 5xx, with jittered back-off, within the "
                   "deadline (default 2)")


def fetch_config(args: argparse.Namespace) -> Any:
    from workers.fetch import FetchConfig

    return FetchConfig(max_bytes=args.max_image_bytes, read_timeout=args.fetch_timeout,
                       total_timeout=2 * args.fetch_timeout, retries=args.fetch_retries,
                       allow_hosts=args.allow_host, pool_size=args.fetch_workers)


def tiles_spec(args: argparse.Namespace, bundle: object) -> Any:
    """The bundle's own tiles unless ``--no-tiles``; ``--tiles`` on a bundle trained without
    them scores the default grid (its thresholds were then tuned on the whole image)."""
    from detector.preprocess import TileSpec

    own = getattr(bundle, "tiles", None)
    if args.tiles is None:
        return own
    return (own or TileSpec()) if args.tiles else None


def start_scorer(args: argparse.Namespace, metrics: Any, *, max_queue: int) -> Any:
    """The bundle, fetcher and scorer the flags of ``add_scoring_flags`` describe."""
    from logowatch.scoring import Scorer, ScorerConfig
    from workers.fetch import Fetcher

    try:
        fetcher = Fetcher(fetch_config(args))
    except (OSError, ValueError) as exc:
        raise WorkerError(f"--allow-host: {exc}") from None
    bundle = load_model(args)
    return Scorer(bundle, fetcher, metrics, ScorerConfig(
        batch_size=args.batch_size, max_wait=args.max_wait_ms / 1000,
        fetch_workers=args.fetch_workers, max_queue=max_queue,
        tiles=tiles_spec(args, bundle)))


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"{text} must be positive")
    return value


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number") from None
    if not 0 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"port {value} is not in 0..65535")
    return value


def worker_config(args: argparse.Namespace, bundle: object) -> object:
    from ingest.producer import kafka_security_from_env
    from workers.worker import WorkerConfig

    pseudonymise = None
    if args.pseudonymise_authors:
        key = config.env("LOGOWATCH_AUTHOR_KEY")
        if not key:
            raise WorkerError("--pseudonymise-authors needs LOGOWATCH_AUTHOR_KEY in the env")
        from analytics.privacy import pseudonymise as hmac_author

        def pseudonymise(author: str) -> str:
            return hmac_author(author, key)

    return WorkerConfig(
        bootstrap=args.bootstrap_servers, database_url=args.database_url, topic=args.topic,
        group=args.group, batch_size=args.batch_size, max_wait_ms=args.max_wait_ms,
        fetch_workers=args.fetch_workers, max_inflight=args.max_inflight,
        tiles=tiles_spec(args, bundle), fetch=fetch_config(args),
        metrics_port=args.metrics_port or None, metrics_host=args.metrics_host,
        drain_timeout=args.drain_timeout, once=getattr(args, "once", False),
        stall_timeout=args.stall_timeout,
        pseudonymise=pseudonymise, kafka_options=kafka_security_from_env(),
    )


def load_model(args: argparse.Namespace) -> object:
    from detector.bundle import load_bundle

    bundle = load_bundle(args.model, weights=args.weights, batch_size=args.batch_size)
    return bundle


def run_detect(args: argparse.Namespace) -> int:
    """Exit codes: 0 stopped cleanly (SIGTERM/SIGINT, or ``--once`` done); 1 one-line error
    (Kafka unreachable, ``--once`` topic missing, metrics address unusable, most records
    failing); 2 bad flag."""
    from kafka.errors import KafkaError

    from workers.worker import Worker

    bundle = load_model(args)
    try:
        worker = Worker(worker_config(args, bundle), bundle)  # type: ignore[arg-type]
        worker.install_signal_handlers()
        print(f"detector: model {bundle.version} ({len(bundle.brands)} brands), "  # type: ignore[attr-defined]
              f"topic {args.topic}, group {args.group}, batch {args.batch_size}"
              + (f", metrics on {args.metrics_host}:{args.metrics_port}/metrics"
                 if args.metrics_port else ""), flush=True)
        worker.run()
    except KafkaError as exc:
        raise WorkerError(f"Kafka at {args.bootstrap_servers} failed: {exc}") from None
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from logowatch import migrate

    try:
        if args.downgrade:
            migrate.downgrade(args.database_url, args.revision)
        else:
            migrate.upgrade(args.database_url, args.revision)
        print(f"database at revision {migrate.current(args.database_url) or 'base'}")
        for role, variable in migrate.ROLE_PASSWORDS.items():
            password = config.env(variable)
            if password and not args.downgrade:
                migrate.set_role_password(args.database_url, role, password)
                print(f"{role} password set from {variable}")
    except OperationalError as exc:
        raise WorkerError(f"cannot reach the database: {config.first_line(exc)}") from None
    return 0


def _state_file(state_dir: Path) -> Path:
    return state_dir / "services.json"


def run_services(args: argparse.Namespace) -> int:
    from logowatch import services as svc

    state_dir: Path = args.state_dir.resolve()
    state_path = _state_file(state_dir)
    state = json.loads(state_path.read_text()) if state_path.exists() else {}

    if args.action == "status":
        return _print_status(state, svc)
    if args.action == "down":
        if "kafka_pid" in state:
            svc.stop_pid(state["kafka_pid"])
        if state.get("postgres_dir"):
            svc.PostgresCluster(Path(state["postgres_dir"]), port=state["postgres_port"]).stop()
        state_path.unlink(missing_ok=True)
        print("services stopped")
        return 0

    started = time.monotonic()
    state_dir.mkdir(parents=True, exist_ok=True)
    os.chmod(state_dir, 0o755)
    if state.get("kafka_pid") and svc.pid_alive(state["kafka_pid"]):
        print(f"kafka already running on {state['bootstrap']}")
    else:
        broker = svc.KafkaBroker(state_dir / "kafka", port=args.kafka_port,
                                 controller_port=args.kafka_port + 1)
        broker.start()
        state.update(kafka_pid=broker.pid, bootstrap=broker.bootstrap)
    external = os.environ.get("DATABASE_URL")
    if args.no_postgres or external:
        state["database_url"] = external or config.database_url()
    else:
        cluster = svc.PostgresCluster(state_dir / "postgres", port=args.postgres_port)
        if not (cluster.data_dir / "postmaster.pid").exists():
            cluster.start()
        state.update(postgres_dir=str(cluster.data_dir), postgres_port=cluster.port,
                     database_url=cluster.create_database("logowatch", owner="logowatch"))
    state_path.write_text(json.dumps(state, indent=2))
    print(f"services up in {time.monotonic() - started:.1f}s")
    print(f"export KAFKA_BOOTSTRAP_SERVERS={state['bootstrap']}")
    if not external:
        print(f"export DATABASE_URL={state['database_url']}")
    return 0


def _print_status(state: dict, svc) -> int:  # type: ignore[no-untyped-def,type-arg]
    if not state:
        print("no services started from this state dir")
        return 1
    kafka_ok = bool(state.get("kafka_pid")) and svc.pid_alive(state["kafka_pid"])
    pg_ok = bool(state.get("postgres_port")) and svc.port_open(state["postgres_port"])
    print(f"kafka     {'up' if kafka_ok else 'DOWN'}  {state.get('bootstrap')}")
    if state.get("postgres_dir"):
        print(f"postgres  {'up' if pg_ok else 'DOWN'}  127.0.0.1:{state.get('postgres_port')}")
    return 0 if kafka_ok and (pg_ok or not state.get("postgres_dir")) else 1
