"""The console script answers bad flags with one line and a non-zero exit, never a traceback."""

from __future__ import annotations

import subprocess
import sys

import pytest


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "logowatch.cli", *args],
                          capture_output=True, text=True, check=False)


@pytest.mark.parametrize(
    "argv",
    [
        ["--bogus"],
        ["no-such-command"],
        ["migrate", "--revision"],
        ["services", "sideways"],
        ["services", "up", "--kafka-port", "notanumber"],
        ["ingest", "file", "x.jsonl", "--interval", "-5"],
        ["ingest", "file", "x.jsonl", "--interval", "nan"],
        ["ingest", "instagram", "me", "--max-pages", "0"],
        ["ingest", "instagram", "me", "--quiet-pages", "many"],
        ["ingest", "instagram", "me", "--retries", "-1"],
        ["ingest", "instagram", "me", "--pause", "inf"],
        ["classify", "--model", "m"],
        ["classify", "--model", "m", "--format", "xml", "photos/"],
        ["serve", "--model", "m", "--port", "99999"],
        ["serve", "--model", "m", "--max-images", "0"],
        ["serve", "--model", "m", "--rate-limit", "-1"],
        ["keys", "sideways"],
        ["brands", "add", "x", "--logo", "x.png", "--precision", "1.5"],
        ["brands", "add", "x", "--logo", "x.png", "--positives", "0"],
        ["brands", "review"],
        ["report", "--brand", "x", "--database-url", "not a url"],
        ["rescore", "--model", "m", "--database-url", "mysql://me:secret@db/x"],
    ],
)
def test_a_bad_flag_gets_one_line_and_exit_2(argv: list[str]) -> None:
    result = _run(*argv)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("logowatch")
    assert "Traceback" not in result.stderr and "secret" not in result.stderr


def test_help_lists_the_subcommands() -> None:
    result = _run("--help")
    assert result.returncode == 0
    for command in ("services", "migrate"):
        assert command in result.stdout


@pytest.mark.parametrize("argv, expected", [
    (["brands", "add", "x", "--dry-run"], "--dry-run only go with --logo FILE"),
    (["brands", "add", "x", "--logo", "x.png"], "--logo needs --model"),
    (["brands", "add", "../etc", "--logo", "x.png"], "a detector head's name"),
    (["brands", "add", "no-logo", "--logo", "x.png"], "not 'no-logo'"),
    (["brands", "add", "x", "--logo", "no-such.png", "--model", "no-such-bundle",
      "--database-url", "postgresql://127.0.0.1:1/x"], "not a model bundle"),
])
def test_brands_add_refuses_what_it_cannot_do_in_one_line(argv: list[str],
                                                          expected: str) -> None:
    result = _run(*argv)
    assert result.returncode == 1
    assert result.stderr.count("\n") == 1 and expected in result.stderr, result.stderr


def test_tiles_default_to_the_bundles_own_and_can_be_turned_off_or_forced() -> None:
    import argparse
    from types import SimpleNamespace

    from detector.preprocess import TileSpec
    from logowatch.commands import add_scoring_flags, tiles_spec

    p = argparse.ArgumentParser()
    add_scoring_flags(p, max_wait_ms=50, fetch_workers=2)
    trained, plain = SimpleNamespace(tiles=TileSpec(3, 0.1)), SimpleNamespace(tiles=None)
    args = p.parse_args(["--model", "m"])
    assert tiles_spec(args, trained) == TileSpec(3, 0.1) and tiles_spec(args, plain) is None
    args = p.parse_args(["--model", "m", "--no-tiles"])
    assert tiles_spec(args, trained) is None
    args = p.parse_args(["--model", "m", "--tiles"])
    assert tiles_spec(args, trained) == TileSpec(3, 0.1) and tiles_spec(args, plain) == TileSpec()
