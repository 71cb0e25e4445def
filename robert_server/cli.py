"""``robert``: one command, a subcommand per component.

Each component registers its own subcommands from a ``register(subparsers)`` function in the module
listed below, so a newcomer finds ``robert crypto`` in ``crypto_backend/cli.py``, ``robert api`` in
``robert_server/api/cli.py``, and so on.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from robert_common.settings import SettingsError

COMMAND_MODULES = (
    "crypto_backend.cli",  # robert crypto, robert keys ...
    "robert_server.api.cli",  # robert api, robert config ...
    "robert_server.codes.cli",  # robert codes ..., robert issuers ...
    "robert_server.matching.cli",  # robert matcher
    "robert_server.seed",  # robert seed
    "robert_server.portal.cli",  # robert portal ...
    "robert_server.federation.cli",  # robert federation serve / forward / dev-cert
    "robert_server.certs",  # robert certs
    "robert_server.up",  # robert up
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="robert", description="ROBERT proximity-tracing server")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except SettingsError as e:
        print(f"robert: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
