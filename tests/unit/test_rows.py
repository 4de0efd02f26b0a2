"""One detection/embedding contract: the live path and ``rescore`` build the same rows, byte
for byte, from the same stored embedding; and the shared helpers of ``workers.config``."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

from detector.preprocess import TileSpec, prepare
from ingest.records import parse
from logowatch.rescore import rescore_rows
from tests.support.memory_consumer import StubBundle
from tests.support.pipeline import post
from workers import rows, stages
from workers.config import ImageStatus, first_line
from workers.metrics import WorkerMetrics
from workers.strategy import Batch, Message

NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)


def _photo(seed: int) -> bytes:
    """A photo whose corners differ, so tiles and the whole image score differently."""
    pixels = np.random.default_rng(seed).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    pixels[:32, :48] //= 4
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def _live_batch(bundle: StubBundle, n: int, tiles: TileSpec | None = None,
                ) -> Batch[stages.Work]:
    messages = []
    for i in range(n):
        work = stages.Work(parse(post(f"p{i}", "http://images.test/x.jpg")[1]))
        work.tiles = prepare(_photo(i), bundle.input_size, tiles=tiles)
        work.status = ImageStatus.OK
        messages.append(Message("posts", 0, i, 1, work))
    return stages.infer(Batch(messages), bundle, WorkerMetrics())


@pytest.mark.parametrize("tiles", [None, TileSpec(2, 0.25)], ids=["whole", "tiles"])
def test_rescore_rows_are_byte_identical_to_the_live_rows(tiles: TileSpec | None) -> None:
    """With tiles, the stored tile embeddings and boxes give the same max and region."""
    bundle = StubBundle()
    _, live, embeddings = rows.batch_rows(_live_batch(bundle, 5, tiles), bundle)
    assert all((e["tiles"] is None) == (tiles is None) for e in embeddings)
    stored = [SimpleNamespace(post_id=e["post_id"], dim=e["dim"], vector=e["vector"],
                              tiles=e["tiles"], tile_boxes=e["tile_boxes"],
                              posted_at=datetime(2024, 5, 1, 12, tzinfo=UTC))
              for e in embeddings]
    again = rescore_rows(bundle, stored, bundle.brands, NOW)
    for row in live:
        row["detected_at"] = NOW
    assert repr(again) == repr(live)
    if tiles is not None:  # some brand's best view is a tile, and its box is kept
        assert any(r["region"] is not None for r in live)
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
