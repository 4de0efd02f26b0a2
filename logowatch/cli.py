"""The one console script, ``logowatch``: every package registers its own subcommands here.

``logowatch`` is the composition root, so this is the only module that sees all packages. Each
package exposes ``register(subparsers)`` in its ``cli`` module and keeps heavy imports
(TensorFlow, Kafka) inside the command handlers, so ``logowatch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Sequence

from analytics.errors import AnalyticsError
from detector import tflog
from detector.errors import DetectorError
from ingest.errors import IngestError
from workers.errors import WorkerError

USER_ERRORS: tuple[type[BaseException], ...] = (
    AnalyticsError,
    DetectorError,
    IngestError,
    WorkerError,
)


class OneLineParser(argparse.ArgumentParser):
    """A parser whose errors are one line and exit 2, never a usage dump or a traceback."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _registrars() -> list[Callable[[argparse._SubParsersAction], None]]:
    from analytics import cli as analytics_cli
    from detector import cli as detector_cli
    from ingest import cli as ingest_cli
    from logowatch import classify, commands, demo, keys, onboard, rescore, serve

    return [
        commands.register,
        demo.register,
        rescore.register,
        classify.register,
        serve.register,
        keys.register,
        ingest_cli.register,
        detector_cli.register,
        functools.partial(analytics_cli.register, extend_brands=onboard.extend_brands),
    ]


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="logowatch",
        description="Brand analytics from social-media images.",
    )
    parser.add_argument(
        "--log-level",
        default=os.environ.get("LOGOWATCH_LOG_LEVEL", "INFO"),
        choices=["DEBUG", "INFO", "WARNING", "ERROR"],
        help="logging verbosity (env LOGOWATCH_LOG_LEVEL; default INFO)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=OneLineParser)
    for register in _registrars():
        register(sub)
    return parser


def database_url(value: str) -> str:
    """The URL as SQLAlchemy needs it: ``postgresql://`` and ``postgres://`` (what psql and
    most hosts give) mean the installed driver, psycopg2; anything else is a usage error. The
    message never repeats the URL, which may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        url = make_url(value)
    except ArgumentError:
        raise ValueError("not a database URL (expected postgresql://USER@HOST:PORT/DB)") \
            from None
    if url.drivername in ("postgresql", "postgres"):
        url = url.set(drivername="postgresql+psycopg2")
    if url.drivername != "postgresql+psycopg2":
        raise ValueError(f"driver {url.drivername!r} is not installed; use postgresql://")
    return url.render_as_string(hide_password=False)


def main(argv: Sequence[str] | None = None) -> int:
    tflog.quiet()  # TensorFlow's native start-up lines, unless TF_CPP_MIN_LOG_LEVEL asks
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "database_url", None):
        try:
            args.database_url = database_url(args.database_url)
        except ValueError as exc:
            parser.exit(2, f"logowatch {args.command}: error: --database-url (or env "
                        f"DATABASE_URL): {exc}\n")
    logging.basicConfig(
        level=args.log_level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.getLogger("alembic.runtime.plugins").setLevel(
        max(logging.WARNING, logging.getLogger().level))
    # kafka-python logs every failed connection attempt (and tracebacks while its sockets
    # close); our commands report what failed in one line, so its own log is for DEBUG only.
    logging.getLogger("kafka").setLevel(
        logging.DEBUG if args.log_level == "DEBUG" else logging.CRITICAL)
    try:
        return int(args.func(args) or 0)
    except USER_ERRORS as exc:
        print(f"logowatch {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"logowatch {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
