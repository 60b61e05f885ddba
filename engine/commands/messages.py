"""`interlink messages list`: read the store, also while the engine runs."""

from __future__ import annotations

import argparse
import json
import re
import sys
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.commands.common import add_config_option, load_or_exit
from engine.commands.control import call, report

COLUMNS = ("id", "channel", "received_at", "control_id", "message_type", "status",
           "duplicate", "peer")
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def register(sub: Any) -> None:
    """Add `messages list`."""
    parser = sub.add_parser("messages", help="browse stored messages")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    lst = actions.add_parser("list", help="list messages (metadata only, no content)")
    add_config_option(lst)
    lst.add_argument("--channel")
    lst.add_argument("--status", choices=["RECEIVED", "QUEUED", "SENT", "FILTERED", "ERROR"],
                     type=str.upper)
    lst.add_argument("--control-id")
    lst.add_argument("--since", metavar="T",
                     help="ISO time (2026-11-25T08:00, UTC if no offset) or age (15m, 2h, 7d)")
    lst.add_argument("--limit", type=int, default=None)
    lst.add_argument("--format", choices=["table", "jsonl"], default="table")
    lst.set_defaults(handler=handle_list)
    again = actions.add_parser(
        "reprocess", help="re-queue ERROR messages in a running engine (by message id)")
    add_config_option(again)
    again.add_argument("ids", nargs="+", type=int, metavar="ID")
    again.set_defaults(handler=handle_reprocess)


def parse_since(text: str, now: datetime) -> datetime:
    """An ISO timestamp or an age like 15m before `now`."""
    match = _RELATIVE.match(text.strip())
    if match:
        return now - timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _iso(us: int) -> str:
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="milliseconds")


def to_row(record: dict[str, Any]) -> dict[str, Any]:
    """The public shape of a message in listings."""
    return {
        "id": record["id"],
        "channel": record["channel"],
        "received_at": _iso(record["received_at"]),
        "control_id": record["control_id"],
        "message_type": record["message_type"],
        "status": record["status"],
        "duplicate": record["duplicate_of"] is not None,
        "duplicate_of": record["duplicate_of"],
        "ack_code": record["ack_code"],
        "peer": record["peer"],
        # The first line only: a failed step's traceback stays in the store (promise 6).
        "error": record["error"].splitlines()[0] if record["error"] else record["error"],
    }


def handle_list(args: argparse.Namespace) -> int:
    """Print matching messages as a table or as JSON lines."""
    config = load_or_exit(args)
    from engine.store.store import open_store

    since_us = None
    if args.since:
        try:
            since = parse_since(args.since, datetime.now(UTC))
        except ValueError:
            print(f"interlink messages list: cannot read --since {args.since!r}",
                  file=sys.stderr)
            return 2
        since_us = int(since.timestamp() * 1_000_000)
    store = open_store(config.store_url())
    try:
        rows = [to_row(r) for r in store.list_messages(
            channel=args.channel, status=args.status, control_id=args.control_id,
            since_us=since_us, limit=args.limit)]
    finally:
        store.close()
    if args.format == "jsonl":
        for row in rows:
            print(json.dumps(row))
        return 0
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in COLUMNS}
    print("  ".join(c.upper().ljust(widths[c]) for c in COLUMNS))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in COLUMNS))
    return 0


def handle_reprocess(args: argparse.Namespace) -> int:
    """Ask the running engine to re-queue the given messages."""
    return report(*call(load_or_exit(args), "POST", "messages/reprocess", {"ids": args.ids}))
