"""Property-based fuzzing of the two parsers that see attacker bytes first: the wire record
parser and the image decoder. Bounded (examples and no per-example deadline) so it fits CI;
``LOGOWATCH_FUZZ_EXAMPLES`` raises the count, e.g. to 5000 for a longer local run.
"""

from __future__ import annotations

import io
import json
import os
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.preprocess import ImageError, prepare
from ingest.records import PostRecord, RecordError, parse

pytestmark = pytest.mark.reliability

EXAMPLES = int(os.environ.get("LOGOWATCH_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="LOGOWATCH_FUZZ_EXAMPLES"
                not in os.environ, suppress_health_check=[HealthCheck.too_slow,
                                                           HealthCheck.data_too_large])

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner,
                                                                max_size=4),
    max_leaves=12,
)
# Hypothesis leaves lone surrogates out of text by default; a feed does not.
NASTY = ["\x00", "\ud800", "\udfff", "\u202e", "\ufeff", "\u0301", "\U0001f45f", "\n", " ", "%"]
any_text = st.text(alphabet=st.characters(exclude_categories=()) | st.sampled_from(NASTY),
                   max_size=60)
ids = st.from_regex(r"[A-Za-z0-9_:.-]{1,24}", fullmatch=True)
urls = st.one_of(
    st.builds(lambda s, h, p: f"{s}://{h}/{p}", st.sampled_from(["http", "https"]),
              st.sampled_from(["example.com", "cdn.example.com:8080", "127.0.0.1", "[::1]"]),
              # Lone surrogates left out here: the known bug they hit has its own test below.
              st.text(alphabet=st.sampled_from("az09/._~%?=&#\u00e9\u202e\U0001f45f"),
                      max_size=20)),
    st.builds(lambda s, h, p: f"{s}://{h}/{p}", st.sampled_from(["http", "file", "", "HTTP"]),
              st.sampled_from(["example.com", "", "a b", "[::1"]), any_text),
    any_text,
)
timestamps = st.one_of(
    st.datetimes(timezones=st.timezones() | st.none()).map(lambda d: d.isoformat()),
    any_text, st.integers(),
)
# Mostly well-formed records with some fields wrong: a record must get past most checks for
# the interesting ones (what the parser accepts) to be reached.
record_dicts = st.fixed_dictionaries(
    {"post_id": st.one_of(ids, any_text, st.integers()),
     "source": st.one_of(st.sampled_from(["test", "instagram", "file:x"]), any_text),
     "image_url": urls},
    optional={"caption": st.one_of(any_text, st.none(), json_values),
              "author": st.one_of(any_text, st.none()), "posted_at": timestamps,
              "permalink": urls, "extra": json_values, "schema_version": st.integers(0, 3),
              "unexpected": json_values},
)


def _round_trips(record: PostRecord) -> None:
    # What the worker stores must be encodable: a record the parser accepts goes back on the
    # wire (and into Postgres as UTF-8) unchanged.
    assert parse(record.to_bytes()) == record


@FUZZ
@given(st.binary(max_size=600))
def test_parse_of_arbitrary_bytes_raises_only_record_error(data: bytes) -> None:
    try:
        record = parse(data)
    except RecordError:
        return
    _round_trips(record)


def _parse_round_trip(obj: dict, ascii_only: bool) -> None:  # type: ignore[type-arg]
    data = json.dumps(obj, ensure_ascii=ascii_only).encode("utf-8", "surrogatepass")
    try:
        record = parse(data)
    except RecordError:
        return
    _round_trips(record)


@FUZZ
@given(record_dicts, st.booleans())
def test_parse_of_record_shaped_json_raises_only_record_error_and_accepted_ones_round_trip(
    obj: dict, ascii_only: bool,  # type: ignore[type-arg]
) -> None:
    _parse_round_trip(obj, ascii_only)


# Found by the fuzzing above: a lone surrogate (a JSON escape) in a URL field used to be
# accepted, and the record could then neither be serialised nor stored in Postgres.
@pytest.mark.parametrize("obj", [
    {"post_id": "p", "source": "test", "image_url": "http://example.com/\ud800"},
    {"post_id": "p", "source": "test", "image_url": "http://example.com/a.jpg",
     "permalink": "https://example.com/\udfff"},
])
def test_the_parser_refuses_a_lone_surrogate_in_a_url(obj: dict) -> None:  # type: ignore[type-arg]
    data = json.dumps(obj, ensure_ascii=True).encode()
    with pytest.raises(RecordError, match="lone surrogate"):
        parse(data)


def _seed_images() -> list[bytes]:
    from PIL import Image

    out = []
    base = Image.new("RGB", (40, 30), (200, 30, 60))
    for fmt, mode in (("JPEG", "RGB"), ("PNG", "RGBA"), ("GIF", "P"), ("WEBP", "RGB"),
                      ("BMP", "RGB"), ("TIFF", "CMYK")):
        buf = io.BytesIO()
        base.convert(mode).save(buf, format=fmt)
        out.append(buf.getvalue())
    return out


SEEDS = _seed_images()


@st.composite
def mutated_images(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    for _ in range(draw(st.integers(1, 12))):
        op = rng.choice(("flip", "truncate", "insert", "zero"))
        at = rng.randrange(len(data)) if data else 0
        if op == "flip" and data:
            data[at] ^= 1 << rng.randrange(8)
        elif op == "truncate":
            del data[at:]
        elif op == "insert":
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 16)))
        elif op == "zero" and data:
            data[at:at + 8] = b"\x00" * len(data[at:at + 8])
    return bytes(data)


def _prepare_or_image_error(data: bytes) -> None:
    try:
        tiles = prepare(data, 75, max_pixels=4_000_000)
    except ImageError as exc:
        assert exc.status in ImageError.STATUSES
        return
    assert tiles and tiles[0].pixels.shape == (75, 75, 3)


@FUZZ
@given(st.binary(max_size=2000))
def test_prepare_of_arbitrary_bytes_raises_only_image_error(data: bytes) -> None:
    _prepare_or_image_error(data)


@FUZZ
@given(mutated_images())
def test_prepare_of_mutated_images_raises_only_image_error(data: bytes) -> None:
    _prepare_or_image_error(data)
