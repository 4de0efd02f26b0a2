"""Subcommands of the ``analytics`` package, registered on the ``logowatch`` parser."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    """Nothing from this package is a command yet."""
