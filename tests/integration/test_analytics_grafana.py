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


def expand(sql: str, start: str = "2026-01-01T00:00:00Z", end: str = "2026-12-31T23:59:59Z",
           brand: str = "patagonia") -> str:
    """The SQL as Grafana sends it to a PostgreSQL datasource (default: a wide range)."""
    macros = {
        r"\$__timeFilter\(([^)]+)\)": rf"\1 BETWEEN '{start}' AND '{end}'",
        r"\$__timeFrom\(\)": f"'{start}'",
        r"\$__timeTo\(\)": f"'{end}'",
        r"\$brand\b": brand,
    }
    for pattern, value in macros.items():
        sql = re.sub(pattern, value, sql)
    assert "$" not in sql, f"unexpanded macro in {sql}"
    return sql


def panels() -> list[tuple[str, dict]]:
    found = []
    for path in DASHBOARDS:
        board = json.loads(path.read_text())
        found += [(f"{board['title']} / {p['title']}", p) for p in board["panels"]]
    return found


def sql_queries() -> list[tuple[str, str]]:
    """Every SQL panel target and template variable, named, unexpanded."""
    queries = [(name, t["rawSql"]) for name, p in panels() for t in p["targets"]
               if "rawSql" in t]
    for path in DASHBOARDS:
        for variable in json.loads(path.read_text())["templating"]["list"]:
            queries.append((f"variable {variable['name']}", variable["query"]))
    return queries


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


@pytest.fixture(scope="module")
def seeded_db(migrated_db: str) -> str:
    seed(migrated_db)
    return migrated_db


def test_every_sql_panel_and_variable_runs_as_the_reader(seeded_db: str) -> None:
    reader = create_engine(make_url(seeded_db).set(username="logowatch_reader"))
    queries = sql_queries()
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
    from logowatch.services import free_port
    from workers.metrics import Health, WorkerMetrics, serve

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


def test_the_current_model_stat_shows_the_model_version(seeded_db: str) -> None:
    panel = dict(panels())["Brand analytics / Current model"]
    assert re.fullmatch(panel["options"]["reduceOptions"]["fields"].strip("/"), "model_version")
    engine = create_engine(seeded_db)
    try:
        with engine.connect() as conn:
            shown = conn.execute(text(expand(panel["targets"][0]["rawSql"]))).mappings().one()
    finally:
        engine.dispose()
    assert shown["model_version"] == "m2"
