"""One detection/embedding contract: the live path and ``rescore`` build the same rows, byte
for byte, from the same stored embedding; and the shared helpers of ``workers.config``."""

from __future__ import annotations

from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from detector.preprocess import prepare
from ingest.records import parse
from tests.support.memory_consumer import StubBundle, jpeg
from tests.support.pipeline import post
from workers import rows, stages
from workers.config import ImageStatus, first_line
from workers.metrics import WorkerMetrics
from workers.rescore import rescore_rows
from workers.strategy import Batch, Message

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _live_batch(bundle: StubBundle, n: int) -> Batch[stages.Work]:
    messages = []
    for i in range(n):
        work = stages.Work(parse(post(f"p{i}", "http://images.test/x.jpg")[1]))
        work.tiles = prepare(jpeg(shade=20 + 30 * i), bundle.input_size)
        work.status = ImageStatus.OK
        messages.append(Message("posts", 0, i, 1, work))
    return stages.infer(Batch(messages), bundle, WorkerMetrics())


def test_rescore_rows_are_byte_identical_to_the_live_rows() -> None:
    bundle = StubBundle()
    _, live, embeddings = rows.batch_rows(_live_batch(bundle, 5), bundle)
    stored = [SimpleNamespace(post_id=e["post_id"], dim=e["dim"], vector=e["vector"],
                              posted_at=datetime(2024, 5, 1, 12, tzinfo=UTC))
              for e in embeddings]
    again = rescore_rows(bundle, stored, bundle.brands, NOW)
    for row in live:
        row["detected_at"] = NOW
    assert repr(again) == repr(live)
    assert {r["present"] for r in live} <= {True, False}


@pytest.mark.parametrize("message, expected", [
    ("connection refused\nDETAIL: more", "connection refused"),
    ("", "OperationalError"),
    ("  \n  ", "OperationalError"),
])
def test_first_line_of_an_error_never_raises(message: str, expected: str) -> None:
    from sqlalchemy.exc import OperationalError

    assert first_line(OperationalError("SELECT 1", {}, Exception(message))) == expected


def test_image_statuses_are_the_strings_stored_in_postgres() -> None:
    assert ImageStatus.OK == "ok" and str(ImageStatus.DEAD_LETTER) == "dead_letter"
