"""the reader role creates nothing, even in a read-write transaction

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-29 14:20:00

``default_transaction_read_only`` is a default the reader can lift (``BEGIN READ WRITE``); its
grants are what must hold. Postgres gives every role (PUBLIC) two ways to create objects
without any schema grant: ``TEMPORARY`` on the database (temporary tables, views, functions
in ``pg_temp``) and the large-object constructors. This database revokes both from PUBLIC;
the database owner keeps them (owners hold every privilege on their objects), the worker and
reader roles never needed them. Creating in the schema is already refused (PostgreSQL 15+
grants PUBLIC no ``CREATE`` on ``public``; docs/analytics.md says what to revoke on 14).
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0007'
down_revision: str | None = '0006'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

LARGE_OBJECT_CONSTRUCTORS = "lo_create(oid), lo_creat(integer), lo_from_bytea(oid, bytea)"


def upgrade() -> None:
    op.execute("DO $do$ BEGIN EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', "
               "current_database()); END $do$")
    op.execute(f"REVOKE EXECUTE ON FUNCTION {LARGE_OBJECT_CONSTRUCTORS} FROM PUBLIC")


def downgrade() -> None:
    op.execute(f"GRANT EXECUTE ON FUNCTION {LARGE_OBJECT_CONSTRUCTORS} TO PUBLIC")
    op.execute("DO $do$ BEGIN EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO PUBLIC', "
               "current_database()); END $do$")
