"""The wire record: the one shape a post has on the ``posts`` topic.

Producers build it, workers parse it; nothing else crosses Kafka. JSON encoded (UTF-8), keyed by
``post_id``. Validation errors name the field and the reason, because they end up as the
dead-letter reason an operator reads.
"""

from __future__ import annotations

import json
import re
import unicodedata
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

SCHEMA_VERSION = 1
MAX_CAPTION = 2_200  # Instagram's own caption limit
MAX_URL = 2_048
MAX_ID = 256
MAX_EXTRA_BYTES = 16_384

_HASHTAG = re.compile(r"(?<![\w&])#(\w{1,100})", re.UNICODE)
_MENTION = re.compile(r"(?<![\w@])@([A-Za-z0-9_.]{1,30})(?<!\.)")


class RecordError(ValueError):
    """A message that can never become a valid post; the text is the dead-letter reason."""


def _clean_text(value: str) -> str:
    """Replace what Postgres and UTF-8 cannot hold (NUL, lone surrogates) with U+FFFD."""
    out = []
    for ch in value:
        if ch == "\x00" or 0xD800 <= ord(ch) <= 0xDFFF:
            out.append("\ufffd")
        else:
            out.append(ch)
    return "".join(out)


def _clean_json(value: Any) -> Any:
    if isinstance(value, str):
        return _clean_text(value)
    if isinstance(value, dict):
        return {_clean_text(str(k)): _clean_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean_json(v) for v in value]
    return value


def _check_url(value: str) -> str:
    if len(value) > MAX_URL:
        raise ValueError(f"longer than {MAX_URL} characters")
    if any(ord(c) < 0x21 or c == "\x7f" for c in value):
        raise ValueError("contains whitespace or control characters")
    if any(0xD800 <= ord(c) <= 0xDFFF for c in value):
        raise ValueError("contains a lone surrogate (not valid Unicode)")
    try:
        parts = urlsplit(value)
        port = parts.port  # raises for a port that is not a number in 0..65535
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if port == 0:
        raise ValueError("has port 0")
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError(f"must be an http or https URL (got scheme {parts.scheme or 'none'!r})")
    if not parts.hostname:
        raise ValueError("has no host")
    return value


class PostRecord(BaseModel):
    """One social-media post with one image, as it travels on the ``posts`` topic."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    schema_version: Literal[1] = SCHEMA_VERSION
    post_id: str = Field(min_length=1, max_length=MAX_ID)
    source: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9_.:-]*$")
    image_url: str
    caption: str | None = Field(default=None, max_length=MAX_CAPTION)
    author: str | None = Field(default=None, max_length=MAX_ID)
    posted_at: datetime | None = None
    permalink: str | None = None
    extra: dict[str, Any] | None = None

    @field_validator("post_id")
    @classmethod
    def _post_id(cls, value: str) -> str:
        if any(unicodedata.category(c) in ("Cc", "Cs") for c in value):
            raise ValueError("contains control characters or lone surrogates")
        if value != value.strip():
            raise ValueError("has leading or trailing whitespace")
        return value

    @field_validator("image_url")
    @classmethod
    def _image_url(cls, value: str) -> str:
        return _check_url(value)

    @field_validator("permalink")
    @classmethod
    def _permalink(cls, value: str | None) -> str | None:
        return None if value is None else _check_url(value)

    @field_validator("caption", "author")
    @classmethod
    def _free_text(cls, value: str | None) -> str | None:
        return None if value is None else _clean_text(value)

    @field_validator("posted_at")
    @classmethod
    def _posted_at(cls, value: datetime | None) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("needs a timezone (e.g. 2024-05-01T12:00:00Z)")
        try:
            return value.astimezone(UTC)
        except (OverflowError, ValueError):  # e.g. 0001-01-01T00:00:00+14:00
            raise ValueError("is out of range once converted to UTC") from None

    @field_validator("extra")
    @classmethod
    def _extra(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        if value is None:
            return None
        try:
            size = len(json.dumps(value, ensure_ascii=False).encode("utf-8"))
        except (TypeError, ValueError, UnicodeEncodeError) as exc:
            raise ValueError(f"is not plain JSON ({exc})") from None
        if size > MAX_EXTRA_BYTES:
            raise ValueError(f"is {size} bytes of JSON, more than {MAX_EXTRA_BYTES}")
        return value

    @property
    def hashtags(self) -> list[str]:
        return extract_hashtags(self.caption)

    @property
    def mentions(self) -> list[str]:
        return extract_mentions(self.caption)

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode("utf-8")

    @property
    def key(self) -> bytes:
        return self.post_id.encode("utf-8")


def extract_hashtags(text: str | None) -> list[str]:
    """Lower-cased, de-duplicated hashtags in order of appearance (``#Nike`` → ``nike``)."""
    return _unique(m.group(1).lower() for m in _HASHTAG.finditer(text or ""))


def extract_mentions(text: str | None) -> list[str]:
    """Lower-cased, de-duplicated @handles in order of appearance."""
    return _unique(m.group(1).lower() for m in _MENTION.finditer(text or ""))


def _unique(items: Any) -> list[str]:
    return list(dict.fromkeys(items))


def _describe(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        field = ".".join(str(p) for p in item["loc"]) or "record"
        message = item["msg"].removeprefix("Value error, ")
        if item["type"] == "extra_forbidden":
            message = "is not a field of the post record"
        elif item["type"] == "missing":
            message = "is required"
        parts.append(f"{field}: {message}")
    return "; ".join(parts)


def build(**fields: Any) -> PostRecord:
    """Build a record from Python values, raising ``RecordError`` with a field-naming message."""
    try:
        return PostRecord(**fields)
    except ValidationError as exc:
        raise RecordError(_describe(exc)) from None


def parse(data: bytes | str | None) -> PostRecord:
    """Parse one Kafka message value; every failure is a ``RecordError`` naming the problem."""
    if data is None:
        raise RecordError("record: empty message (tombstone)")
    if isinstance(data, bytes):
        try:
            data = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise RecordError(f"record: not UTF-8 ({exc.reason} at byte {exc.start})") from None
    try:
        obj = json.loads(data)
    except json.JSONDecodeError as exc:
        raise RecordError(f"record: not JSON ({exc.msg} at line {exc.lineno} column {exc.colno})")\
            from None
    if not isinstance(obj, dict):
        raise RecordError(f"record: expected a JSON object, got {type(obj).__name__}")
    version = obj.get("schema_version", SCHEMA_VERSION)
    if version != SCHEMA_VERSION:
        raise RecordError(f"schema_version: unsupported version {version!r}")
    for name in ("caption", "author", "extra"):
        if name in obj:
            obj[name] = _clean_json(obj[name])
    try:
        return PostRecord.model_validate(obj, strict=False)
    except ValidationError as exc:
        raise RecordError(_describe(exc)) from None


def now() -> datetime:
    return datetime.now(UTC)
