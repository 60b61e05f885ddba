"""The `interlink` command: one subcommand per module in `engine.commands`."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from engine.commands import channels, check, messages, run, schema, send, test


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their options."""
    parser = argparse.ArgumentParser(
        prog="interlink", description="Interlink HL7 v2 / IHE integration engine")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in (run, check, test, schema, send, messages, channels):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
