"""tile embeddings for exact rescoring, and people's labels of posts per brand

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 07:00:00

``embeddings.tiles`` / ``tile_boxes``: a worker that scores tiles keeps each window's
embedding (float16) and box next to the whole image's, so ``rescore`` (and ``brands add``'s
backfill) takes the same max over image and tiles a fresh worker would, not the whole image
alone. Rows written before this migration, or by a worker without tiles, keep NULL and are
rescored on the whole image, which is what that worker scored. ``brand_labels`` holds the
verdicts of ``logowatch brands review``; the next ``brands add`` trains on them.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TILES_CHECK = ("(tiles IS NULL) = (tile_boxes IS NULL) AND (tiles IS NULL OR ("
               "cardinality(tile_boxes) % 4 = 0 AND "
               "octet_length(tiles) = 2 * dim * (cardinality(tile_boxes) / 4)))")


def upgrade() -> None:
    op.add_column("embeddings", sa.Column("tiles", sa.LargeBinary(), nullable=True))
    op.add_column("embeddings", sa.Column("tile_boxes", sa.ARRAY(sa.Integer()), nullable=True))
    op.create_check_constraint(op.f("ck_embeddings_tiles_float16"), "embeddings", TILES_CHECK)
    op.create_table(
        "brand_labels",
        sa.Column("post_id", sa.Text(), nullable=False),
        sa.Column("brand", sa.Text(), nullable=False),
        sa.Column("present", sa.Boolean(), nullable=False),
        sa.Column("labelled_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.ForeignKeyConstraint(["post_id"], ["posts.post_id"],
                                name=op.f("fk_brand_labels_post_id_posts"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("post_id", "brand", name=op.f("pk_brand_labels")),
    )


def downgrade() -> None:
    op.drop_table("brand_labels")
    op.drop_constraint(op.f("ck_embeddings_tiles_float16"), "embeddings", type_="check")
    op.drop_column("embeddings", "tile_boxes")
    op.drop_column("embeddings", "tiles")
