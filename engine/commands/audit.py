"""`interlink audit verify`: walk the audit hash chain and name the first bad event.

Rows are streamed in id order (a server-side cursor on PostgreSQL), so a chain of millions
of events is checked in constant memory. Exit status 0 when intact, 1 when broken.
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
    verify.set_defaults(handler=handle_verify)


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
    checked, broken = verify_store(config.store_url())
    if broken is None:
        print(f"audit chain intact: {checked} events checked")
        return 0
    print(f"audit chain BROKEN after {checked} intact events")
    print(f"first bad event: id {broken.event_id} at {when(broken.at)} "
          f"action {broken.action or '?'}")
    print(broken.reason)
    return 1
