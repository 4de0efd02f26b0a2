"""``python -m bench.views``: the brand views at a million posts, as the dashboards use them.

Loads N posts (default 1,000,000) over a year with detections for every brand head, generated
in SQL, then runs, as ``logowatch_reader``, every SQL panel and variable of the Grafana
dashboards (over the dashboards' default range, the last 30 days of the data) and the queries
of ``logowatch report --since 30d`` (captured from ``analytics.report.load`` itself), and prints
each query's median time and plan: which relations it read and how, and whether any sequential
scan touched ``posts`` or ``detections``. Speed is measured here, never asserted in tests.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import time
from datetime import date, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, create_engine, event, text
from sqlalchemy.engine import make_url

FIRST_DAY = date(2025, 1, 1)
RANGE_DAYS = 30  # the Brand analytics dashboard's default range (now-30d .. now)
BIG_TABLES = ("posts", "detections", "brand_text_matches")

LOAD = {
    "brands and aliases": """
        INSERT INTO brands (brand, display_name)
        SELECT 'brand' || b, 'Brand ' || b FROM generate_series(0, :brands - 1) b;
        INSERT INTO brand_aliases (brand, kind, alias)
        SELECT 'brand' || b, k.kind, k.alias FROM generate_series(0, :brands - 1) b,
        LATERAL (VALUES ('word', 'brand' || b), ('word', 'brand' || b || ' outdoor gear'),
                        ('hashtag', 'brand' || b), ('mention', 'brand' || b || 'official')
        ) k(kind, alias);
        INSERT INTO models (model_version, backbone, brands, created_at)
        SELECT v, 'inception_v3', jsonb_object_agg('brand' || b, 0.5), c
        FROM (VALUES ('old', timestamptz '2024-06-01'), ('current', timestamptz '2025-01-01'))
             m(v, c), generate_series(0, :brands - 1) b GROUP BY v, c""",
    # One post in ten names a brand in its caption, one in seven tags it, one in 23 @s it;
    # one in a hundred has no posted time (its day is its ingest day).
    "posts (text matches by trigger)": """
        INSERT INTO posts (post_id, source, author, caption, hashtags, mentions, image_url,
                           posted_at, ingested_at)
        SELECT 'p' || i, 'bench', 'user' || (i::bigint * 7919 % 50000),
               CASE WHEN i % 10 = 0
                    THEN 'Summit day in my BRAND' || (i / 10 % :brands) || ' jacket, finally!'
                    ELSE 'Long walk along the ridge at sunset, cold wind, worth it #' || i % 97
               END,
               CASE WHEN i % 7 = 0 THEN ARRAY['brand' || (i % :brands), 'hike']
                    ELSE ARRAY['hike', 'outdoors', 'tag' || i % 97] END,
               CASE WHEN i % 23 = 0 THEN ARRAY['brand' || (i % :brands) || 'official']
                    ELSE '{}'::text[] END,
               'https://img.example/' || i || '.jpg',
               CASE WHEN i % 100 <> 0 THEN t END, t
        FROM generate_series(1, :posts) i,
             LATERAL (SELECT timestamptz '2025-01-01 00:00Z'
                             + (i::float8 / :posts * 365) * interval '1 day' AS t) x""",
    # Every head scores every image (as the worker does); about 8% present. The old model
    # scored one brand on a tenth of the posts: rows the views must skip. A bulk load, so the
    # day is copied here in one pass; the per-row trigger the worker's inserts go through is
    # proven by tests/integration/test_analytics_views.py.
    "detections (bulk, day copied)": """
        ALTER TABLE detections DISABLE TRIGGER detections_day;
        INSERT INTO detections (post_id, brand, model_version, score, present, posted_at, day)
        SELECT p.post_id, 'brand' || b, 'current', s, s > 0.92, p.posted_at, p.day
        FROM posts p, generate_series(0, :brands - 1) b,
             LATERAL (SELECT (hashtext(p.post_id || b) & 1023) / 1023.0 AS s) x;
        INSERT INTO detections (post_id, brand, model_version, score, present, posted_at, day)
        SELECT post_id, 'brand0', 'old', 0.99, true, posted_at, day FROM posts
        WHERE right(post_id, 1) = '3';
        ALTER TABLE detections ENABLE TRIGGER detections_day""",
    # A catalogue change re-matches that brand over every post.
    "one alias added (re-match a brand)": """
        INSERT INTO brand_aliases (brand, kind, alias) VALUES ('brand1', 'word', 'brand1 trail')""",
    # What autovacuum does to a table after bulk inserts: statistics and the visibility map
    # (index-only scans need it).
    "vacuum analyze": "VACUUM ANALYZE",
}


def load(conn: Connection, posts: int, brands: int) -> dict[str, float]:
    seconds = {}
    for name, sql in LOAD.items():
        started = time.perf_counter()
        if sql.startswith("VACUUM"):  # runs outside a transaction only
            conn.connection.dbapi_connection.autocommit = True
            conn.exec_driver_sql(sql)
            conn.connection.dbapi_connection.autocommit = False
        else:
            for statement in sql.split(";"):
                conn.execute(text(statement), {"posts": posts, "brands": brands})
        conn.commit()
        seconds[name] = time.perf_counter() - started
    return seconds


def report_queries(reader: Connection, brand: str, since: date, until: date) -> list[
        tuple[str, str]]:
    """The statements ``logowatch report`` runs, captured as sent (parameters inlined)."""
    from analytics import report

    captured: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        captured.append(cursor.mogrify(statement, params).decode())

    event.listen(reader, "before_cursor_execute", capture)
    try:
        report.load(reader, brand, since, until)
    finally:
        event.remove(reader, "before_cursor_execute", capture)
    return [(report_query_name(i, sql), sql) for i, sql in enumerate(captured)]


def report_query_name(index: int, sql: str) -> str:
    """"report 3: brand_daily": the statement's place in the report and the view it reads."""
    view = re.search(r"\bFROM (brand_\w+)", sql)
    return f"report {index + 1}: {view.group(1) if view else 'other'}"


def dashboard_queries(brand: str, since: date, until: date) -> list[tuple[str, str]]:
    from tests.integration.test_analytics_grafana import expand, sql_queries

    return [(name, expand(sql, f"{since}T00:00:00Z", f"{until}T23:59:59Z", brand))
            for name, sql in sql_queries()]


def _nodes(plan: dict[str, Any]) -> list[dict[str, Any]]:
    found = [plan]
    for child in plan.get("Plans", []):
        found += _nodes(child)
    return found


def summarize(plan: dict[str, Any]) -> tuple[str, bool]:
    """"Index Scan detections (ix_...)"-style list of how the big tables were read, and
    whether any of them was read by a sequential scan."""
    reads, seq = [], False
    for node in _nodes(plan):
        relation = node.get("Relation Name")
        if relation not in BIG_TABLES:
            continue
        kind = node["Node Type"]
        seq = seq or (kind == "Seq Scan" and relation != "brand_text_matches")
        index = node.get("Index Name")
        reads.append(f"{kind} {relation}" + (f" ({index})" if index else ""))
    return "; ".join(dict.fromkeys(reads)) or "(no big table)", seq


def measure(reader: Connection, sql: str, runs: int) -> dict[str, Any]:
    reader.execute(text(sql)).all()  # warm the cache, as a dashboard refresh would
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        reader.execute(text(sql)).all()
        times.append((time.perf_counter() - started) * 1000)
    plan = reader.execute(text(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}")).scalar_one()[0]
    reads, seq = summarize(plan["Plan"])
    return {"median_ms": statistics.median(times), "max_ms": max(times),
            "server_ms": plan["Execution Time"], "reads": reads, "seq_scan_on_big_table": seq}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.views", description=__doc__)
    parser.add_argument("--posts", type=int, default=1_000_000)
    parser.add_argument("--brands", type=int, default=5)
    parser.add_argument("--runs", type=int, default=5, help="timed runs per query")
    parser.add_argument("--out", type=Path, default=Path("bench/results/latest-views.json"))
    args = parser.parse_args(argv)

    from logowatch import migrate
    from logowatch.services import PostgresCluster, make_private_tmpdir

    data_dir = make_private_tmpdir("logowatch-bench-views-")
    cluster = PostgresCluster(data_dir)
    cluster.start()
    try:
        url = cluster.create_database("bench_views")
        migrate.upgrade(url)
        owner = create_engine(url)
        with owner.connect() as conn:
            loaded = load(conn, args.posts, args.brands)
            sizes = {t: conn.execute(text(f"SELECT count(*) FROM {t}")).scalar_one()
                     for t in BIG_TABLES}
        owner.dispose()
        until = FIRST_DAY + timedelta(days=364)
        since = until - timedelta(days=RANGE_DAYS - 1)
        reader_engine = create_engine(make_url(url).set(username="logowatch_reader"))
        results = {}
        with reader_engine.connect() as reader:
            queries = dashboard_queries("brand0", since, until)
            queries += report_queries(reader, "brand0", since, until)
            for name, sql in queries:
                results[name] = {"sql": sql, **measure(reader, sql, args.runs)}
        reader_engine.dispose()
    finally:
        cluster.stop()
        shutil.rmtree(data_dir, ignore_errors=True)

    print(f"loaded {args.posts} posts, {args.brands} brands: "
          + ", ".join(f"{t} {n:,}" for t, n in sizes.items()))
    print("load seconds: " + ", ".join(f"{k} {v:.1f}" for k, v in loaded.items()))
    print(f"range {since} .. {until}, brand brand0, {args.runs} runs each, load average "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs\n")
    print("| query | median ms | max ms | EXPLAIN ANALYZE ms | how posts / detections / text "
          "matches are read |")
    print("|---|---:|---:|---:|---|")
    for name, r in results.items():
        flag = " **seq scan**" if r["seq_scan_on_big_table"] else ""
        print(f"| {name} | {r['median_ms']:.1f} | {r['max_ms']:.1f} | {r['server_ms']:.1f} | "
              f"{r['reads']}{flag} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"posts": args.posts, "brands": args.brands, "sizes": sizes,
                                    "load_seconds": loaded, "range": [str(since), str(until)],
                                    "queries": results}, indent=2))
    return 1 if any(r["seq_scan_on_big_table"] for r in results.values()) else 0


if __name__ == "__main__":
    raise SystemExit(main())
