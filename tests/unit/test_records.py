"""The wire record accepts good posts and rejects each bad field with a message naming it."""

from __future__ import annotations

import json

import pytest

from ingest import records

GOOD = {
    "post_id": "17895695668004550",
    "source": "instagram",
    "image_url": "https://cdn.example.com/p/1.jpg",
    "caption": "Summit day in my #Patagonia jacket with @friend",
    "author": "climber",
    "posted_at": "2024-05-01T12:00:00+02:00",
    "permalink": "https://www.instagram.com/p/abc/",
    "extra": {"like_count": 3},
}


def _bytes(**changes: object) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not ...}).encode()


def test_a_good_record_round_trips_through_json() -> None:
    record = records.parse(_bytes())
    assert records.parse(record.to_bytes()) == record
    assert record.posted_at is not None and record.posted_at.utcoffset().total_seconds() == 0
    assert record.hashtags == ["patagonia"]
    assert record.mentions == ["friend"]
    assert record.key == b"17895695668004550"


@pytest.mark.parametrize(
    ("changes", "field", "reason"),
    [
        ({"post_id": ""}, "post_id", "at least 1"),
        ({"post_id": "x" * 300}, "post_id", "at most 256"),
        ({"post_id": "a\x00b"}, "post_id", "control"),
        ({"post_id": ...}, "post_id", "required"),
        ({"source": "Bad Source!"}, "source", "pattern"),
        ({"image_url": "ftp://host/x.jpg"}, "image_url", "http or https"),
        ({"image_url": "file:///etc/passwd"}, "image_url", "http or https"),
        ({"image_url": "https://"}, "image_url", "no host"),
        ({"image_url": "https://h/" + "a" * 2100}, "image_url", "2048"),
        ({"image_url": "https://h/a b.jpg"}, "image_url", "whitespace"),
        ({"image_url": ...}, "image_url", "required"),
        ({"caption": "c" * 2201}, "caption", "at most 2200"),
        ({"caption": 42}, "caption", "string"),
        ({"posted_at": "2024-05-01T12:00:00"}, "posted_at", "timezone"),
        ({"posted_at": "yesterday"}, "posted_at", "datetime"),
        ({"permalink": "javascript:alert(1)"}, "permalink", "http or https"),
        ({"extra": [1, 2]}, "extra", "dictionary"),
        ({"extra": {"big": "x" * 20_000}}, "extra", "bytes of JSON"),
        ({"schema_version": 2}, "schema_version", "unsupported"),
        ({"unknown": 1}, "unknown", "not a field"),
    ],
)
def test_each_bad_field_is_rejected_with_a_message_naming_it(
    changes: dict[str, object], field: str, reason: str
) -> None:
    with pytest.raises(records.RecordError) as caught:
        records.parse(_bytes(**changes))
    message = str(caught.value)
    assert message.startswith(f"{field}:") or f"; {field}:" in message, message
    assert reason in message, message


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "not JSON"),
        (b"{not json", "not JSON"),
        (b"\xff\xfe", "not UTF-8"),
        (b"[1, 2]", "JSON object"),
        (None, "tombstone"),
    ],
)
def test_messages_that_are_not_records_say_why(data: bytes | None, reason: str) -> None:
    with pytest.raises(records.RecordError, match=reason):
        records.parse(data)


def test_text_postgres_cannot_store_is_replaced_not_lost() -> None:
    raw = '{"post_id":"1","source":"f","image_url":"http://h/x","caption":"a\\u0000b\\ud800c"}'
    record = records.parse(raw.encode())
    assert record.caption == "a\ufffdb\ufffdc"
    record.to_bytes().decode("utf-8")  # encodable again


def test_emoji_and_right_to_left_text_survive() -> None:
    caption = "שלום 👋 #מותג @user_1 مرحبا"
    record = records.build(post_id="p", source="f", image_url="http://h/x", caption=caption)
    assert records.parse(record.to_bytes()).caption == caption
    assert record.hashtags == ["מותג"]


def test_hashtags_and_mentions_are_lowercased_and_deduplicated() -> None:
    text = "#Patagonia #patagonia #Été email a@b.com @Bob. @bob x#nothashtag"
    assert records.extract_hashtags(text) == ["patagonia", "été"]
    assert records.extract_mentions(text) == ["bob"]
