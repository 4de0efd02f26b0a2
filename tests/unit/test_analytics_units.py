"""Pure parts of analytics: pseudonyms, period parsing, brand specs and the YAML catalogue."""

from __future__ import annotations

from datetime import date
from pathlib import Path

import pytest

from analytics.catalogue import BrandSpec, read_yaml
from analytics.errors import AnalyticsError
from analytics.privacy import author_key_from_env, pseudonymise
from analytics.report import parse_since


def test_pseudonym_is_stable_keyed_and_ignores_handle_case_and_at_sign() -> None:
    one = pseudonymise("Alice", "k1")
    assert one == pseudonymise("@alice ", b"k1")
    assert one != pseudonymise("alice", "k2")
    assert one != pseudonymise("alicia", "k1")
    assert one.startswith("anon:") and "alice" not in one and len(one) == 5 + 32


def test_pseudonym_refuses_an_empty_key() -> None:
    with pytest.raises(AnalyticsError, match="LOGOWATCH_AUTHOR_KEY"):
        pseudonymise("alice", "")


def test_author_key_is_read_from_the_environment_or_absent() -> None:
    assert author_key_from_env({"LOGOWATCH_AUTHOR_KEY": "s3cret"}) == b"s3cret"
    assert author_key_from_env({}) is None


def test_since_counts_today_in_relative_periods_and_accepts_dates() -> None:
    today = date(2026, 3, 31)
    assert parse_since("30d", today) == date(2026, 3, 2)
    assert parse_since("1d", today) == today
    assert parse_since("2w", today) == date(2026, 3, 18)
    assert parse_since("2026-01-05", today) == date(2026, 1, 5)
    for bad in ("0d", "yesterday", "30x"):
        with pytest.raises(AnalyticsError, match="--since"):
            parse_since(bad, today)


def test_a_brand_without_aliases_is_matched_by_its_own_name() -> None:
    assert BrandSpec("patagonia").aliases() == [
        ("word", "patagonia"), ("hashtag", "patagonia"), ("mention", "patagonia")]


def test_brand_aliases_drop_hash_and_at_signs_and_duplicates() -> None:
    spec = BrandSpec("nike", words=["Nike", "Nike"], hashtags=["#JustDoIt"], handles=["@nike"])
    assert spec.aliases() == [("word", "Nike"), ("hashtag", "JustDoIt"), ("mention", "nike")]
    with pytest.raises(AnalyticsError, match="empty"):
        BrandSpec("nike", hashtags=["#"]).aliases()


def test_yaml_catalogue_is_read_and_mistakes_name_the_field(tmp_path: Path) -> None:
    good = tmp_path / "brands.yaml"
    good.write_text("brands:\n  patagonia:\n    display_name: Patagonia\n"
                    "    words: [patagonia]\n    hashtags: patagonia\n  nike:\n")
    specs = read_yaml(good)
    assert [(s.brand, s.display_name, s.words, s.hashtags) for s in specs] == [
        ("patagonia", "Patagonia", ["patagonia"], ["patagonia"]), ("nike", None, [], [])]
    bad = tmp_path / "bad.yaml"
    bad.write_text("brands:\n  nike:\n    tags: [x]\n")
    with pytest.raises(AnalyticsError, match=r"brands\.nike: unknown key\(s\) tags"):
        read_yaml(bad)
    bad.write_text("- nike\n")
    with pytest.raises(AnalyticsError, match="expected a mapping 'brands:'"):
        read_yaml(bad)
