"""`interlink check`: validate configuration without starting anything."""

from __future__ import annotations

import argparse
from typing import Any

from engine.commands.common import add_config_option, load_or_exit


def register(sub: Any) -> None:
    """Add the `check` subcommand."""
    parser = sub.add_parser("check", help="validate the configuration and exit")
    add_config_option(parser)
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Exit 0 when the configuration is valid; errors are printed by `load_or_exit`."""
    config = load_or_exit(args)
    print(f"ok: MLLP {config.mllp.endpoint_description()} -> channel {config.mllp.channel}, "
          f"store {config.store_url()}")
    return 0
