"""index-backed brand views: a stored day, stored text matches, views that read indexes

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-29 14:00:00

The 0003 views computed each post's day as ``coalesce(posted_at, ingested_at)`` and matched
every caption against every alias on read, so any dashboard panel read all of ``posts``. Now:

- ``posts.day`` is a stored generated column (the same UTC day), indexed;
- ``detections.day`` is a copy of its post's day, set by a trigger on insert and kept in step
  when a post's time changes, with a partial index ``(brand, model_version, day) WHERE
  present``: one range scan per brand, model and period;
- ``brand_text_matches`` holds one row per post and brand whose caption, hashtags or @handles
  name the brand (0003's rule, evaluated once per write instead of once per read), maintained
  by statement-level triggers on ``posts`` and ``brand_aliases``, indexed on ``(brand, day)``;
- the views read those: ``brand_mentions`` is the image hits plus the text-only hits, so a
  filter on ``brand`` and ``day`` reaches the indexes of both halves.

The SQL is written out here (not imported from ``analytics``) so this revision never changes.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0006'
down_revision: str | None = '0005'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

READER = "logowatch_reader"
DAY = "((coalesce(posted_at, ingested_at) AT TIME ZONE 'UTC')::date)"
# The views this revision replaces, in dependency order (0003 created them).
VIEWS = ("brand_mentions", "brand_daily", "brand_top_accounts", "brand_hashtags_image_only",
         "brand_cooccurrence")
UNCHANGED = ("brand_daily", "brand_top_accounts", "brand_hashtags_image_only")

# One statement computes text matches for a set of posts and a set of aliases, whichever
# trigger runs it. Each post's folded text is computed once (OFFSET 0 keeps the planner from
# re-evaluating it per alias), each alias's pattern once.
MATCHES = """
INSERT INTO brand_text_matches (post_id, brand, day, in_caption, in_hashtags, in_mentions)
SELECT p.post_id, a.brand, p.day,
       coalesce(bool_or(a.kind = 'word' AND w.words ~ a.needle), false),
       coalesce(bool_or(a.kind = 'hashtag' AND a.needle = ANY (w.tags)), false),
       coalesce(bool_or(a.kind = 'mention' AND a.needle = ANY (w.handles)), false)
FROM {posts} p
CROSS JOIN LATERAL (
    SELECT logowatch_caption_words(p.caption) AS words,
           ARRAY(SELECT logowatch_fold(t) FROM unnest(p.hashtags) AS t) AS tags,
           ARRAY(SELECT logowatch_fold(t) FROM unnest(p.mentions) AS t) AS handles
    OFFSET 0
) w
JOIN (
    SELECT brand, kind,
           CASE kind WHEN 'word' THEN logowatch_word_pattern(alias)
                     WHEN 'hashtag' THEN logowatch_fold(ltrim(btrim(alias), '#'))
                     ELSE logowatch_fold(ltrim(btrim(alias), '@')) END AS needle
    FROM brand_aliases
    WHERE {aliases}
    OFFSET 0
) a ON true
GROUP BY p.post_id, a.brand, p.day
HAVING bool_or(CASE a.kind WHEN 'word' THEN w.words ~ a.needle
                           WHEN 'hashtag' THEN a.needle = ANY (w.tags)
                           ELSE a.needle = ANY (w.handles) END)
"""

# Posts of an UPDATE whose text or day changed.
CHANGED = """(SELECT n.* FROM new_posts n JOIN old_posts o ON o.post_id = n.post_id
    WHERE (n.caption, n.hashtags, n.mentions, n.day)
          IS DISTINCT FROM (o.caption, o.hashtags, o.mentions, o.day))"""

# The trigger functions write brand_text_matches and detections.day for whoever wrote posts
# (the worker has no grant on brand_text_matches), hence SECURITY DEFINER with a fixed path.
DEFINER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = {schema}, pg_temp"

TRIGGERS = f"""
CREATE FUNCTION logowatch_posts_inserted() RETURNS trigger {DEFINER} AS $fn$
BEGIN
    {MATCHES.format(posts="new_posts", aliases="true")};
    RETURN NULL;
END
$fn$;

CREATE FUNCTION logowatch_posts_updated() RETURNS trigger {DEFINER} AS $fn$
BEGIN
    DELETE FROM brand_text_matches m USING {CHANGED} c WHERE m.post_id = c.post_id;
    {MATCHES.format(posts=CHANGED, aliases="true")};
    UPDATE detections d SET day = c.day FROM {CHANGED} c
    WHERE d.post_id = c.post_id AND d.day IS DISTINCT FROM c.day;
    RETURN NULL;
END
$fn$;

CREATE FUNCTION logowatch_aliases_changed() RETURNS trigger {DEFINER} AS $fn$
DECLARE
    changed text[] := '{{}}';
BEGIN
    IF TG_OP IN ('INSERT', 'UPDATE') THEN
        changed := changed || ARRAY(SELECT DISTINCT brand FROM new_aliases);
    END IF;
    IF TG_OP IN ('DELETE', 'UPDATE') THEN
        changed := changed || ARRAY(SELECT DISTINCT brand FROM old_aliases);
    END IF;
    DELETE FROM brand_text_matches WHERE brand = ANY (changed);
    {MATCHES.format(posts="posts", aliases="brand = ANY (changed)")};
    RETURN NULL;
END
$fn$;

CREATE FUNCTION logowatch_detection_day() RETURNS trigger
LANGUAGE plpgsql SET search_path = {{schema}}, pg_temp AS $fn$
BEGIN
    NEW.day := (SELECT day FROM posts WHERE post_id = NEW.post_id);
    RETURN NEW;
END
$fn$;

CREATE TRIGGER posts_text_inserted AFTER INSERT ON posts
    REFERENCING NEW TABLE AS new_posts
    FOR EACH STATEMENT EXECUTE FUNCTION logowatch_posts_inserted();
CREATE TRIGGER posts_text_updated AFTER UPDATE ON posts
    REFERENCING OLD TABLE AS old_posts NEW TABLE AS new_posts
    FOR EACH STATEMENT EXECUTE FUNCTION logowatch_posts_updated();
CREATE TRIGGER detections_day BEFORE INSERT OR UPDATE OF post_id ON detections
    FOR EACH ROW EXECUTE FUNCTION logowatch_detection_day();
"""
# Postgres allows transition tables only on single-event triggers: one per event.
ALIAS_TRIGGERS = (("aliases_inserted", "INSERT", "NEW TABLE AS new_aliases"),
                  ("aliases_updated", "UPDATE", "OLD TABLE AS old_aliases NEW TABLE AS new_aliases"),
                  ("aliases_deleted", "DELETE", "OLD TABLE AS old_aliases"))
TRIGGERS += "".join(
    f"CREATE TRIGGER {name} AFTER {event} ON brand_aliases REFERENCING {tables}\n"
    "    FOR EACH STATEMENT EXECUTE FUNCTION logowatch_aliases_changed();\n"
    for name, event, tables in ALIAS_TRIGGERS)

TRIGGER_NAMES = (("posts_text_inserted", "posts"), ("posts_text_updated", "posts"),
                 ("detections_day", "detections"),
                 *((name, "brand_aliases") for name, _, _ in ALIAS_TRIGGERS))
FUNCTION_NAMES = ("logowatch_posts_inserted", "logowatch_posts_updated",
                  "logowatch_aliases_changed", "logowatch_detection_day")

# Image hits (present, current model) plus text-only hits. The posts join is a LEFT JOIN on
# its primary key, so a query that needs no post column (brand_daily) never touches posts;
# ``t.day = d.day`` (always true: both are the post's day) carries a day filter to both sides.
# The text-only half tests "no present detection" on the small partial index; its join to
# ``detections`` (for score and region) is on the primary key, so it too drops out of queries
# that do not ask for those.
VIEW_SQL = """
CREATE VIEW brand_mentions AS
SELECT d.post_id, d.brand, d.model_version, d.score, d.region,
       true AS in_image,
       t.post_id IS NOT NULL AS in_text,
       CASE WHEN t.post_id IS NOT NULL THEN 'both' ELSE 'image_only' END AS kind,
       coalesce(t.in_caption, false) AS in_caption,
       coalesce(t.in_hashtags, false) AS in_hashtags,
       coalesce(t.in_mentions, false) AS in_mentions,
       coalesce(p.posted_at, p.ingested_at) AS posted_at, d.day,
       p.author, p.source, p.hashtags, p.permalink
FROM detections d
JOIN brand_current_model cm ON cm.brand = d.brand AND cm.model_version = d.model_version
LEFT JOIN brand_text_matches t
       ON t.post_id = d.post_id AND t.brand = d.brand AND t.day = d.day
LEFT JOIN posts p ON p.post_id = d.post_id
WHERE d.present
UNION ALL
SELECT t.post_id, t.brand, cm.model_version, d.score, d.region,
       false, true, 'text_only',
       t.in_caption, t.in_hashtags, t.in_mentions,
       coalesce(p.posted_at, p.ingested_at), t.day,
       p.author, p.source, p.hashtags, p.permalink
FROM brand_text_matches t
LEFT JOIN brand_current_model cm ON cm.brand = t.brand
LEFT JOIN detections d
       ON d.post_id = t.post_id AND d.brand = t.brand AND d.model_version = cm.model_version
LEFT JOIN posts p ON p.post_id = t.post_id
WHERE NOT EXISTS (
    SELECT 1 FROM detections x
    WHERE x.post_id = t.post_id AND x.brand = t.brand AND x.model_version = cm.model_version
      AND x.present
);

{unchanged}

CREATE VIEW brand_cooccurrence AS
SELECT a.brand, b.brand AS other_brand, a.day, count(*) AS posts
FROM detections a
JOIN brand_current_model ca ON ca.brand = a.brand AND ca.model_version = a.model_version
JOIN detections b ON b.post_id = a.post_id AND b.brand <> a.brand AND b.present
JOIN brand_current_model cb ON cb.brand = b.brand AND cb.model_version = b.model_version
WHERE a.present
GROUP BY a.brand, b.brand, a.day;
"""


def _views_0003(names: tuple[str, ...]) -> str:
    """0003's statements for ``names``, in its order: the views that read brand_mentions and
    do not change are recreated exactly as 0003 wrote them (0003 never changes either)."""
    import importlib

    views_0003 = importlib.import_module("migrations.versions.0003_brand_views_and_reader_role")
    statements = [s for s in views_0003.VIEW_SQL.split(";") if s.strip()]
    return ";".join(s for s in statements if any(f"VIEW {v} AS" in s for v in names)) + ";"


def _schema() -> str:
    return op.get_bind().exec_driver_sql("SELECT quote_ident(current_schema())").scalar_one()


def _drop_views() -> None:
    for view in reversed(VIEWS):
        op.execute(f"DROP VIEW {view}")


def upgrade() -> None:
    _drop_views()
    op.execute(f"ALTER TABLE posts ADD COLUMN day date GENERATED ALWAYS AS {DAY} STORED")
    op.create_index(op.f("ix_posts_day"), "posts", ["day"])
    op.add_column("detections", sa.Column("day", sa.Date(), nullable=True))
    op.execute("UPDATE detections d SET day = p.day FROM posts p WHERE p.post_id = d.post_id")
    op.alter_column("detections", "day", nullable=False)
    # Partial (present only: about one detection in ten), covering what the views join on, so
    # both the period scan and the per-post probes can be index-only.
    op.create_index(op.f("ix_detections_brand_model_version_day"), "detections",
                    ["brand", "model_version", "day"], postgresql_where=sa.text("present"),
                    postgresql_include=["post_id"])
    op.create_index(op.f("ix_detections_post_id_brand_model_version"), "detections",
                    ["post_id", "brand", "model_version"], postgresql_where=sa.text("present"))
    op.create_table(
        "brand_text_matches",
        sa.Column("post_id", sa.Text(), nullable=False),
        sa.Column("brand", sa.Text(), nullable=False),
        sa.Column("day", sa.Date(), nullable=False),
        sa.Column("in_caption", sa.Boolean(), nullable=False),
        sa.Column("in_hashtags", sa.Boolean(), nullable=False),
        sa.Column("in_mentions", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["brand"], ["brands.brand"], ondelete="CASCADE",
                                name=op.f("fk_brand_text_matches_brand_brands")),
        sa.ForeignKeyConstraint(["post_id"], ["posts.post_id"], ondelete="CASCADE",
                                name=op.f("fk_brand_text_matches_post_id_posts")),
        sa.PrimaryKeyConstraint("post_id", "brand", name=op.f("pk_brand_text_matches")),
    )
    op.create_index(op.f("ix_brand_text_matches_brand_day"), "brand_text_matches",
                    ["brand", "day"], postgresql_include=["post_id"])
    op.execute(TRIGGERS.replace("{schema}", _schema()))
    op.execute(MATCHES.format(posts="posts", aliases="true"))  # backfill
    op.execute(VIEW_SQL.replace("{unchanged}", _views_0003(UNCHANGED)))
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {READER}")


def downgrade() -> None:
    _drop_views()
    for trigger, table in TRIGGER_NAMES:
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    for function in FUNCTION_NAMES:
        op.execute(f"DROP FUNCTION {function}()")
    op.drop_table("brand_text_matches")
    op.drop_index(op.f("ix_detections_post_id_brand_model_version"), table_name="detections")
    op.drop_index(op.f("ix_detections_brand_model_version_day"), table_name="detections")
    op.drop_column("detections", "day")
    op.drop_index(op.f("ix_posts_day"), table_name="posts")
    op.drop_column("posts", "day")
    op.execute(_views_0003(VIEWS))
    op.execute(f"GRANT SELECT ON {', '.join(VIEWS)} TO {READER}")
