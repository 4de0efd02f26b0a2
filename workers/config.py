"""What the worker and the commands share: flag defaults from the environment,
the one-line form of an error, and the post's image statuses."""

from __future__ import annotations

import os
from enum import StrEnum

DEFAULT_BOOTSTRAP = "127.0.0.1:9092"
DEFAULT_DATABASE_URL = "postgresql+psycopg2://logowatch@127.0.0.1:5432/logowatch"


def env(name: str, default: str | None = None) -> str | None:
    value = os.environ.get(name)
    return value if value not in (None, "") else default


def bootstrap_servers() -> str:
    return env("KAFKA_BOOTSTRAP_SERVERS", DEFAULT_BOOTSTRAP) or DEFAULT_BOOTSTRAP


def database_url() -> str:
    return env("DATABASE_URL", DEFAULT_DATABASE_URL) or DEFAULT_DATABASE_URL


def first_line(exc: BaseException) -> str:
    """The first non-empty line of a (database) error, for a log line or a user message;
    never raises, whatever the driver put in the message."""
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


class ImageStatus(StrEnum):
    """``posts.image_status``: why a post has (or lacks) detections. Strings on the wire and
    in Postgres; the fetcher and the decoder raise with these values."""

    PENDING = "pending"
    OK = "ok"
    FETCH_FAILED = "fetch_failed"
    BLOCKED = "blocked"
    NOT_IMAGE = "not_image"
    TOO_LARGE = "too_large"
    DECODE_FAILED = "decode_failed"
    DEAD_LETTER = "dead_letter"
    INTERNAL_ERROR = "internal_error"  # a step raised what it does not expect
