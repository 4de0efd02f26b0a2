"""image status internal_error

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-29 10:00:00

A step of the worker that raises something it does not expect for one record stores the post
with ``image_status = 'internal_error'`` (the exception type is in ``error``) instead of
stopping the worker; the check constraint learns the new value.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0005'
down_revision: str | None = '0004'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BEFORE = ("pending", "ok", "fetch_failed", "not_image", "too_large", "blocked", "decode_failed")
AFTER = (*BEFORE, "internal_error")


def _constraint(statuses: tuple[str, ...]) -> None:
    op.drop_constraint(op.f("ck_posts_image_status"), "posts", type_="check")
    op.create_check_constraint(op.f("ck_posts_image_status"), "posts",
                               "image_status IN (" + ", ".join(f"'{s}'" for s in statuses) + ")")


def upgrade() -> None:
    _constraint(AFTER)


def downgrade() -> None:
    op.execute("UPDATE posts SET image_status = 'pending' WHERE image_status = 'internal_error'")
    _constraint(BEFORE)
