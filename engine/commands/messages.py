"""`interlink messages`: list the store directly; search, show, export and reprocess through
the admin API of the running engine (so each look is authenticated and audited)."""

from __future__ import annotations

import argparse
import json
import re
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from engine.commands.common import add_config_option, load_or_exit
from engine.commands.control import TIMEOUT_S, api_url, call, credentials, open_api, report
from engine.commands.progress import Progress
from engine.config import EngineConfig

COLUMNS = ("id", "channel", "received_at", "control_id", "message_type", "status",
           "duplicate", "peer")
_RELATIVE = re.compile(r"^(\d+)([smhd])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}
STATUSES = ["RECEIVED", "QUEUED", "SENT", "FILTERED", "ERROR"]
SEARCH_COLUMNS = ("id", "channel", "received", "control_id", "message_type",
                  "sending_application", "patient_id", "status")
REPROCESS_CHUNK = 500


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
    found = actions.add_parser("search", help="search messages in the running engine")
    add_search_options(found)
    found.add_argument("--limit", type=int, default=50, help="at most this many (default 50)")
    found.add_argument("--format", choices=["table", "jsonl"], default="table")
    found.set_defaults(handler=handle_search)
    show = actions.add_parser("show", help="one message in full: contents, deliveries, events")
    add_config_option(show)
    show.add_argument("id", type=int, metavar="ID")
    show.set_defaults(handler=handle_show)
    out = actions.add_parser("export", help="export the messages of a search to stdout")
    add_search_options(out)
    out.add_argument("--format", choices=["jsonl", "hl7"], default="jsonl",
                     help="JSON lines with content, or raw HL7 one message per line group")
    out.add_argument("--limit", type=int, default=None)
    out.set_defaults(handler=handle_export)
    again = actions.add_parser(
        "reprocess", help="re-queue ERROR messages in a running engine (by id or by search)")
    add_search_options(again, status=False)
    again.add_argument("ids", nargs="*", type=int, metavar="ID")
    again.add_argument("--status", choices=["ERROR"], type=str.upper,
                       help="reprocess every ERROR message the other filters match")
    again.set_defaults(handler=handle_reprocess)


def add_search_options(parser: argparse.ArgumentParser, *, status: bool = True) -> None:
    """The filters of `GET /api/v1/messages`, as options."""
    add_config_option(parser)
    parser.add_argument("--channel")
    if status:
        parser.add_argument("--status", choices=STATUSES, type=str.upper)
    parser.add_argument("--since", metavar="T", help="ISO time or age (15m, 2h, 7d)")
    parser.add_argument("--until", metavar="T", help="ISO time or age (15m, 2h, 7d)")
    parser.add_argument("--control-id")
    parser.add_argument("--patient-id")
    parser.add_argument("--message-type", help="ORU (every ORU) or ORU^R01")
    parser.add_argument("--sending-application")
    parser.add_argument("--text", help="bytes inside the content (case-sensitive)")


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


def search_query(args: argparse.Namespace) -> dict[str, str]:
    """The API's query arguments for the filters given on the command line."""
    now = datetime.now(UTC)
    query: dict[str, str] = {}
    for name in ("channel", "status", "control_id", "patient_id", "message_type",
                 "sending_application", "text"):
        value = getattr(args, name, None)
        if value:
            query[name] = value
    for name in ("since", "until"):
        value = getattr(args, name, None)
        if value:
            try:
                query[name] = parse_since(value, now).isoformat()
            except ValueError:
                print(f"interlink messages: cannot read --{name} {value!r}", file=sys.stderr)
                raise SystemExit(2) from None
    return query


def checked(code: int, answer: Any) -> Any:
    """The answer of a successful call; otherwise print the engine's reason and exit 1."""
    if not 200 <= code < 300:
        reason = answer.get("error") if isinstance(answer, dict) else answer
        print(f"interlink messages: the engine answered {code}: {reason}", file=sys.stderr)
        raise SystemExit(1)
    return answer


def pages(config: EngineConfig, query: dict[str, str], most: int | None
          ) -> Iterator[dict[str, Any]]:
    """Every message a search finds (up to `most`), following the engine's pages."""
    given, before = 0, None
    while most is None or given < most:
        params = dict(query, limit=str(1000 if most is None else min(1000, most - given)))
        if before is not None:
            params["before_id"] = str(before)
        answer = checked(*call(config, "GET", "messages?" + urllib.parse.urlencode(params)))
        yield from answer["messages"]
        given += len(answer["messages"])
        before = answer["next_before_id"]
        if before is None:
            return


def handle_search(args: argparse.Namespace) -> int:
    """Print the messages a search finds, newest first."""
    config = load_or_exit(args)
    rows = list(pages(config, search_query(args), args.limit))
    if args.format == "jsonl":
        for row in rows:
            print(json.dumps(row, ensure_ascii=False))
        return 0
    widths = {c: max([len(c)] + [len(str(r[c])) for r in rows]) for c in SEARCH_COLUMNS}
    print("  ".join(c.upper().ljust(widths[c]) for c in SEARCH_COLUMNS))
    for row in rows:
        print("  ".join(str(row[c]).ljust(widths[c]) for c in SEARCH_COLUMNS))
    return 0


def handle_show(args: argparse.Namespace) -> int:
    """Print one message in full as JSON."""
    return report(*call(load_or_exit(args), "GET", f"messages/{args.id}"))


def handle_export(args: argparse.Namespace) -> int:
    """Copy the engine's streamed export to stdout, counting messages on a terminal."""
    config = load_or_exit(args)
    query = dict(search_query(args), format=args.format)
    if args.limit:
        query["limit"] = str(args.limit)
    url = api_url(config, "messages/export?" + urllib.parse.urlencode(query))
    request = urllib.request.Request(url, headers=credentials(config))
    progress = Progress("exported")
    out = sys.stdout.buffer
    try:
        with open_api(request, TIMEOUT_S, config) as answer:
            while chunk := answer.read1(65536):
                out.write(chunk)
                progress.advance(chunk.count(b"\n"))
    except urllib.error.HTTPError as error:
        checked(error.code, json.loads(error.read() or b"null"))
    except (urllib.error.URLError, ConnectionError, OSError) as error:
        print(f"interlink messages export: failed: {error}", file=sys.stderr)
        return 3
    finally:
        out.flush()
        progress.close()
    return 0


def handle_reprocess(args: argparse.Namespace) -> int:
    """Re-queue messages by id, or every ERROR message a search finds (in chunks)."""
    config = load_or_exit(args)
    query = search_query(args)
    if args.ids and (query or args.status):
        print("interlink messages reprocess: give ids or filters, not both", file=sys.stderr)
        return 2
    if args.ids:
        return report(*call(config, "POST", "messages/reprocess", {"ids": args.ids}))
    if args.status != "ERROR":
        print("interlink messages reprocess: give message ids, or --status ERROR with "
              "optional filters", file=sys.stderr)
        return 2
    ids = [row["id"] for row in pages(config, dict(query, status="ERROR"), None)]
    totals: dict[str, list[int]] = {"requeued": [], "rerouted": [], "unchanged": []}
    progress = Progress("reprocessed", len(ids))
    try:
        for start in range(0, len(ids), REPROCESS_CHUNK):
            chunk = ids[start:start + REPROCESS_CHUNK]
            answer = checked(*call(config, "POST", "messages/reprocess", {"ids": chunk}))
            for key in totals:
                totals[key] += answer.get(key, [])
            progress.advance(len(chunk))
    finally:
        progress.close()
    return report(200, {"matched": len(ids), **totals})
