"""models record when they were trained and on which backbone weights

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-29 15:00:00

``models.trained_at`` is the bundle's ``created_at`` (``created_at`` stays the time the row was
registered, which orders the "newest" model), ``weights`` the backbone weights' provenance as
the bundle records it and ``random_weights`` whether they are random. Rows registered before
this migration keep NULL: their provenance is unknown, and the report says so. The reader sees
them through the ``model_provenance`` view.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "logowatch_reader"


def upgrade() -> None:
    op.add_column("models", sa.Column("trained_at", sa.DateTime(timezone=True), nullable=True))
    op.add_column("models", sa.Column("weights", sa.Text(), nullable=True))
    op.add_column("models", sa.Column("random_weights", sa.Boolean(), nullable=True))
    op.execute("CREATE VIEW model_provenance AS "
               "SELECT model_version, trained_at, weights, random_weights FROM models")
    op.execute(f"GRANT SELECT ON model_provenance TO {READER}")


def downgrade() -> None:
    op.execute("DROP VIEW model_provenance")
    for column in ("random_weights", "weights", "trained_at"):
        op.drop_column("models", column)
