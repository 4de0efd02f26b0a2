"""Instagram Graph API sources: a hashtag's media, a business account's media, our own media.

Each API page becomes one batch, so the checkpoint moves page by page: a restart resumes at the
saved ``paging.next`` link. Media are known by id (``produced_posts``), never by time: edges are
not reliably in time order and media are indexed late, so a pass reads on until several pages in
a row hold nothing new. Carousels become one record per child image (``<media id>:<index>``)
and videos their thumbnail, because the detector scores still images.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ingest.checkpoints import Checkpoint
from ingest.errors import IngestError
from ingest.graph import GraphApiError, GraphClient, redact
from ingest.pipeline import Batch
from ingest.records import PostRecord, RecordError, build

log = logging.getLogger(__name__)

CHILD_FIELDS = "id,media_type,media_url,thumbnail_url"
MEDIA_FIELDS = (
    "id,caption,media_type,media_url,thumbnail_url,permalink,timestamp,username,"
    f"children{{{CHILD_FIELDS}}}"
)
# Hashtag edges return neither username nor thumbnail_url: asking for them is an error.
HASHTAG_FIELDS = (
    "id,caption,media_type,media_url,permalink,timestamp,children{id,media_type,media_url}"
)
KINDS = ("hashtag", "user", "me")
EDGES = ("recent", "top")
_HASHTAG = re.compile(r"^\w{1,100}$")
_USERNAME = re.compile(r"^[A-Za-z0-9._]{1,30}$")
MAX_PAGES = 100  # per source per pass: an endless or cycling feed still ends each pass
QUIET_PAGES = 3  # pages in a row with nothing new that end a pass


def parse_timestamp(value: Any) -> datetime | None:
    """Graph API timestamps look like ``2024-05-01T12:00:00+0000``."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else None


def _image_of(item: dict[str, Any]) -> str | None:
    if item.get("media_type") == "VIDEO":
        return item.get("thumbnail_url")  # a video's image is its thumbnail
    return item.get("media_url")


def media_to_records(
    item: dict[str, Any], origin: str, author: str | None = None
) -> tuple[list[PostRecord], Counter[str]]:
    """One API media object → its records (several for a carousel) and skip reasons."""
    skipped: Counter[str] = Counter()
    media_id = item.get("id")
    if not isinstance(media_id, str | int) or not str(media_id).strip():
        skipped["malformed_media"] += 1
        return [], skipped
    media_id = str(media_id)
    media_type = str(item.get("media_type") or "IMAGE")
    common: dict[str, Any] = {
        "source": "instagram",
        "caption": item.get("caption") if isinstance(item.get("caption"), str) else None,
        "author": item.get("username") if isinstance(item.get("username"), str) else author,
        "posted_at": parse_timestamp(item.get("timestamp")),
        "permalink": item.get("permalink") if isinstance(item.get("permalink"), str) else None,
    }
    images: list[tuple[str, str | None, dict[str, Any]]] = []
    if media_type == "CAROUSEL_ALBUM":
        children = (item.get("children") or {}).get("data") or []
        for index, child in enumerate(children):
            extra = {"ig_media_id": media_id, "media_type": media_type, "origin": origin,
                     "carousel_index": index, "child_media_type": child.get("media_type"),
                     "child_media_id": child.get("id")}
            images.append((f"{media_id}:{index}", _image_of(child), extra))
        if not children:
            images.append((media_id, item.get("media_url"),
                           {"ig_media_id": media_id, "media_type": media_type, "origin": origin}))
    else:
        images.append((media_id, _image_of(item),
                       {"ig_media_id": media_id, "media_type": media_type, "origin": origin}))

    records = []
    for post_id, url, extra in images:
        if not url:
            skipped["video_without_thumbnail" if media_type == "VIDEO" or
                    extra.get("child_media_type") == "VIDEO" else "no_image_url"] += 1
            continue
        extra = {k: v for k, v in extra.items() if v is not None}
        try:
            records.append(build(post_id=post_id, image_url=url, extra=extra, **common))
        except RecordError as exc:
            log.warning("media %s skipped: %s", post_id, exc)
            skipped["invalid_media"] += 1
    return records, skipped


@dataclass
class Page:
    items: list[dict[str, Any]]
    next: str | None  # what fetches the next page: a paging.next URL, or a discovery cursor


class InstagramSource:
    """Media of a hashtag (``recent``/``top``), a business account (``user``), or ``me``."""

    label = "instagram"

    def __init__(self, client: GraphClient, ig_user_id: str, kind: str, target: str = "",
                 *, edge: str = "recent", page_size: int = 50, max_pages: int = MAX_PAGES,
                 quiet_pages: int = QUIET_PAGES) -> None:
        if kind not in KINDS or edge not in EDGES:
            raise IngestError(f"unknown Instagram source {kind}/{edge}")
        if not ig_user_id or not ig_user_id.isdigit():
            raise IngestError("--ig-user-id must be the numeric id of your Instagram business "
                              "or creator account (env LOGOWATCH_IG_USER_ID)")
        target = target.lstrip("#@") if kind != "me" else ig_user_id  # one key per account
        pattern = _HASHTAG if kind == "hashtag" else _USERNAME
        if kind != "me" and not pattern.match(target):
            what = "hashtag" if kind == "hashtag" else "username"
            raise IngestError(f"not a valid Instagram {what}: {target!r}")
        self.client = client
        self.ig_user_id = ig_user_id
        self.kind = kind
        self.target = target.lower() if kind == "hashtag" else target
        self.edge = edge
        self.page_size = max(1, min(page_size, 50))  # hashtag edges allow at most 50
        self.max_pages = max(1, max_pages)
        self.quiet_pages = max(1, quiet_pages)
        self.key = f"instagram:{kind}:{self.target}" + (f":{edge}" if kind == "hashtag" else "")
        self._hashtag_id: str | None = None

    def batches(self, start: Checkpoint) -> Iterator[Batch]:
        """One batch per page; the pipeline sets each batch's ``new`` before the next page.

        No edge is trusted to be in time order (Meta says ``recent_media`` is not) and no
        cursor to move (its ``after`` is the same on every page), so a pass ends at the last
        page, after ``quiet_pages`` pages in a row where nothing was new, or at ``max_pages``
        (the saved ``next`` link continues there next pass). Media are new by id, not by time.
        """
        cursor = start.cursor or {}
        resume = cursor.get("next") if isinstance(cursor.get("next"), str) else None
        newest = start.newest_at
        pages = quiet = 0
        while True:
            try:
                page = self._fetch(resume)
            except GraphApiError as exc:
                if resume is None or pages or exc.code != 100:
                    raise
                log.warning("%s: the saved paging link was refused (%s); starting from the top",
                            self.key, exc)
                resume = None
                continue
            pages += 1
            batch = Batch(records=[], skipped=Counter())
            unseen_skips = 0
            for item in page.items:
                posted = parse_timestamp(item.get("timestamp"))
                records, skipped = media_to_records(item, self.key, self._author)
                batch.records += records
                batch.skipped += skipped
                if skipped and not records and (start.newest_at is None or posted is None
                                                or posted > start.newest_at):
                    unseen_skips += 1  # never produced, so only its time says it is not new
                if posted and (newest is None or posted > newest):
                    newest = posted
            more = page.next is not None
            batch.checkpoint = Checkpoint({"next": page.next} if more else None, newest)
            yield batch
            quiet = 0 if batch.new or unseen_skips else quiet + 1
            if not more:
                return
            if quiet >= self.quiet_pages:
                log.info("%s: %d pages in a row held nothing new; this pass is done",
                         self.key, quiet)
                yield Batch(records=[], checkpoint=Checkpoint(None, newest))
                return
            if pages >= self.max_pages:
                log.warning("%s: stopped at the page limit (%d); the next pass continues there",
                            self.key, self.max_pages)
                return
            resume = page.next

    @property
    def _author(self) -> str | None:
        return self.target if self.kind == "user" else None

    def _fetch(self, resume: str | None) -> Page:
        if self.kind == "user":
            return self._business_discovery(resume)
        if resume:
            return _page(self.client.get(resume), self.kind)
        params: dict[str, Any] = {"limit": self.page_size}
        if self.kind == "me":
            params["fields"] = MEDIA_FIELDS
            body = self.client.get(f"{self.ig_user_id}/media", params)
        else:
            params.update(user_id=self.ig_user_id, fields=HASHTAG_FIELDS)
            body = self.client.get(f"{self.hashtag_id()}/{self.edge}_media", params)
        return _page(body, self.kind)

    def hashtag_id(self) -> str:
        """Look the hashtag up once per process (each new hashtag counts toward 30 a week)."""
        if self._hashtag_id is None:
            body = self.client.get("ig_hashtag_search",
                                   {"user_id": self.ig_user_id, "q": self.target})
            data = body.get("data") or []
            if not data or not isinstance(data[0], dict) or not data[0].get("id"):
                raise IngestError(f"Instagram knows no hashtag #{self.target}")
            self._hashtag_id = str(data[0]["id"])
        return self._hashtag_id

    def _business_discovery(self, after: str | None) -> Page:
        media = "media" + (f".after({after})" if after else "") + f".limit({self.page_size})"
        fields = f"business_discovery.username({self.target}){{username,{media}{{{MEDIA_FIELDS}}}}}"
        body = self.client.get(self.ig_user_id, {"fields": fields})
        found = body.get("business_discovery")
        if not isinstance(found, dict):
            raise IngestError(f"no business or creator account @{self.target} was found")
        return _page(found.get("media") or {}, self.kind)


def _page(body: dict[str, Any], kind: str) -> Page:
    data = body.get("data")
    items = [i for i in data if isinstance(i, dict)] if isinstance(data, list) else []
    paging = body.get("paging") if isinstance(body.get("paging"), dict) else {}
    link = paging.get("next")
    if kind == "user":
        # Business discovery pages by field expansion, ``media.after(CURSOR)``: it may carry a
        # cursor but no ``next``.
        cursors = paging.get("cursors") if isinstance(paging.get("cursors"), dict) else {}
        after = cursors.get("after")
        return Page(items, after if isinstance(after, str) and after and items else None)
    # The link carries the token; the client adds its own, so it is never saved in checkpoints.
    return Page(items, redact(link, None) if isinstance(link, str) and link else None)
