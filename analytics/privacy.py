"""Privacy: pseudonymised authors, retention by age, and forgetting a person or a post.

Images are never stored, so a post's personal data is its row in ``posts`` (author, caption,
links), what was derived from it (``detections``, ``embeddings``, people's ``brand_labels``) and
the producers' memory of its id (``produced_posts``). Every deletion here covers all of them in
one transaction, so a crash never leaves half a person behind.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass, fields

from sqlalchemy import Connection, text

from analytics.errors import AnalyticsError

AUTHOR_KEY_ENV = "LOGOWATCH_AUTHOR_KEY"
PSEUDONYM_PREFIX = "anon:"
BATCH = 5000


def pseudonymise(author: str, key: str | bytes) -> str:
    """A stable, keyed pseudonym for an author handle (HMAC-SHA256, 128 bits shown).

    Keyed, not a plain hash, because handles are guessable: without the key nobody can test a
    name against the stored value; with it, ``forget --author`` can find the rows. The handle
    is normalised (trimmed, leading ``@`` dropped, lower-cased) since platforms treat handles
    case-insensitively.
    """
    key_bytes = key.encode("utf-8") if isinstance(key, str) else key
    if not key_bytes:
        raise AnalyticsError(f"the author pseudonymisation key is empty (set {AUTHOR_KEY_ENV})")
    handle = author.strip().lstrip("@").lower().encode("utf-8")
    digest = hmac.new(key_bytes, handle, hashlib.sha256).hexdigest()
    return PSEUDONYM_PREFIX + digest[:32]


def author_key_from_env(env: Mapping[str, str] | None = None) -> bytes | None:
    """The pseudonymisation key from ``LOGOWATCH_AUTHOR_KEY``, or None when it is unset."""
    value = (env if env is not None else os.environ).get(AUTHOR_KEY_ENV, "")
    return value.encode("utf-8") if value else None


@dataclass
class Removed:
    """Rows removed per table, for the command's summary line."""

    posts: int = 0
    detections: int = 0
    embeddings: int = 0
    produced_posts: int = 0
    brand_labels: int = 0
    mentions_scrubbed: int = 0

    def add(self, other: Removed) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))

    def summary(self) -> str:
        return ", ".join(f"{getattr(self, f.name)} {f.name.replace('_', ' ')}"
                         for f in fields(self))


def _delete_posts(conn: Connection, post_ids: list[str]) -> Removed:
    """Delete the posts and everything derived from them (explicitly, not only by cascade,
    so the counts are honest and a future table without a cascade is not missed silently)."""
    if not post_ids:
        return Removed()
    ids = {"ids": post_ids}

    def count(sql: str) -> int:
        return conn.execute(text(sql), ids).rowcount

    return Removed(
        detections=count("DELETE FROM detections WHERE post_id = ANY(:ids)"),
        embeddings=count("DELETE FROM embeddings WHERE post_id = ANY(:ids)"),
        produced_posts=count("DELETE FROM produced_posts WHERE post_id = ANY(:ids)"),
        brand_labels=count("DELETE FROM brand_labels WHERE post_id = ANY(:ids)"),
        posts=count("DELETE FROM posts WHERE post_id = ANY(:ids)"),
    )


def _like_prefix(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return escaped + ":%"


def forget_post(conn: Connection, post_id: str) -> Removed:
    """Remove one post, its carousel children (``<id>:<n>``) and all derived rows."""
    params = {"id": post_id, "children": _like_prefix(post_id)}
    where = "post_id = :id OR post_id LIKE :children"
    ids = list(conn.execute(text(f"SELECT post_id FROM posts WHERE {where}"), params).scalars())
    removed = _delete_posts(conn, ids)
    # The producer may know the id even though no worker has stored the post yet.
    removed.produced_posts += conn.execute(
        text(f"DELETE FROM produced_posts WHERE {where}"), params).rowcount
    return removed


def forget_author(conn: Connection, author: str, key: bytes | None) -> Removed:
    """Remove every post by ``author`` (plain or pseudonymised with ``key``) and scrub their
    @handle from other people's posts, where it names them too."""
    handle = author.strip().lstrip("@")
    if not handle:
        raise AnalyticsError("--author: empty name")
    params = {"name": handle, "pseudonym": pseudonymise(handle, key) if key else None}
    ids = list(conn.execute(text(
        "SELECT post_id FROM posts WHERE lower(author) = lower(:name) "
        "OR lower(author) = lower('@' || :name) OR author = :pseudonym"), params).scalars())
    removed = Removed()
    for start in range(0, len(ids), BATCH):
        removed.add(_delete_posts(conn, ids[start:start + BATCH]))
    removed.mentions_scrubbed = conn.execute(text(
        r"""UPDATE posts
            SET mentions = array_remove(mentions, lower(:name)),
                caption = regexp_replace(caption, '@' || regexp_replace(:name,
                    '([^[:alnum:]])', '\\\1', 'g') || '(?![[:alnum:]_.])',
                    '@[forgotten]', 'gi')
            WHERE lower(:name) = ANY(mentions)"""), params).rowcount
    return removed


def retention(conn: Connection, days: int, dry_run: bool = False) -> Removed:
    """Delete posts older than ``days`` (by ``posted_at``, else ``ingested_at``) with all
    derived rows, and producer ids older than that; in batches so locks stay short."""
    if days < 1:
        raise AnalyticsError("--days must be at least 1")
    cutoff = {"days": days}
    older = ("coalesce(posted_at, ingested_at) < now() - make_interval(days => :days)")
    if dry_run:
        n = conn.execute(text(f"SELECT count(*) FROM posts WHERE {older}"), cutoff).scalar_one()
        return Removed(posts=int(n))
    removed = Removed()
    while True:
        ids = list(conn.execute(text(
            f"SELECT post_id FROM posts WHERE {older} LIMIT {BATCH}"), cutoff).scalars())
        if not ids:
            break
        removed.add(_delete_posts(conn, ids))
    removed.produced_posts += conn.execute(text(
        "DELETE FROM produced_posts WHERE produced_at < now() - make_interval(days => :days)"),
        cutoff).rowcount
    return removed
