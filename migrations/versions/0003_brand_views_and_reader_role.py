"""brand views (image vs text), the text-matching functions, and the read-only role

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-28 23:05:00

The matching rule (fold case and accents, whole words, hashtags and @handles) lives in SQL so
that the report CLI, Grafana and any marketer's own query count the same posts. The SQL is
written out here rather than imported from ``analytics`` so this revision never changes after
it has run; a later change to a view is a later revision.
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0003'
down_revision: str | None = '0002'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "logowatch_reader"

# Dependency order: each view only reads views above it.
VIEWS = (
    "brand_catalogue",
    "brand_current_model",
    "brand_mentions",
    "brand_daily",
    "brand_top_accounts",
    "brand_hashtags_image_only",
    "brand_cooccurrence",
)

FUNCTIONS = """
CREATE FUNCTION logowatch_fold(value text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$ SELECT lower({schema}.unaccent('{schema}.unaccent'::regdictionary, value)) $fn$;

COMMENT ON FUNCTION logowatch_fold(text) IS
  'Case- and accent-folded text: the one normalisation used on both sides of brand matching.';

-- Caption words only: hashtags and @handles are matched against posts.hashtags / mentions.
CREATE FUNCTION logowatch_caption_words(caption text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$ SELECT regexp_replace(logowatch_fold(caption), '[#@][[:alnum:]_.]+', ' ', 'g') $fn$;

-- A whole-word pattern for an alias: regex characters escaped, any run of spaces matching
-- any run of whitespace, and no letter, digit or underscore on either side.
CREATE FUNCTION logowatch_word_pattern(alias text) RETURNS text
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
AS $fn$
  SELECT '(?<![[:alnum:]_])'
      || regexp_replace(
           regexp_replace(logowatch_fold(btrim(alias)), '([^[:alnum:][:space:]])', '\\\\\\1', 'g'),
           '[[:space:]]+', '[[:space:]]+', 'g')
      || '(?![[:alnum:]_])'
$fn$;
"""

VIEW_SQL = """
CREATE VIEW brand_catalogue AS
SELECT b.brand, coalesce(b.display_name, b.brand) AS display_name, a.kind, a.alias
FROM brands b
LEFT JOIN brand_aliases a ON a.brand = b.brand;

CREATE VIEW brand_current_model AS
WITH newest AS (
    SELECT DISTINCT ON (h.brand) h.brand, m.model_version
    FROM models m
    CROSS JOIN LATERAL jsonb_object_keys(m.brands) AS h(brand)
    ORDER BY h.brand, m.created_at DESC, m.model_version DESC
), chosen AS (
    SELECT coalesce(p.brand, n.brand) AS brand,
           coalesce(p.model_version, n.model_version) AS model_version,
           p.brand IS NOT NULL AS pinned
    FROM newest n
    FULL JOIN brand_model_pins p ON p.brand = n.brand
)
SELECT c.brand, c.model_version, m.backbone,
       (m.brands ->> c.brand)::double precision AS threshold,
       c.pinned, m.created_at AS model_created_at
FROM chosen c
JOIN models m ON m.model_version = c.model_version;

CREATE VIEW brand_mentions AS
SELECT s.post_id, s.brand, s.model_version, s.score, s.region,
       s.in_image,
       (s.in_caption OR s.in_hashtags OR s.in_mentions) AS in_text,
       CASE
           WHEN s.in_image AND (s.in_caption OR s.in_hashtags OR s.in_mentions) THEN 'both'
           WHEN s.in_image THEN 'image_only'
           ELSE 'text_only'
       END AS kind,
       s.in_caption, s.in_hashtags, s.in_mentions,
       s.posted_at, (s.posted_at AT TIME ZONE 'UTC')::date AS day,
       s.author, s.source, s.hashtags, s.permalink
FROM (
    SELECT p.post_id, b.brand, cm.model_version, d.score, d.region,
           coalesce(d.present, false) AS in_image,
           EXISTS (
               SELECT 1 FROM brand_aliases a
               WHERE a.brand = b.brand AND a.kind = 'word'
                 AND logowatch_caption_words(p.caption) ~ logowatch_word_pattern(a.alias)
           ) AS in_caption,
           EXISTS (
               SELECT 1 FROM brand_aliases a, unnest(p.hashtags) AS t(tag)
               WHERE a.brand = b.brand AND a.kind = 'hashtag'
                 AND logowatch_fold(t.tag) = logowatch_fold(ltrim(btrim(a.alias), '#'))
           ) AS in_hashtags,
           EXISTS (
               SELECT 1 FROM brand_aliases a, unnest(p.mentions) AS t(handle)
               WHERE a.brand = b.brand AND a.kind = 'mention'
                 AND logowatch_fold(t.handle) = logowatch_fold(ltrim(btrim(a.alias), '@'))
           ) AS in_mentions,
           coalesce(p.posted_at, p.ingested_at) AS posted_at,
           p.author, p.source, p.hashtags, p.permalink
    FROM posts p
    CROSS JOIN (SELECT brand FROM brands UNION SELECT brand FROM brand_current_model) b
    LEFT JOIN brand_current_model cm ON cm.brand = b.brand
    LEFT JOIN detections d
           ON d.post_id = p.post_id AND d.brand = b.brand
          AND d.model_version = cm.model_version
) s
WHERE s.in_image OR s.in_caption OR s.in_hashtags OR s.in_mentions;

CREATE VIEW brand_daily AS
SELECT day, brand,
       count(*) AS posts,
       count(*) FILTER (WHERE in_image) AS image_hits,
       count(*) FILTER (WHERE in_text) AS text_hits,
       count(*) FILTER (WHERE kind = 'both') AS both_hits,
       count(*) FILTER (WHERE kind = 'image_only') AS image_only,
       count(*) FILTER (WHERE kind = 'text_only') AS text_only,
       (count(*) FILTER (WHERE kind = 'image_only'))::double precision
           / nullif(count(*) FILTER (WHERE in_image), 0) AS image_only_share
FROM brand_mentions
GROUP BY day, brand;

CREATE VIEW brand_top_accounts AS
SELECT brand, author, day,
       count(*) FILTER (WHERE kind = 'image_only') AS image_only_posts,
       count(*) FILTER (WHERE kind = 'both') AS both_posts,
       count(*) FILTER (WHERE kind = 'text_only') AS text_only_posts,
       count(*) AS posts
FROM brand_mentions
WHERE author IS NOT NULL
GROUP BY brand, author, day;

CREATE VIEW brand_hashtags_image_only AS
SELECT m.brand, t.hashtag, m.day, count(DISTINCT m.post_id) AS posts
FROM brand_mentions m
CROSS JOIN LATERAL unnest(m.hashtags) AS t(hashtag)
WHERE m.kind = 'image_only'
GROUP BY m.brand, t.hashtag, m.day;

CREATE VIEW brand_cooccurrence AS
WITH seen AS (
    SELECT d.post_id, d.brand,
           (coalesce(p.posted_at, p.ingested_at) AT TIME ZONE 'UTC')::date AS day
    FROM detections d
    JOIN brand_current_model cm
      ON cm.brand = d.brand AND cm.model_version = d.model_version
    JOIN posts p ON p.post_id = d.post_id
    WHERE d.present
)
SELECT a.brand, b.brand AS other_brand, a.day, count(*) AS posts
FROM seen a
JOIN seen b ON b.post_id = a.post_id AND b.brand <> a.brand
GROUP BY a.brand, b.brand, a.day;
"""

ROLE_UP = """
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{reader}') THEN
        CREATE ROLE {reader} LOGIN;
    END IF;
EXCEPTION WHEN duplicate_object OR unique_violation THEN
    NULL;  -- another database of this cluster created it at the same moment
END
$do$;
DO $do$
BEGIN
    EXECUTE format('GRANT CONNECT ON DATABASE %I TO {reader}', current_database());
    EXECUTE format('ALTER ROLE {reader} IN DATABASE %I SET default_transaction_read_only = on',
                   current_database());
    EXECUTE format('ALTER ROLE {reader} IN DATABASE %I SET statement_timeout = %L',
                   current_database(), '60s');
    EXECUTE format('GRANT USAGE ON SCHEMA %I TO {reader}', current_schema());
END
$do$;
"""

ROLE_DOWN = """
DO $do$
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{reader}') THEN
        RETURN;
    END IF;
    EXECUTE format('REVOKE USAGE ON SCHEMA %I FROM {reader}', current_schema());
    EXECUTE format('ALTER ROLE {reader} IN DATABASE %I RESET ALL', current_database());
    EXECUTE format('REVOKE CONNECT ON DATABASE %I FROM {reader}', current_database());
    -- Roles are cluster-wide: keep it while any other database still grants it something.
    IF NOT EXISTS (
        SELECT 1 FROM pg_shdepend s JOIN pg_roles r ON r.oid = s.refobjid
        WHERE r.rolname = '{reader}'
    ) AND NOT EXISTS (
        SELECT 1 FROM pg_db_role_setting s JOIN pg_roles r ON r.oid = s.setrole
        WHERE r.rolname = '{reader}'
    ) THEN
        DROP ROLE IF EXISTS {reader};
    END IF;
END
$do$;
"""


def _unaccent_schema() -> str:
    bind = op.get_bind()
    return bind.exec_driver_sql(
        "SELECT quote_ident(n.nspname) FROM pg_extension e "
        "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'unaccent'"
    ).scalar_one()


def upgrade() -> None:
    op.execute("CREATE EXTENSION IF NOT EXISTS unaccent")
    op.execute(FUNCTIONS.replace("{schema}", _unaccent_schema()))
    op.execute(VIEW_SQL)
    op.execute(ROLE_UP.replace("{reader}", READER))
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {READER}")


def downgrade() -> None:
    # Dropping the views drops their grants too, before the role's dependencies are checked.
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {view}")
    op.execute(ROLE_DOWN.replace("{reader}", READER))
    for function in ("logowatch_word_pattern", "logowatch_caption_words", "logowatch_fold"):
        op.execute(f"DROP FUNCTION IF EXISTS {function}(text)")
    # The unaccent extension stays: other objects of the database may use it.

