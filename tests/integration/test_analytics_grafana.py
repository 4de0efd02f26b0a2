"""The Grafana provisioning parses, every SQL panel runs as the reader role on the migrated
database, and every PromQL panel names only metrics the worker or the producer exports."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from tests.integration.analytics_seed import seed

pytestmark = pytest.mark.integration

GRAFANA = Path(__file__).resolve().parents[2] / "deploy" / "grafana"
DASHBOARDS = sorted((GRAFANA / "dashboards").glob("*.json"))

HISTOGRAM_SUFFIX = re.compile(r"_(bucket|sum|count)$")

# Grafana's macros as it expands them for a PostgreSQL datasource, over a wide range.
MACROS = {
    r"\$__timeFilter\(([^)]+)\)":
        r"\1 BETWEEN '2026-01-01T00:00:00Z' AND '2026-12-31T23:59:59Z'",
    r"\$__timeFrom\(\)": "'2026-01-01T00:00:00Z'",
    r"\$__timeTo\(\)": "'2026-12-31T23:59:59Z'",
    r"\$brand\b": "patagonia",
}


def panels() -> list[tuple[str, dict]]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        found += [(f"{board['title']} / {p['title']}", p) for p in board["panels"]]
    return found


def expand(sql: str) -> str:
    for pattern, value in MACROS.items():
        sql = re.sub(pattern, value, sql)
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


def test_datasources_use_the_reader_role_and_a_password_from_the_environment() -> None:
    config = yaml.safe_load((GRAFANA / "provisioning/datasources/logowatch.yml").read_text())
    by_uid = {d["uid"]: d for d in config["datasources"]}
    postgres = by_uid["logowatch-postgres"]
    assert postgres["user"] == "logowatch_reader"
    assert postgres["secureJsonData"]["password"] == "$LOGOWATCH_READER_PASSWORD"
    assert by_uid["logowatch-prometheus"]["url"] == "http://prometheus:9090"
    uids = {p["datasource"]["uid"] for _, p in panels()}
    assert uids <= set(by_uid), "a panel names a datasource that is not provisioned"


def test_both_dashboards_exist_with_unique_uids() -> None:
    boards = [json.loads(p.read_text()) for p in DASHBOARDS]
    assert {b["title"] for b in boards} == {"Brand analytics", "Pipeline health"}
    assert len({b["uid"] for b in boards}) == len(boards)


def test_every_sql_panel_and_variable_runs_as_the_reader(migrated_db: str) -> None:
    seed(migrated_db)
    reader = create_engine(make_url(migrated_db).set(username="logowatch_reader"))
    queries = [(name, t["rawSql"]) for name, p in panels() for t in p["targets"]
               if "rawSql" in t]
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            queries.append((f"variable {variable['name']}", variable["query"]))
    assert len(queries) >= 10
    empty = []
    with reader.connect() as conn:
        for name, sql in queries:
            if not conn.execute(text(expand(sql))).all():
                empty.append(name)
    reader.dispose()
    assert empty == [], "these panels show nothing on the seed"


def _scraped_metric_names() -> set[str]:
    """Metric families a real worker and a real ingest process serve over HTTP."""
    import urllib.request

    from ingest import metrics as ingest_metrics
    from workers.metrics import Health, WorkerMetrics, serve
    from workers.services import free_port

    worker_port, ingest_port = free_port(), free_port()
    server = serve(WorkerMetrics(), Health(), worker_port, host="127.0.0.1")
    ingest_metrics.serve(ingest_port)
    names: set[str] = set()
    try:
        for port in (worker_port, ingest_port):
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics") as response:
                body = response.read().decode()
            names |= {line.split()[2] for line in body.splitlines()
                      if line.startswith("# TYPE ")}
    finally:
        server.shutdown()
    return names


def test_every_promql_panel_names_a_metric_a_real_scrape_serves() -> None:
    exported = _scraped_metric_names()
    assert "logowatch_worker_records_total" in exported
    used = set()
    for name, panel in panels():
        for target in panel["targets"]:
            if "expr" not in target:
                continue
            metrics = set(re.findall(r"\blogowatch_[a-z0-9_]+", target["expr"]))
            assert metrics, f"{name}: no logowatch metric in {target['expr']}"
            used |= {HISTOGRAM_SUFFIX.sub("", m) for m in metrics}
    missing = {m for m in used if m not in exported and m.removesuffix("_total") not in exported}
    assert missing == set(), f"panels use metrics nobody exports: {sorted(missing)}"
    assert any(m.startswith("logowatch_worker_") for m in used)
    assert any(m.startswith("logowatch_ingest_") for m in used)
