"""`interlink test`: run the `tests:` of channel files, offline, before anything is deployed."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from channels.testing import collect, format_result, run_case


def register(sub: Any) -> None:
    """Add the `test` subcommand."""
    parser = sub.add_parser(
        "test", help="run the tests written in channel files (no network, no store)")
    parser.add_argument("paths", nargs="+", type=Path, metavar="PATH",
                        help="channel files or directories of them")
    parser.add_argument("--quiet", "-q", action="store_true",
                        help="print failures and the summary only")
    parser.set_defaults(handler=handle)


def handle(args: argparse.Namespace) -> int:
    """Exit 0 when every test passes and every file loads, 1 otherwise."""
    found = collect(args.paths)
    for issue in found.issues:
        print(issue)
    for loaded in found.untested:
        print(f"warning: {loaded.file}: channel {loaded.name} has no tests")
    passed = failed = 0
    for case in found.cases:
        result = run_case(case)
        if result.passed:
            passed += 1
            if not args.quiet:
                print(f"ok {result.id}")
        else:
            failed += 1
            print(format_result(result))
    summary = f"{passed} passed, {failed} failed"
    if found.issues:
        broken = len({issue.file for issue in found.issues})
        summary += f", {broken} {'file' if broken == 1 else 'files'} with errors"
    print(summary)
    return 0 if failed == 0 and not found.issues else 1
