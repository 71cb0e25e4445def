"""Subcommands of ``robert`` for this component (see robert_server/cli.py)."""

from __future__ import annotations

import argparse
from typing import Any


def register(sub: Any) -> None:  # sub: argparse._SubParsersAction
    del sub  # filled in by the component's issue


__all__ = ["register", "argparse"]
