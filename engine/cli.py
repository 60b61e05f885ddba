"""The `interlink` command: one subcommand per module in `engine.commands`.

Every module there with a `register(subparsers)` function adds its own subcommand, so a
new command is a new module and nothing else changes.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Iterator, Sequence
from types import ModuleType

import engine.commands


def command_modules() -> Iterator[ModuleType]:
    """The modules of `engine.commands` that register a subcommand, in name order."""
    for info in sorted(pkgutil.iter_modules(engine.commands.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"engine.commands.{info.name}")
        if callable(getattr(module, "register", None)):
            yield module


def build_parser() -> argparse.ArgumentParser:
    """All subcommands and their options."""
    parser = argparse.ArgumentParser(
        prog="interlink", description="Interlink HL7 v2 / IHE integration engine")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for module in command_modules():
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script; returns the process exit code."""
    args = build_parser().parse_args(argv)
    try:
        code: int = args.handler(args)
    except BrokenPipeError:
        # The reader went away (`interlink messages search | head`): stop quietly, and keep
        # the interpreter's own flush at exit from raising again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())
