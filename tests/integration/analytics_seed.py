"""A small, hand-countable set of posts and detections for the analytics tests.

Every row exists to exercise one matching rule; the expected view rows are counted by hand in
``test_analytics_views.py`` from the comments below. Two days: D1 = 2026-03-01, D2 = 03-02.
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import create_engine, insert

from analytics.schema import Brand, BrandAlias, Detection, Model, Post

D1 = datetime(2026, 3, 1, 10, 0, tzinfo=UTC)
D2 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)

BRANDS = {
    "patagonia": {"word": ["patagonia"], "hashtag": ["patagonia"], "mention": ["patagonia"]},
    "nike": {"word": ["nike"], "hashtag": ["#JustDoIt"], "mention": ["nike"]},
    "thenorthface": {"word": ["The North Face"], "hashtag": ["thenorthface"], "mention": []},
}  # adidas is deliberately only a model head, not in the catalogue.

MODELS = [
    ("m1", datetime(2026, 1, 1, tzinfo=UTC), {"patagonia": 0.5, "nike": 0.4}),
    ("m2", datetime(2026, 2, 1, tzinfo=UTC), {"patagonia": 0.6, "adidas": 0.7}),
]

# post_id, author, caption, hashtags, mentions, posted_at
POSTS = [
    ("p1", "alice", "Summit day in my PATAGONIA jacket", [], [], D1),  # pata both (word)
    ("p2", "bob", "Cold morning #Patagónia", ["patagónia"], [], D1),  # pata text (hashtag)
    ("p3", "alice", "new jacket #climbing", ["climbing"], [], D1),  # pata image only
    ("p4", "carol", None, [], [], D1),  # pata + nike image only: co-occurrence
    ("p5", "dave", "Patagonias rock #patagoniaworn", ["patagoniaworn"], [], D1),  # nothing
    ("p6", "erin", "Thanks @Patagonia for the repair", [], ["patagonia"], D1),  # pata text
    ("p7", "bob", "Running in my NÍKE shoes", [], [], D2),  # nike both, adidas image only
    ("p8", "alice", "the   North Face in the snow #snow #climbing", ["snow", "climbing"], [],
     D2),  # tnf text (phrase), pata image only
    ("p9", "frank", "shop at patagonia_store", [], [], D2),  # nothing: _ is a word character
    ("p10", None, "#justdoit", ["justdoit"], [], D2),  # nike text (hashtag), no author
    ("p11", "gina", "PATAGONIA", [], [], None),  # pata text on D2 via ingested_at
]

# post_id, brand, model_version, score, present
DETECTIONS = [
    ("p1", "patagonia", "m2", 0.9, True),
    ("p1", "patagonia", "m1", 0.3, False),
    ("p1", "nike", "m1", 0.1, False),
    ("p2", "patagonia", "m2", 0.2, False),
    ("p3", "patagonia", "m2", 0.8, True),
    ("p4", "patagonia", "m2", 0.7, True),
    ("p4", "nike", "m1", 0.9, True),
    ("p5", "patagonia", "m1", 0.9, True),  # only the old model saw it: must not count
    ("p5", "patagonia", "m2", 0.3, False),
    ("p7", "nike", "m1", 0.95, True),
    ("p7", "adidas", "m2", 0.85, True),
    ("p7", "patagonia", "m2", 0.2, False),
    ("p8", "patagonia", "m2", 0.75, True),
    ("p10", "nike", "m1", 0.1, False),
]


def seed(url: str) -> None:
    """Load the set above into a migrated database (idempotent per database: run once)."""
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            conn.execute(insert(Brand), [{"brand": b} for b in BRANDS])
            conn.execute(insert(BrandAlias), [
                {"brand": b, "kind": kind, "alias": alias}
                for b, kinds in BRANDS.items() for kind, aliases in kinds.items()
                for alias in aliases
            ])
            conn.execute(insert(Model), [
                {"model_version": v, "backbone": "inception_v3", "brands": brands,
                 "created_at": created} for v, created, brands in MODELS
            ])
            conn.execute(insert(Post), [
                {"post_id": pid, "source": "test", "author": author, "caption": caption,
                 "hashtags": tags, "mentions": mentions, "image_url": f"http://x/{pid}.jpg",
                 "posted_at": posted, "ingested_at": datetime(2026, 3, 2, 12, tzinfo=UTC),
                 "image_status": "ok"}
                for pid, author, caption, tags, mentions, posted in POSTS
            ])
            posted_at = {p[0]: p[5] for p in POSTS}
            conn.execute(insert(Detection), [
                {"post_id": pid, "brand": brand, "model_version": version, "score": score,
                 "present": present, "posted_at": posted_at[pid]}
                for pid, brand, version, score, present in DETECTIONS
            ])
    finally:
        engine.dispose()
