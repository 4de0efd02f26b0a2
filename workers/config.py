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


def kafka_security() -> dict[str, str]:
    """Kafka client security settings, passed through from the environment (never flags,
    so passwords stay out of process listings and logs)."""
    names = {
        "KAFKA_SECURITY_PROTOCOL": "security_protocol",
        "KAFKA_SASL_MECHANISM": "sasl_mechanism",
        "KAFKA_SASL_USERNAME": "sasl_plain_username",
        "KAFKA_SASL_PASSWORD": "sasl_plain_password",
        "KAFKA_SSL_CAFILE": "ssl_cafile",
        "KAFKA_SSL_CERTFILE": "ssl_certfile",
        "KAFKA_SSL_KEYFILE": "ssl_keyfile",
    }
    return {opt: value for var, opt in names.items() if (value := env(var))}
