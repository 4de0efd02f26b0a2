"""Subcommands of the ``analytics`` package, registered on the ``logowatch`` parser.

``brands`` manages the catalogue the views match text against; ``report`` turns the views into
a table, charts and a page; ``retention`` and ``forget`` are the privacy controls. Database
work and matplotlib are imported inside the handlers so ``logowatch --help`` stays instant.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any


def _database_url(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--database-url", default=os.environ.get("DATABASE_URL"),
                        help="SQLAlchemy URL (env DATABASE_URL)")


def register(sub: argparse._SubParsersAction,
             extend_brands: Callable[[Any, argparse.ArgumentParser], None] | None = None,
             ) -> None:
    """Registers this package's commands; ``extend_brands(actions, add)`` lets the composition
    root (``workers``) add actions to ``brands`` and flags to ``brands add`` that need the
    detector and the fetcher, which this package must not import."""
    brands = sub.add_parser(
        "brands", help="manage the brand catalogue (text aliases, hashtags, handles)",
        description="Brands and how they are said in text. Matching is case- and "
        "accent-insensitive and whole-word; hashtags and @handles match posts' tags.")
    actions = brands.add_subparsers(dest="action", required=True,
                                    parser_class=type(brands))
    add = actions.add_parser("add", help="add a brand or more aliases to one")
    add.add_argument("brand", help="the name the detector's head uses, e.g. patagonia")
    add.add_argument("--display-name", help="how reports print it, e.g. Patagonia")
    add.add_argument("--word", action="append", default=[], metavar="TEXT",
                     help="caption word or phrase (repeatable)")
    add.add_argument("--hashtag", action="append", default=[], metavar="TAG",
                     help="hashtag, with or without # (repeatable)")
    add.add_argument("--handle", action="append", default=[], metavar="HANDLE",
                     help="@handle, with or without @ (repeatable); with no alias at all, "
                     "the brand name is used as word, hashtag and handle")
    listing = actions.add_parser("list", help="list brands, aliases and current models")
    remove = actions.add_parser("remove", help="remove a brand and its aliases")
    remove.add_argument("brand")
    load = actions.add_parser("load", help="add/update brands from a YAML file")
    load.add_argument("file", type=Path, help="YAML with a 'brands:' mapping (docs/analytics.md)")
    pin = actions.add_parser("pin", help="keep a brand's views on one model version")
    pin.add_argument("brand")
    pin.add_argument("model_version")
    unpin = actions.add_parser("unpin", help="back to the newest model with the brand")
    unpin.add_argument("brand")
    for action in (add, listing, remove, load, pin, unpin):
        _database_url(action)
    brands.set_defaults(func=run_brands)
    if extend_brands is not None:
        extend_brands(actions, add)

    report = sub.add_parser(
        "report", help="image-vs-text report for one brand: table, PNG charts, HTML",
        description="Reads the brand_* views (works as logowatch_reader) and writes "
        "daily_mentions.png, image_only_share.png, top_accounts.png and index.html.")
    _database_url(report)
    report.add_argument("--brand", required=True)
    report.add_argument("--since", default="30d",
                        help="period start: 30d, 4w (counting today) or YYYY-MM-DD")
    report.add_argument("--until", help="last day, YYYY-MM-DD (default today, UTC)")
    report.add_argument("--out", type=Path,
                        help="folder for charts and index.html (default report-BRAND)")
    report.set_defaults(func=run_report)

    retention = sub.add_parser(
        "retention", help="delete posts older than N days, with detections and embeddings",
        description="Deletes posts older than --days (by posted time, else ingest time) "
        "and every row derived from them, plus producer ids older than that.")
    _database_url(retention)
    retention.add_argument("--days", type=int, required=True)
    retention.add_argument("--dry-run", action="store_true", help="count, delete nothing")
    retention.set_defaults(func=run_retention)

    forget = sub.add_parser(
        "forget", help="remove a person's or a post's data everywhere",
        description="Deletes posts (and detections, embeddings, producer ids) of an author "
        "or one post. Pseudonymised authors are found with LOGOWATCH_AUTHOR_KEY.")
    _database_url(forget)
    who = forget.add_mutually_exclusive_group(required=True)
    who.add_argument("--author", help="handle, plain; hashed with LOGOWATCH_AUTHOR_KEY too")
    who.add_argument("--post", help="post id; carousel children <id>:<n> go with it")
    forget.set_defaults(func=run_forget)

    watchdog = sub.add_parser(
        "watchdog", help="cancel a role's statements that outrun a limit it cannot lift",
        description="Polls pg_stat_activity and cancels every statement of --role older than "
        "--limit seconds: the reader can SET statement_timeout = 0, it cannot stop this. "
        "Connect as a superuser or a role with pg_read_all_stats and pg_signal_backend.")
    _database_url(watchdog)
    watchdog.add_argument("--role", default="logowatch_reader")
    watchdog.add_argument("--limit", type=float, default=60.0,
                          help="seconds a statement may run (default 60, the reader's "
                          "statement_timeout)")
    watchdog.add_argument("--interval", type=float, default=1.0, help="seconds between polls")
    watchdog.set_defaults(func=run_watchdog)


def run_brands(args: argparse.Namespace) -> int:
    from analytics import catalogue
    from analytics.db import transaction

    with transaction(args.database_url) as conn:
        if args.action == "add":
            spec = catalogue.BrandSpec(args.brand, args.display_name, args.word, args.hashtag,
                                       args.handle)
            added = catalogue.add(conn, spec)
            print(f"brand {spec.brand.strip()}: {added} new alias(es)")
        elif args.action == "load":
            specs = catalogue.read_yaml(args.file)
            for spec in specs:
                catalogue.add(conn, spec, replace_aliases=True)
            print(f"loaded {len(specs)} brand(s) from {args.file}")
        elif args.action == "remove":
            catalogue.remove(conn, args.brand)
            print(f"removed brand {args.brand}")
        elif args.action == "pin":
            catalogue.pin(conn, args.brand, args.model_version)
            print(f"brand {args.brand} pinned to model {args.model_version}")
        elif args.action == "unpin":
            done = catalogue.unpin(conn, args.brand)
            print(f"brand {args.brand} " + ("unpinned" if done else "was not pinned"))
        else:
            _print_brands(catalogue.listing(conn))
    return 0


def _print_brands(rows: list[dict]) -> None:  # type: ignore[type-arg]
    if not rows:
        print("no brands yet: logowatch brands add NAME")
        return
    for row in rows:
        model = row["model_version"] or "no model"
        if row["pinned"]:
            model += " (pinned)"
        aliases = " ".join(sorted(row["aliases"] or [])) or "(no text aliases)"
        print(f"{row['brand']:<24} {model:<28} {aliases}")


def run_report(args: argparse.Namespace) -> int:
    from datetime import UTC, date, datetime

    from analytics import report
    from analytics.db import transaction
    from analytics.errors import AnalyticsError

    since = report.parse_since(args.since)
    try:
        until = date.fromisoformat(args.until) if args.until else datetime.now(UTC).date()
    except ValueError:
        raise AnalyticsError(f"--until {args.until!r}: expected YYYY-MM-DD") from None
    with transaction(args.database_url) as conn:
        data = report.load(conn, args.brand, since, until)
    print(report.render_table(data))
    out = args.out or Path(f"report-{args.brand}")
    try:
        written = report.write_charts(data, out)
    except OSError as exc:
        raise AnalyticsError(f"cannot write the report to {out}: {exc.strerror}") from None
    print(f"\nwrote {len(written)} files to {out}/ (open {out / 'index.html'})")
    return 0


def run_retention(args: argparse.Namespace) -> int:
    from analytics import privacy
    from analytics.db import transaction

    with transaction(args.database_url) as conn:
        removed = privacy.retention(conn, args.days, dry_run=args.dry_run)
    if args.dry_run:
        print(f"would delete {removed.posts} posts older than {args.days} days")
    else:
        print(f"retention {args.days} days: removed {removed.summary()}")
    return 0


def run_forget(args: argparse.Namespace) -> int:
    from analytics import privacy
    from analytics.db import transaction

    with transaction(args.database_url) as conn:
        if args.post is not None:
            removed = privacy.forget_post(conn, args.post)
            what = f"post {args.post}"
        else:
            removed = privacy.forget_author(conn, args.author, privacy.author_key_from_env())
            what = f"author {args.author}"
    print(f"forgot {what}: removed {removed.summary()}")
    return 0


def run_watchdog(args: argparse.Namespace) -> int:
    import signal

    from analytics import watchdog
    from analytics.errors import AnalyticsError

    if not args.database_url:
        raise AnalyticsError("no database: pass --database-url or set DATABASE_URL")
    stopping: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: stopping.append(signum))
    watchdog.watch(args.database_url, args.role, args.limit, args.interval,
                   should_stop=lambda: bool(stopping))
    return 0
