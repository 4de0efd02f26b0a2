"""Least privilege and secrets: the worker's database role can upsert results and nothing
more; passwords and tokens stay out of logs; Kafka security settings reach the clients."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from logowatch import migrate
from logowatch.services import free_port
from tests.reliability.harness import REPO
from tests.support.pipeline import read_topic, rows

pytestmark = [pytest.mark.reliability, pytest.mark.integration]

WORKER_ROLE = "logowatch_worker"


@pytest.fixture(scope="module")
def worker_url(migrated_db: str) -> str:
    return make_url(migrated_db).set(username=WORKER_ROLE).render_as_string(hide_password=False)


@pytest.fixture(scope="module")
def worker_engine(worker_url: str) -> Iterator[Engine]:
    engine = create_engine(worker_url)
    yield engine
    engine.dispose()


def test_the_worker_role_writes_results_through_the_workers_own_sink(
    worker_url: str, migrated_db: str,
) -> None:
    from workers.sink import ResultWriter

    now = datetime.now(UTC)
    writer = ResultWriter(worker_url)
    writer.register_model("lp-model", "inception_v3@75", {"acme": 0.5}, {})
    post = {"post_id": "lp-1", "source": "test", "author": "a", "caption": "#acme",
            "hashtags": ["acme"], "mentions": [], "image_url": "http://example.com/x.jpg",
            "permalink": None, "posted_at": now, "image_status": "ok", "error": None,
            "extra": None}
    detection = {"post_id": "lp-1", "brand": "acme", "model_version": "lp-model", "score": 0.7,
                 "present": True, "region": None, "posted_at": now, "detected_at": now}
    embedding = {"post_id": "lp-1", "backbone": "inception_v3@75", "dim": 2,
                 "vector": b"\x00\x00\x00\x00", "created_at": now}
    try:
        writer.write([post], [detection], [embedding])
        writer.write([{**post, "caption": "again"}], [{**detection, "score": 0.9}], [embedding])
    finally:
        writer.close()
    assert rows(migrated_db, "SELECT caption FROM posts WHERE post_id = 'lp-1'") == [("again",)]
    assert rows(migrated_db, "SELECT score FROM detections WHERE post_id = 'lp-1'") == [(0.9,)]


@pytest.mark.parametrize("sql", [
    "DROP TABLE posts",
    "DROP TABLE detections CASCADE",
    "ALTER TABLE posts ADD COLUMN sneaky int",
    "ALTER TABLE detections DROP CONSTRAINT ck_detections_score_range",
    "TRUNCATE posts",
    "TRUNCATE embeddings",
    "DELETE FROM detections",
    "CREATE TABLE sneaky (x int)",
    "CREATE INDEX sneaky ON posts (caption)",
    "SELECT * FROM ingest_checkpoints",
    "INSERT INTO brands (brand) VALUES ('x')",
    "CREATE ROLE sneaky",
    "ALTER ROLE logowatch_worker SUPERUSER",
])
def test_the_worker_role_cannot_drop_alter_truncate_or_reach_beyond_its_tables(
    worker_engine: Engine, sql: str,
) -> None:
    with worker_engine.connect() as conn, pytest.raises(DBAPIError) as caught:
        conn.execute(text(sql))
    message = str(caught.value.orig)
    assert any(r in message for r in ("permission denied", "must be owner",
                                      "must have admin option", "must be superuser",
                                      "privilege")), message


def test_the_worker_role_survives_downgrade_of_another_database_and_comes_back(
    pg_cluster: Any, migrated_db: str,
) -> None:
    other = pg_cluster.create_database("t_worker_role_other")
    try:
        migrate.upgrade(other)
        migrate.downgrade(other, "0003")
        assert rows(migrated_db, "SELECT 1 FROM pg_roles WHERE rolname = :r", r=WORKER_ROLE) \
            == [(1,)]
        migrate.upgrade(other)  # on top of the surviving role
        migrate.downgrade(other, "base")
        migrate.upgrade(other)
    finally:
        pg_cluster.drop_database("t_worker_role_other")


def _cli(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    base = {k: v for k, v in os.environ.items()
            if not k.startswith(("KAFKA_", "LOGOWATCH_", "INSTAGRAM_")) and k != "DATABASE_URL"}
    return subprocess.run([sys.executable, "-m", "logowatch.cli", *argv], capture_output=True,
                          text=True, timeout=180, cwd=REPO,
                          env={**base, "PYTHONPATH": str(REPO), **env})


def test_ingest_and_migrate_never_print_the_database_password(
    bootstrap: str, topic: str, tmp_path: Path,
) -> None:
    password = "pw-Secret-91c2e"
    dead = f"postgresql+psycopg2://logowatch:{password}@127.0.0.1:{free_port()}/logowatch"
    source = tmp_path / "posts.jsonl"
    source.write_text(json.dumps({"post_id": "s1", "image_url": "http://example.com/a.jpg"})
                      + "\n")
    env = {"LOGOWATCH_LOG_LEVEL": "DEBUG", "DATABASE_URL": dead,
           "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    ingest = _cli("ingest", "file", str(source), "--topic", topic, env=env)
    migrate_run = _cli("migrate", env=env)
    for result in (ingest, migrate_run):
        output = result.stdout + result.stderr
        assert result.returncode == 1, output
        assert "Traceback" not in output
        assert password not in output


SECURITY_ENV = {
    "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",  # the broker under test speaks plaintext
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "detector",
    "KAFKA_SASL_PASSWORD": "sasl-Secret-5e1",
    "KAFKA_SSL_CAFILE": "/etc/ssl/certs/ca-certificates.crt",
}


def test_kafka_security_settings_from_the_environment_reach_the_workers_clients(
    bootstrap: str, migrated_db: str, topic: str, tiny_bundle: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from detector.bundle import load_bundle
    from logowatch.cli import build_parser
    from logowatch.commands import worker_config
    from workers.worker import Worker

    for name, value in SECURITY_ENV.items():
        monkeypatch.setenv(name, value)
    args = build_parser().parse_args([
        "detect", "--model", str(tiny_bundle), "--bootstrap-servers", bootstrap,
        "--database-url", migrated_db, "--topic", topic, "--metrics-port", "0", "--once"])
    bundle = load_bundle(tiny_bundle, batch_size=8)
    config = worker_config(args, bundle)
    expected = {"security_protocol": "PLAINTEXT", "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_plain_username": "detector", "sasl_plain_password": "sasl-Secret-5e1",
                "ssl_cafile": "/etc/ssl/certs/ca-certificates.crt"}
    assert config.kafka_options == expected  # type: ignore[attr-defined]
    worker = Worker(config, bundle)  # type: ignore[arg-type]
    try:
        for client in (worker.consumer, worker.producer):
            assert {k: client.config[k] for k in expected} == expected
    finally:
        worker.shutdown()


def test_ingest_honours_kafka_tls_settings_instead_of_falling_back_to_plaintext(
    bootstrap: str, topic: str, tmp_path: Path,
) -> None:
    source = tmp_path / "posts.jsonl"
    source.write_text(json.dumps({"post_id": "tls1", "image_url": "http://example.com/a.jpg"})
                      + "\n")
    result = _cli("ingest", "file", str(source), "--topic", topic, "--no-checkpoint",
                  env={"KAFKA_BOOTSTRAP_SERVERS": bootstrap, "KAFKA_SECURITY_PROTOCOL": "SSL"})
    # A TLS client cannot talk to this plaintext broker: nothing may be delivered.
    assert result.returncode != 0
    assert read_topic(bootstrap, topic, limit=1, timeout_ms=3000) == []


def test_the_ingest_role_keeps_its_checkpoints_and_reaches_nothing_else(
    migrated_db: str,
) -> None:
    from ingest.checkpoints import Checkpoint, CheckpointStore

    url = make_url(migrated_db).set(username="logowatch_ingest") \
        .render_as_string(hide_password=False)
    store = CheckpointStore(url)
    try:
        store.commit("lp-source", ["lp-a", "lp-b"], Checkpoint({"page": 2}, None))
        store.commit("lp-source", ["lp-b", "lp-c"], Checkpoint({"page": 3}, None))
        assert store.already_produced(["lp-a", "lp-c", "lp-z"]) == {"lp-a", "lp-c"}
        assert store.load("lp-source").cursor == {"page": 3}
        for sql in ("SELECT * FROM posts", "INSERT INTO posts (post_id) VALUES ('x')",
                    "DELETE FROM produced_posts", "TRUNCATE ingest_checkpoints",
                    "SELECT * FROM brand_daily"):
            with store.engine.connect() as conn, pytest.raises(DBAPIError) as caught:
                conn.execute(text(sql))
            assert "permission denied" in str(caught.value.orig), sql
    finally:
        store.close()
