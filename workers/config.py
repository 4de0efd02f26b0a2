"""Flags take their defaults from the environment, so one variable configures every command."""

from __future__ import annotations

import os

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql+psycopg2://logowatch@127.0.0.1:5432/logowatch"


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def bootstrap_servers() -> str:
    return env("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP) or DEFAULT_BOOTSTRAP


def database_url() -> str:
    return env("DATABASE_URL", DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL

