"""The detector's subcommands: every flag documented, help instant, synth runs end to end."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from detector.cli import register


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="logowatch")
    register(p.add_subparsers(dest="command", required=True))
    return p


@pytest.mark.parametrize("command", ["train", "evaluate", "export", "synth"])
def test_every_flag_has_help(command: str) -> None:
    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    for action in sub.choices[command]._actions:
        assert action.help, f"{command} {action.option_strings or action.dest} has no help"


def test_registering_does_not_import_tensorflow() -> None:
    code = "import argparse, sys, detector.cli as c; c.register(argparse.ArgumentParser()" \
           ".add_subparsers()); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "False"


def test_synth_command_writes_the_layout(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    args = parser().parse_args(["synth", str(tmp_path), "--images", "6", "--brands", "acme",
                                "--logo-fraction", "0.5", "--width", "80", "--height", "60"])
    assert args.func(args) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["images"] == 6
    assert (tmp_path / "manifest.csv").is_file() and (tmp_path / "no-logo").is_dir()


def test_train_defaults_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOGOWATCH_WEIGHTS", "none")
    args = parser().parse_args(["train", "data", "--out", "b"])
    assert args.weights == "none" and args.tiles == 2 and args.threshold == "precision>=0.9"


def test_train_mines_marks_unless_told_not_to() -> None:
    assert parser().parse_args(["train", "data", "--out", "b"]).no_marks is False
    assert parser().parse_args(["train", "data", "--out", "b", "--no-marks"]).no_marks is True
