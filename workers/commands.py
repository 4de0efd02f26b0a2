"""Subcommands that belong to the composition root: local services and migrations."""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

from workers import config
from workers.errors import WorkerError

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
        description="Apply the Alembic migrations in migrations/ to DATABASE_URL.",
    )
    migrate.add_argument("--database-url", default=config.database_url(),
                         help="SQLAlchemy URL (env DATABASE_URL)")
    migrate.add_argument("--revision", default="head", help="target revision (default head)")
    migrate.add_argument("--downgrade", action="store_true",
                         help="downgrade to --revision instead of upgrading (e.g. base)")
    migrate.set_defaults(func=run_migrate)


def run_migrate(args: argparse.Namespace) -> int:
    from sqlalchemy.exc import OperationalError

    from workers import migrate

    try:
        if args.downgrade:
            migrate.downgrade(args.database_url, args.revision)
        else:
            migrate.upgrade(args.database_url, args.revision)
        print(f"database at revision {migrate.current(args.database_url) or 'base'}")
    except OperationalError as exc:
        first = str(exc.orig).strip().splitlines()[0]
        raise WorkerError(f"cannot reach the database: {first}") from None
    return 0


def _state_file(state_dir: Path) -> Path:
    return state_dir / "services.json"


def run_services(args: argparse.Namespace) -> int:
    from workers import services as svc

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
