"""The database schema: Postgres is the system of record, and these tables are its contract.

Every writer (worker, ingest checkpoints, rescore) and every reader (views, reports, dashboards)
goes through these definitions; Alembic migrations are generated from them and a test checks the
two never drift apart.
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import (
    ARRAY,
    Boolean,
    CheckConstraint,
    Computed,
    Date,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

IMAGE_STATUSES = (
    "pending",
    "ok",
    "fetch_failed",
    "not_image",
    "too_large",
    "blocked",
    "decode_failed",
    "internal_error",
)

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


def _now() -> Any:
    return mapped_column(DateTime(timezone=True), nullable=False, server_default=func.now())


class Post(Base):
    """One post with one image; carousel children are posts of their own (``<id>:<index>``)."""

    __tablename__ = "posts"

    post_id: Mapped[str] = mapped_column(Text, primary_key=True)
    source: Mapped[str] = mapped_column(String(64), nullable=False)
    author: Mapped[str | None] = mapped_column(Text)
    caption: Mapped[str | None] = mapped_column(Text)
    hashtags: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default="{}"
    )
    mentions: Mapped[list[str]] = mapped_column(
        ARRAY(Text), nullable=False, server_default="{}"
    )
    image_url: Mapped[str] = mapped_column(Text, nullable=False)
    permalink: Mapped[str | None] = mapped_column(Text)
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ingested_at: Mapped[datetime] = _now()
    image_status: Mapped[str] = mapped_column(
        String(16), nullable=False, server_default="pending"
    )
    error: Mapped[str | None] = mapped_column(Text)
    extra: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # The UTC day the views group and filter by: stored so ``day`` filters are index scans.
    day: Mapped[date] = mapped_column(
        Date, Computed("(coalesce(posted_at, ingested_at) AT TIME ZONE 'UTC')::date",
                       persisted=True))

    __table_args__ = (
        CheckConstraint(
            "image_status IN (" + ", ".join(f"'{s}'" for s in IMAGE_STATUSES) + ")",
            name="image_status",
        ),
        Index(None, "posted_at"),
        Index(None, "author"),
        Index(None, "day"),
    )


class Model(Base):
    """A model bundle that has written detections: its brands, thresholds and metrics, when
    it was trained and on which backbone weights (NULL for rows older than migration 0009)."""

    __tablename__ = "models"

    model_version: Mapped[str] = mapped_column(Text, primary_key=True)
    backbone: Mapped[str] = mapped_column(Text, nullable=False)
    brands: Mapped[dict[str, float]] = mapped_column(JSONB, nullable=False)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSONB, nullable=False, server_default="{}")
    created_at: Mapped[datetime] = _now()
    trained_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    weights: Mapped[str | None] = mapped_column(Text)
    random_weights: Mapped[bool | None] = mapped_column(Boolean)
    # brand -> digest of its logo matcher, for brands matched from their logo files
    # (migration 0011); rows with equal digests were scored alike
    logos: Mapped[dict[str, str] | None] = mapped_column(JSONB)


class Detection(Base):
    """One brand head's verdict on one post's image, for one model version.

    ``day`` is the post's day, set by a trigger (migration 0006) on insert and kept in step
    with the post, so the dashboards' hottest query (a brand's current model over a period) is
    one range scan of a partial index.
    """

    __tablename__ = "detections"

    post_id: Mapped[str] = mapped_column(
        Text, ForeignKey("posts.post_id", ondelete="CASCADE"), primary_key=True
    )
    brand: Mapped[str] = mapped_column(Text, primary_key=True)
    model_version: Mapped[str] = mapped_column(
        Text, ForeignKey("models.model_version"), primary_key=True
    )
    score: Mapped[float] = mapped_column(Float, nullable=False)
    present: Mapped[bool] = mapped_column(Boolean, nullable=False)
    # x0, y0, x1, y1 in image pixels: the best-scoring tile (NULL when the whole image won),
    # or, for a brand matched from its logo file, the mark's own box.
    region: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    posted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    detected_at: Mapped[datetime] = _now()
    day: Mapped[date] = mapped_column(Date, nullable=False)

    __table_args__ = (
        CheckConstraint("score >= 0 AND score <= 1", name="score_range"),
        CheckConstraint("region IS NULL OR cardinality(region) = 4", name="region_box"),
        Index(None, "brand", "posted_at"),
        Index(None, "model_version"),
        Index(None, "brand", "model_version", "day", postgresql_where=text("present"),
              postgresql_include=["post_id"]),
        Index(None, "post_id", "brand", "model_version", postgresql_where=text("present")),
    )


class Embedding(Base):
    """The backbone's embedding of a post's image, float16 bytes, so heads can be re-scored
    over history without fetching images again (CDN URLs expire)."""

    __tablename__ = "embeddings"

    post_id: Mapped[str] = mapped_column(
        Text, ForeignKey("posts.post_id", ondelete="CASCADE"), primary_key=True
    )
    backbone: Mapped[str] = mapped_column(Text, primary_key=True)
    dim: Mapped[int] = mapped_column(Integer, nullable=False)
    vector: Mapped[bytes] = mapped_column(LargeBinary, nullable=False)
    # With tiles: each window's embedding (float16, window after window) and its box as
    # x0, y0, x1, y1 per window, so a rescore takes the same max over image and tiles.
    tiles: Mapped[bytes | None] = mapped_column(LargeBinary)
    tile_boxes: Mapped[list[int] | None] = mapped_column(ARRAY(Integer))
    created_at: Mapped[datetime] = _now()

    __table_args__ = (
        CheckConstraint("octet_length(vector) = 2 * dim", name="vector_float16"),
        CheckConstraint(
            "(tiles IS NULL) = (tile_boxes IS NULL) AND (tiles IS NULL OR ("
            "cardinality(tile_boxes) % 4 = 0 AND "
            "octet_length(tiles) = 2 * dim * (cardinality(tile_boxes) / 4)))",
            name="tiles_float16"),
    )


class IngestCheckpoint(Base):
    """How far one ingest source got (a paging cursor and/or the newest timestamp seen)."""

    __tablename__ = "ingest_checkpoints"

    source_key: Mapped[str] = mapped_column(Text, primary_key=True)
    cursor: Mapped[str | None] = mapped_column(Text)
    newest_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = _now()


class ProducedPost(Base):
    """Post ids the producers already sent, so a re-read source never produces one twice."""

    __tablename__ = "produced_posts"

    post_id: Mapped[str] = mapped_column(Text, primary_key=True)
    source_key: Mapped[str] = mapped_column(Text, nullable=False)
    produced_at: Mapped[datetime] = _now()


ALIAS_KINDS = ("word", "hashtag", "mention")


class Brand(Base):
    """A brand marketers ask about; ``brand`` is the name the detector's head uses for it."""

    __tablename__ = "brands"

    brand: Mapped[str] = mapped_column(Text, primary_key=True)
    display_name: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = _now()


class BrandAlias(Base):
    """How a brand is said in text: a caption word/phrase, a hashtag or an @handle.

    Stored as typed (without ``#``/``@``); the views fold case and accents on both sides, so
    the matching rule lives in one SQL function and reports and dashboards count alike.
    """

    __tablename__ = "brand_aliases"

    brand: Mapped[str] = mapped_column(
        Text, ForeignKey("brands.brand", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    alias: Mapped[str] = mapped_column(Text, primary_key=True)

    __table_args__ = (
        CheckConstraint(
            "kind IN (" + ", ".join(f"'{k}'" for k in ALIAS_KINDS) + ")", name="alias_kind"
        ),
        CheckConstraint("length(btrim(alias)) > 0", name="alias_not_blank"),
    )


class BrandModelPin(Base):
    """An explicit choice of model version for a brand, overriding "the newest model with it".

    Without a pin the views use the newest model (``models.created_at``) that has a head for
    the brand; a pin keeps dashboards on a known version while a new one is evaluated.
    """

    __tablename__ = "brand_model_pins"

    brand: Mapped[str] = mapped_column(Text, primary_key=True)
    model_version: Mapped[str] = mapped_column(
        Text, ForeignKey("models.model_version", ondelete="CASCADE"), nullable=False
    )
    pinned_at: Mapped[datetime] = _now()


class BrandLabel(Base):
    """A person's verdict on one post for one brand (``logowatch brands review``): whether
    the brand's logo is in the image. The next ``brands add`` of the brand measures its
    precision and recall on them."""

    __tablename__ = "brand_labels"

    post_id: Mapped[str] = mapped_column(
        Text, ForeignKey("posts.post_id", ondelete="CASCADE"), primary_key=True
    )
    brand: Mapped[str] = mapped_column(Text, primary_key=True)
    present: Mapped[bool] = mapped_column(Boolean, nullable=False)
    labelled_at: Mapped[datetime] = _now()


class BrandTextMatch(Base):
    """A post whose caption, hashtags or @handles name a brand (the matching rule of
    ``docs/analytics.md``), stored by triggers on ``posts`` and ``brand_aliases`` (migration
    0006) so the views read matches from an index instead of matching every caption on read.
    """

    __tablename__ = "brand_text_matches"

    post_id: Mapped[str] = mapped_column(
        Text, ForeignKey("posts.post_id", ondelete="CASCADE"), primary_key=True
    )
    brand: Mapped[str] = mapped_column(
        Text, ForeignKey("brands.brand", ondelete="CASCADE"), primary_key=True
    )
    day: Mapped[date] = mapped_column(Date, nullable=False)
    in_caption: Mapped[bool] = mapped_column(Boolean, nullable=False)
    in_hashtags: Mapped[bool] = mapped_column(Boolean, nullable=False)
    in_mentions: Mapped[bool] = mapped_column(Boolean, nullable=False)

    __table_args__ = (Index(None, "brand", "day", postgresql_include=["post_id"]),)
