"""``logowatch ingest instagram|file|urls``: sources into the ``posts`` topic.

Flags default from the environment (``KAFKA_BOOTSTRAP_SERVERS``, ``DATABASE_URL``,
``LOGOWATCH_*``) so one set of variables configures a fleet. The Instagram token is read from
``INSTAGRAM_ACCESS_TOKEN`` only: a flag would put it in shell history and ``ps`` output.
Exit codes: 0 all produced, 1 fatal error, 3 invalid input lines skipped, 4 records not
delivered (see ``docs/ingest.md``).
"""

from __future__ import annotations

import argparse
import os
import threading
from collections.abc import Callable, Sequence
from typing import Any

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql+psycopg2://logowatch@127.0.0.1:5432/logowatch"
DEFAULT_GRAPH_URL = "https://graph.facebook.com/v23.0"


def _env(name: str, default: str) -> str:
    return os.environ.get(name) or default


def register(sub: argparse._SubParsersAction) -> None:
    ingest = sub.add_parser(
        "ingest",
        help="produce posts from Instagram, JSONL/CSV files or URL lists into Kafka",
        description="Read a source, skip posts already produced, and produce the rest to the "
        "posts topic (key = post id), remembering how far it got in Postgres.",
    )
    kinds = ingest.add_subparsers(dest="source_kind", required=True,
                                  parser_class=type(ingest))

    insta = kinds.add_parser(
        "instagram",
        help="hashtag media, a business account's media, or your own media via the Graph API",
        description="Needs INSTAGRAM_ACCESS_TOKEN in the environment (see docs/ingest.md).",
    )
    insta.add_argument("kind", choices=["hashtag", "user", "me"],
                       help="hashtag: media tagged #NAME; user: a business/creator account's "
                       "media (business discovery); me: the token's own account")
    insta.add_argument("targets", nargs="*", metavar="NAME",
                       help="hashtags (without #) or usernames; none for `me`")
    insta.add_argument("--edge", choices=["recent", "top", "both"], default="recent",
                       help="hashtag media edge (default recent: the last 24 hours)")
    insta.add_argument("--ig-user-id", default=_env("LOGOWATCH_IG_USER_ID", ""),
                       help="numeric id of your Instagram business/creator account "
                       "(env LOGOWATCH_IG_USER_ID)")
    insta.add_argument("--graph-url", default=_env("LOGOWATCH_GRAPH_URL", DEFAULT_GRAPH_URL),
                       help=f"Graph API base URL (env LOGOWATCH_GRAPH_URL; default "
                       f"{DEFAULT_GRAPH_URL})")
    insta.add_argument("--page-size", type=_positive, default=50,
                       help="media per page (max 50)")
    insta.add_argument("--max-pages", type=_positive, default=None,
                       help="pages per source per pass (default 100); the rest continues on "
                       "the next pass")
    insta.add_argument("--quiet-pages", type=_positive, default=None,
                       help="pages in a row with nothing new that end a pass (default 3)")
    insta.add_argument("--slowdown-at", type=_not_negative, default=75.0,
                       help="usage %% where calls start to be spaced out (default 75)")
    insta.add_argument("--pause-at", type=_not_negative, default=95.0,
                       help="usage %% where calls pause until the window frees (default 95)")
    insta.add_argument("--max-pace", type=_not_negative, default=30.0,
                       help="seconds between calls just below --pause-at (default 30)")
    insta.add_argument("--pause", type=_not_negative, default=300.0,
                       help="seconds to pause at --pause-at without an API estimate "
                       "(default 300)")
    insta.add_argument("--throttle-wait", type=_not_negative, default=60.0,
                       help="first wait after a throttling error, doubled per retry "
                       "(default 60)")
    insta.add_argument("--retries", type=_whole, default=5,
                       help="retries of a throttled or failed call (default 5)")
    _common(insta)
    insta.set_defaults(func=run_instagram)

    for name, fmt_help in (("file", "posts as JSONL or CSV (one post per line/row)"),
                           ("urls", "a plain list of image URLs, one per line")):
        parser = kinds.add_parser(name, help=fmt_help, description=fmt_help + "; `-` is stdin.")
        parser.add_argument("path", help="file to read, or - for standard input")
        if name == "file":
            parser.add_argument("--format", choices=["auto", "jsonl", "csv"], default="auto",
                                help="default: from the extension (.csv → csv, else jsonl)")
        parser.add_argument("--source", default=None,
                            help="the record's source name where a line has none "
                            "(default: file / urls)")
        parser.add_argument("--source-key", default=None,
                            help="checkpoint name (default: the file's absolute path)")
        _common(parser)
        parser.set_defaults(func=run_file if name == "file" else run_urls)


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--bootstrap-servers",
                        default=_env("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP),
                        help="Kafka brokers (env KAFKA_BOOTSTRAP_SERVERS)")
    parser.add_argument("--topic", default=_env("LOGOWATCH_TOPIC", "posts"),
                        help="topic to produce to (env LOGOWATCH_TOPIC; default posts)")
    parser.add_argument("--database-url", default=_env("DATABASE_URL", DEFAULT_DATABASE_URL),
                        help="Postgres for checkpoints and dedup (env DATABASE_URL)")
    parser.add_argument("--no-checkpoint", action="store_true",
                        help="run without Postgres: no resume, no dedup across runs")
    parser.add_argument("--compression",
                        choices=["auto", "gzip", "snappy", "lz4", "zstd", "none"],
                        default=_env("LOGOWATCH_COMPRESSION", "auto"),
                        help="Kafka compression (default auto: zstd)")
    parser.add_argument("--metrics-port", type=_port, default=_env("LOGOWATCH_METRICS_PORT", "0"),
                        help="serve Prometheus /metrics here (env LOGOWATCH_METRICS_PORT; "
                        "0 = off)")
    parser.add_argument("--metrics-host", default=_env("LOGOWATCH_METRICS_HOST", "127.0.0.1"),
                        help="address the metrics server binds (default 127.0.0.1; env "
                        "LOGOWATCH_METRICS_HOST)")
    parser.add_argument("--metrics-file", default=_env("LOGOWATCH_METRICS_FILE", ""),
                        help="also write the metrics here (Prometheus text format, for "
                        "node_exporter's textfile collector) when the run starts and ends "
                        "(env LOGOWATCH_METRICS_FILE)")
    when = parser.add_mutually_exclusive_group()
    when.add_argument("--once", action="store_true", help="one pass, then exit (default)")
    when.add_argument("--interval", type=_seconds, default=None, metavar="SECONDS",
                      help="poll the source again every SECONDS until SIGTERM/SIGINT")


def _whole(text: str) -> int:
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (0 or more)")
    return int(text)


def _positive(text: str) -> int:
    if _whole(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number of at least 1")
    return int(text)


def _not_negative(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of 0 or more")
    return value


def _seconds(text: str) -> float:
    if _not_negative(text) == 0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds above 0")
    return float(text)


def _port(text: str) -> int:
    if not text.isdigit() or int(text) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0..65535)")
    return int(text)


def run_file(args: argparse.Namespace) -> int:
    from ingest.files import FileSource

    return _run(args, f"file {args.path}", lambda stop: [
        FileSource(args.path, args.format, args.source, args.source_key)])


def run_urls(args: argparse.Namespace) -> int:
    from ingest.files import FileSource

    return _run(args, f"urls {args.path}", lambda stop: [
        FileSource(args.path, "urls", args.source, args.source_key)])


def run_instagram(args: argparse.Namespace) -> int:
    from ingest.errors import IngestError
    from ingest.graph import Backoff, GraphClient, guard_logs
    from ingest.instagram import MAX_PAGES, QUIET_PAGES, InstagramSource
    from ingest.pipeline import interruptible_sleep

    token = os.environ.get("INSTAGRAM_ACCESS_TOKEN", "").strip()
    if not token:
        raise IngestError("set INSTAGRAM_ACCESS_TOKEN to a Graph API user access token "
                          "(see docs/ingest.md); it is never accepted as a flag")
    if args.kind == "me" and args.targets:
        raise IngestError("`me` takes no names")
    if args.kind != "me" and not args.targets:
        raise IngestError(f"name at least one {'hashtag' if args.kind == 'hashtag' else 'user'}")
    unguard = guard_logs(token)

    def sources(stop: threading.Event) -> list[Any]:
        client = GraphClient(
            token, args.graph_url, sleep=interruptible_sleep(stop),
            backoff=Backoff(slowdown_at=args.slowdown_at, pause_at=args.pause_at,
                            max_pace=args.max_pace, pause=args.pause,
                            throttled=args.throttle_wait, retries=args.retries),
        )
        edges = ["recent", "top"] if args.edge == "both" else [args.edge]
        out = []
        for target in args.targets or ["me"]:
            for edge in edges if args.kind == "hashtag" else ["recent"]:
                out.append(InstagramSource(client, args.ig_user_id, args.kind, target,
                                           edge=edge, page_size=args.page_size,
                                           max_pages=args.max_pages or MAX_PAGES,
                                           quiet_pages=args.quiet_pages or QUIET_PAGES))
        return out

    try:
        return _run(args, f"instagram {args.kind}", sources)
    finally:
        unguard()


def _run(args: argparse.Namespace, name: str,
         make_sources: Callable[[threading.Event], Sequence[Any]]) -> int:
    from ingest import metrics
    from ingest.checkpoints import CheckpointStore
    from ingest.errors import IngestError
    from ingest.pipeline import Pipeline, install_signal_handlers
    from ingest.producer import RecordProducer, kafka_security_from_env

    stop = threading.Event()
    sources = make_sources(stop)  # validates arguments before anything connects
    metrics.serve(args.metrics_port, args.metrics_host)
    metrics.write(args.metrics_file)  # a path that cannot be written fails before any work
    store = None if args.no_checkpoint else CheckpointStore(args.database_url)
    producer = None
    restore_signals = install_signal_handlers(stop)
    try:
        producer = RecordProducer(args.bootstrap_servers, args.topic,
                                  compression=args.compression, **kafka_security_from_env())
        summary = Pipeline(producer, store, stop).run(sources, args.interval)
    finally:
        restore_signals()
        if producer is not None:
            producer.close()
        if store is not None:
            store.close()
    print(f"ingest {name}: {summary.line()}", flush=True)
    metrics.write(args.metrics_file)
    # After the summary, so what was produced before a failure is shown. A daemon's failed
    # passes were logged and retried; only one that no pass can fix (fatal) is its exit code.
    if summary.fatal or (summary.failed_passes and args.interval is None):
        raise IngestError(summary.error)
    return summary.exit_code
