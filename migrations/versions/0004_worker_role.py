"""least-privilege role for the detector workers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 00:10:00

``logowatch_worker`` may read and upsert what the worker writes (posts, detections, embeddings,
models) and nothing else: no DELETE (the worker only upserts), no TRUNCATE, and, not being the
owner, no DROP or ALTER. Roles are cluster-wide, so creation tolerates a role made by another
database of the cluster, and the downgrade drops the role only when no other database still
grants it anything (the same rules as ``logowatch_reader`` in 0003).
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0004'
down_revision: str | None = '0003'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

WORKER = "logowatch_worker"
TABLES = ("posts", "detections", "embeddings", "models")

ROLE_UP = """
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        CREATE ROLE {role} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database of this cluster created it at the same moment
END
$do$;
DO $do$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {role}', current_database());
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {role}', current_schema());
    EXECUTE format('ALTER ROLE {role} IN DATABASE %I SET statement_timeout = %L',
                   current_database(), '120s');
END
$do$;
"""

ROLE_DOWN = """
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{role}') THEN
        RETURN;
    END IF;
    EXECUTE format('REVOKE ALL ON {tables} FROM {role}');
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {role}', current_schema());
    EXECUTE format('ALTER ROLE {role} IN DATABASE %I RESET ALL', current_database());
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {role}', current_database());
    -- Roles are cluster-wide: keep it while any other database still grants it something.
    IF NOT EXISTS (
        SELECT 1 FROM pg_shdepend s JOIN pg_roles r ON r.oid = s.refobjid
        WHERE r.rolname = '{role}'
    ) AND NOT EXISTS (
        SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = '{role}'
    ) THEN
        DROP ROLE IF EXISTS {role};
    END IF;
END
$do$;
"""


def upgrade() -> None:
    op.execute(ROLE_UP.replace("{role}", WORKER))
    op.execute(f"GRANT SELECT, INSERT, UPDATE ON {', '.join(TABLES)} TO {WORKER}")


def downgrade() -> None:
    op.execute(ROLE_DOWN.replace("{role}", WORKER).replace("{tables}", ", ".join(TABLES)))
