"""the brands a model matches from their logo files, with each matcher's digest

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03 15:45:00

``models.logos``: brand -> digest of the brand's logo matcher (``detector.exemplar``), for
the brands a bundle finds by their logo file instead of a head. Their scores come from the
image, not the stored embedding, so a new model version cannot rescore them without the
images; where two versions' digests are equal the matcher is the same, and ``rescore``
copies that brand's rows instead of fetching every image again. NULL for models with no such
brand and for rows older than this migration.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0011'
down_revision: str | None = '0010'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("models", sa.Column("logos", postgresql.JSONB(astext_type=sa.Text()),
                                      nullable=True))


def downgrade() -> None:
    op.drop_column("models", "logos")
