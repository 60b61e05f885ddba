"""`interlink audit verify`: walk the audit hash chain and name the first bad event.

Rows are streamed in id order (a server-side cursor on PostgreSQL), so a chain of millions
of events is checked in constant memory. Exit status 0 when intact, 1 when broken.

A chain proves every event up to its newest, but removing the newest events (or rewriting
the whole chain) leaves nothing to catch inside it. So an intact run prints the head
(`ID:HASH`); kept somewhere else (a ticket, another system's log), it is an anchor:
`--anchor ID:HASH` later fails when that event is gone or no longer has that hash.
"""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from typing import Any

from engine.audit import ChainBreak, verify_rows
from engine.commands.common import add_config_option, load_or_exit

BATCH = 2000


def register(sub: Any) -> None:
    """Add `audit verify`."""
    parser = sub.add_parser("audit", help="the audit trail")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")
    verify = actions.add_parser(
        "verify", help="check the hash chain; name the first changed, removed or moved event")
    add_config_option(verify)
    verify.add_argument("--anchor", metavar="ID:HASH", type=parse_anchor,
                        help="a head printed by an earlier verify: fail unless that event is "
                             "still stored with that hash")
    verify.set_defaults(handler=handle_verify)


def parse_anchor(text: str) -> tuple[int, str]:
    """`ID:HASH` as an earlier `verify` printed it."""
    event_id, _, digest = text.partition(":")
    if not event_id.isdigit() or len(digest) != 64:
        raise argparse.ArgumentTypeError("expected ID:HASH as printed by audit verify")
    return int(event_id), digest.lower()


def stored_hash(url: str, event_id: int | None = None) -> tuple[int, str] | None:
    """(id, hash) of one event, or of the newest when no id is given; None if absent."""
    from sqlalchemy import select

    from engine.store.schema import audit_events
    from engine.store.store import open_store

    store = open_store(url)
    try:
        query = select(audit_events.c.id, audit_events.c.hash)
        query = (query.where(audit_events.c.id == event_id) if event_id is not None
                 else query.order_by(audit_events.c.id.desc()).limit(1))
        with store.engine.connect() as conn:
            row = conn.execute(query).first()
        return (row.id, row.hash) if row is not None else None
    finally:
        store.close()


def verify_store(url: str) -> tuple[int, ChainBreak | None]:
    """Walk the whole chain of the store at `url`."""
    from sqlalchemy import select

    from engine.store.schema import audit_events
    from engine.store.store import open_store

    store = open_store(url)
    try:
        with store.engine.connect() as conn, store.engine.connect() as lookup:
            def locate(digest: str) -> int | None:
                return lookup.execute(select(audit_events.c.id)
                                      .where(audit_events.c.hash == digest)
                                      .order_by(audit_events.c.id).limit(1)).scalar()

            rows = conn.execution_options(yield_per=BATCH).execute(
                select(audit_events).order_by(audit_events.c.id))
            return verify_rows(rows, locate)
    finally:
        store.close()


def when(at: int | None) -> str:
    if at is None:
        return "unknown time"
    try:
        return datetime.fromtimestamp(at / 1_000_000, UTC).isoformat(timespec="microseconds")
    except (OverflowError, OSError, ValueError):
        return f"time {at}"


def handle_verify(args: argparse.Namespace) -> int:
    config = load_or_exit(args)
    url = config.store_url()
    checked, broken = verify_store(url)
    if broken is None:
        if args.anchor is not None:
            event_id, digest = args.anchor
            found = stored_hash(url, event_id)
            if found is None or found[1] != digest:
                what = ("gone (events at the end were removed)" if found is None
                        else "stored with another hash (the chain was rewritten)")
                print(f"audit chain BROKEN: the anchor event {event_id} is {what}")
                return 1
        print(f"audit chain intact: {checked} events checked")
        head = stored_hash(url)
        if head is not None:
            print(f"head: {head[0]}:{head[1]}")
        return 0
    print(f"audit chain BROKEN after {checked} intact events")
    print(f"first bad event: id {broken.event_id} at {when(broken.at)} "
          f"action {broken.action or '?'}")
    print(broken.reason)
    return 1
