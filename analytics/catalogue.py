"""The brand catalogue: which brands exist and how each is said in text.

The views match captions, hashtags and @handles against these aliases, so the catalogue is
what turns a detector head name (``patagonia``) into "said in the text". Aliases are stored as
typed, minus a leading ``#``/``@``; case and accents are folded by the views, not here, so
there is exactly one matching rule.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, text

from analytics.errors import AnalyticsError

# YAML key -> alias kind in brand_aliases.
YAML_KINDS = {"words": "word", "hashtags": "hashtag", "handles": "mention"}


@dataclass
class BrandSpec:
    """One brand as a user describes it; empty alias lists default to the brand's name."""

    brand: str
    display_name: str | None = None
    words: list[str] = field(default_factory=list)
    hashtags: list[str] = field(default_factory=list)
    handles: list[str] = field(default_factory=list)

    def aliases(self) -> list[tuple[str, str]]:
        """(kind, alias) pairs, cleaned; a brand given no alias at all gets its own name as a
        word, a hashtag and a handle, which is what most brands want."""
        pairs = [("word", w.strip()) for w in self.words]
        pairs += [("hashtag", h.strip().lstrip("#")) for h in self.hashtags]
        pairs += [("mention", m.strip().lstrip("@")) for m in self.handles]
        if not pairs:
            pairs = [("word", self.brand), ("hashtag", self.brand), ("mention", self.brand)]
        cleaned = [(kind, alias) for kind, alias in pairs if alias]
        if len(cleaned) != len(pairs):
            raise AnalyticsError(f"brand {self.brand!r}: an alias is empty")
        return list(dict.fromkeys(cleaned))


def _check_name(brand: str) -> str:
    name = brand.strip()
    if not name:
        raise AnalyticsError("a brand name cannot be empty")
    return name


def add(conn: Connection, spec: BrandSpec, replace_aliases: bool = False) -> int:
    """Create or update a brand and add its aliases; returns how many aliases are new."""
    name = _check_name(spec.brand)
    conn.execute(text(
        "INSERT INTO brands (brand, display_name) VALUES (:b, :d) ON CONFLICT (brand) DO "
        "UPDATE SET display_name = coalesce(EXCLUDED.display_name, brands.display_name)"),
        {"b": name, "d": spec.display_name})
    if replace_aliases:
        conn.execute(text("DELETE FROM brand_aliases WHERE brand = :b"), {"b": name})
    added = 0
    for kind, alias in spec.aliases():
        added += conn.execute(text(
            "INSERT INTO brand_aliases (brand, kind, alias) VALUES (:b, :k, :a) "
            "ON CONFLICT DO NOTHING"), {"b": name, "k": kind, "a": alias}).rowcount
    return added


def remove(conn: Connection, brand: str) -> None:
    """Remove a brand, its aliases and its pin; its detections stay (they are model output)."""
    name = _check_name(brand)
    conn.execute(text("DELETE FROM brand_model_pins WHERE brand = :b"), {"b": name})
    if conn.execute(text("DELETE FROM brands WHERE brand = :b"), {"b": name}).rowcount == 0:
        raise AnalyticsError(f"no brand {name!r} in the catalogue (see: logowatch brands list)")


def listing(conn: Connection) -> list[dict[str, Any]]:
    """Every catalogued or detected brand with its aliases and current model."""
    result = conn.execute(text("""
        SELECT b.brand, max(c.display_name) AS display_name,
               array_remove(array_agg(DISTINCT CASE c.kind WHEN 'hashtag' THEN '#' || c.alias
                   WHEN 'mention' THEN '@' || c.alias ELSE c.alias END), NULL) AS aliases,
               max(m.model_version) AS model_version, bool_or(m.pinned) AS pinned
        FROM (SELECT brand FROM brands UNION SELECT brand FROM brand_current_model) b
        LEFT JOIN brand_catalogue c ON c.brand = b.brand
        LEFT JOIN brand_current_model m ON m.brand = b.brand
        GROUP BY b.brand ORDER BY b.brand"""))
    return [dict(row._mapping) for row in result]


def pin(conn: Connection, brand: str, model_version: str) -> None:
    """Keep the views on ``model_version`` for ``brand`` until unpinned."""
    name = _check_name(brand)
    heads = conn.execute(text("SELECT brands FROM models WHERE model_version = :v"),
                         {"v": model_version}).scalar()
    if heads is None:
        raise AnalyticsError(f"no model {model_version!r} in the database")
    if name not in heads:
        raise AnalyticsError(f"model {model_version!r} has no head for brand {name!r} "
                             f"(it has: {', '.join(sorted(heads)) or 'none'})")
    conn.execute(text(
        "INSERT INTO brand_model_pins (brand, model_version) VALUES (:b, :v) ON CONFLICT "
        "(brand) DO UPDATE SET model_version = EXCLUDED.model_version, pinned_at = now()"),
        {"b": name, "v": model_version})


def unpin(conn: Connection, brand: str) -> bool:
    """Back to "newest model with a head for the brand"; False when it was not pinned."""
    return conn.execute(text("DELETE FROM brand_model_pins WHERE brand = :b"),
                        {"b": _check_name(brand)}).rowcount > 0


def read_yaml(path: Path) -> list[BrandSpec]:
    """Brand specs from a YAML file::

        brands:
          patagonia:
            display_name: Patagonia
            words: [patagonia]
            hashtags: [patagonia]
            handles: [patagonia]
    """
    import yaml

    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise AnalyticsError(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise AnalyticsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    brands = data.get("brands") if isinstance(data, dict) else None
    if not isinstance(brands, dict) or not brands:
        raise AnalyticsError(f"{path}: expected a mapping 'brands:' of brand name to aliases")
    return [_spec(path, str(name), body) for name, body in brands.items()]


def _spec(path: Path, name: str, body: Any) -> BrandSpec:
    body = body or {}
    if not isinstance(body, dict):
        raise AnalyticsError(f"{path}: brands.{name}: expected a mapping")
    unknown = set(body) - {"display_name", *YAML_KINDS}
    if unknown:
        raise AnalyticsError(f"{path}: brands.{name}: unknown key(s) {', '.join(sorted(unknown))}"
                             f" (allowed: display_name, {', '.join(YAML_KINDS)})")
    lists: dict[str, list[str]] = {}
    for key in YAML_KINDS:
        value = body.get(key, [])
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(v, str | int) for v in value):
            raise AnalyticsError(f"{path}: brands.{name}.{key}: expected a list of strings")
        lists[key] = [str(v) for v in value]
    display = body.get("display_name")
    return BrandSpec(brand=name, display_name=str(display) if display else None, **lists)
