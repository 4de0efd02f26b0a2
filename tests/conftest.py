"""Session fixtures: a real Kafka broker, a real PostgreSQL, real HTTP servers on 127.0.0.1.

The broker and the cluster are the same runners ``logowatch services`` uses, on free ports and
throw-away data dirs, started once per test session and stopped after it.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterator

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

pytest_plugins = ["tests.support.http_server", "tests.support.model"]


@pytest.fixture(scope="session")
def kafka_broker() -> Iterator[object]:
    from logowatch.services import KafkaBroker, make_private_tmpdir

    data_dir = make_private_tmpdir("logowatch-kafka-")
    broker = KafkaBroker(data_dir)
    broker.start()
    yield broker
    broker.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def bootstrap(kafka_broker) -> str:  # type: ignore[no-untyped-def]
    return kafka_broker.bootstrap


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[object]:
    from logowatch.services import PostgresCluster, make_private_tmpdir

    data_dir = make_private_tmpdir("logowatch-pg-")
    cluster = PostgresCluster(data_dir)
    cluster.start()
    yield cluster
    cluster.stop()
    shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def database_url(pg_cluster, request) -> Iterator[str]:  # type: ignore[no-untyped-def]
    """A fresh, empty database for each test module."""
    name = f"t_{request.module.__name__.rsplit('.', 1)[-1][:30]}_{uuid.uuid4().hex[:6]}"
    url = pg_cluster.create_database(name.lower())
    yield url
    pg_cluster.drop_database(name.lower())


@pytest.fixture(scope="module")
def migrated_db(database_url: str) -> str:
    """A fresh database upgraded to the newest migration."""
    from logowatch import migrate

    migrate.upgrade(database_url)
    return database_url


@pytest.fixture
def topic(bootstrap: str) -> str:
    """A new 4-partition topic with a unique name."""
    from kafka import KafkaAdminClient
    from kafka.admin import NewTopic

    name = f"t-{uuid.uuid4().hex[:10]}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        admin.create_topics([NewTopic(name, num_partitions=4, replication_factor=1)])
    finally:
        admin.close()
    return name
