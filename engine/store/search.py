"""Finding messages and showing everything that happened to one, on SQLite and PostgreSQL.

A search filters the `messages` metadata (each filter an indexed column where the store
has one) and pages newest first by id (keyset: `before_id`, so a page costs the same
however deep it is). Text inside content is matched on the stored bytes (raw and the
per-destination payloads): the needle is the text's UTF-8 bytes, and also its ISO 8859-1
bytes when those differ (HL7 senders often declare 8859/1), so non-ASCII text is found
byte for byte without decoding anything. Such a search is bounded: it looks only inside
the newest `TEXT_SCAN_LIMIT` messages the other filters allow and says where to go on.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    LargeBinary,
    Select,
    exists,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.functions import FunctionElement

from engine.store.schema import audit_events, contents, deliveries, messages
from engine.store.status import ContentKind, Status
from engine.store.store import Store

MAX_LIMIT = 1000
"""The most messages one page may hold."""
TEXT_SCAN_LIMIT = 20_000
"""Messages a text search looks inside per page, newest first, before it stops and
answers with where to continue."""
TEXT_KINDS = (ContentKind.RAW.value, ContentKind.TRANSFORMED.value,
              ContentKind.ENCODED.value, ContentKind.SENT.value)
"""The payloads a text search reads: what came in and what went out."""

SUMMARY_COLUMNS = (
    "id", "channel", "received_at", "peer", "control_id", "message_type", "version",
    "sending_application", "sending_facility", "patient_id", "status", "ack_code",
    "duplicate_of", "parent_id", "updated_at", "error",
)


class ContainsBytes(FunctionElement[bool]):
    """`haystack` (binary) contains `needle` (binary), compared byte for byte."""

    type = Boolean()
    inherit_cache = True
    name = "contains_bytes"


@compiles(ContainsBytes)
def _contains_instr(element: ContainsBytes, compiler: Any, **kw: Any) -> str:
    haystack, needle = list(element.clauses)
    return f"instr({compiler.process(haystack, **kw)}, {compiler.process(needle, **kw)}) > 0"


@compiles(ContainsBytes, "postgresql")
def _contains_position(element: ContainsBytes, compiler: Any, **kw: Any) -> str:
    haystack, needle = list(element.clauses)
    return (f"position({compiler.process(needle, **kw)} IN "
            f"{compiler.process(haystack, **kw)}) > 0")


@dataclass(frozen=True, slots=True)
class MessageFilter:
    """What an operator is looking for; every field left empty matches everything."""

    channel: str | None = None
    statuses: tuple[str, ...] = ()
    since_us: int | None = None
    """Received at or after (microseconds since the epoch, UTC)."""
    until_us: int | None = None
    """Received before."""
    control_id: str | None = None
    patient_id: str | None = None
    message_type: str | None = None
    """`ORU` matches every ORU; `ORU^R01` that event (with or without a structure)."""
    sending_application: str | None = None
    text: str | None = None
    """Bytes inside the raw or outgoing content (case-sensitive)."""

    def __post_init__(self) -> None:
        unknown = [s for s in self.statuses if s not in Status.__members__]
        if unknown:
            raise ValueError(f"unknown status {unknown[0]!r}; one of {', '.join(Status)}")

    def described(self) -> dict[str, Any]:
        """The filters that are set, for the audit record (names and values, no results)."""
        out: dict[str, Any] = {}
        for name in ("channel", "since_us", "until_us", "control_id", "patient_id",
                     "message_type", "sending_application", "text"):
            value = getattr(self, name)
            if value not in (None, ""):
                out[name] = value
        if self.statuses:
            out["status"] = ",".join(self.statuses)
        return out


@dataclass(slots=True)
class SearchPage:
    """One page of a search: summaries newest first, and where the next page starts."""

    messages: list[dict[str, Any]]
    next_before_id: int | None
    scanned: int | None = None
    """For a text search: how many candidate messages were looked inside."""
    extra: dict[str, Any] = field(default_factory=dict)


def needles(text: str) -> list[bytes]:
    """The byte strings a text search looks for: UTF-8, and ISO 8859-1 when different."""
    found = [text.encode("utf-8")]
    try:
        latin = text.encode("latin-1")
    except UnicodeEncodeError:
        return found
    if latin != found[0]:
        found.append(latin)
    return found


def metadata_conditions(flt: MessageFilter) -> list[ColumnElement[bool]]:
    """WHERE conditions on `messages` for every filter except text."""
    m = messages.c
    where: list[ColumnElement[bool]] = []
    if flt.channel:
        where.append(m.channel == flt.channel)
    if flt.statuses:
        where.append(m.status.in_(flt.statuses))
    if flt.since_us is not None:
        where.append(m.received_at >= flt.since_us)
    if flt.until_us is not None:
        where.append(m.received_at < flt.until_us)
    if flt.control_id:
        where.append(m.control_id == flt.control_id)
    if flt.patient_id:
        where.append(m.patient_id == flt.patient_id)
    if flt.sending_application:
        where.append(m.sending_application == flt.sending_application)
    if flt.message_type:
        kind = flt.message_type.strip()
        where.append(or_(m.message_type == kind,
                         m.message_type.startswith(kind + "^", autoescape=True)))
    return where


def text_condition(text: str) -> ColumnElement[bool]:
    """Some raw or outgoing content of the message holds the text's bytes."""
    c = contents.c
    matches = [ContainsBytes(c.data, literal(n, LargeBinary)) for n in needles(text)]
    return exists(
        select(c.id).where(c.message_id == messages.c.id, c.kind.in_(TEXT_KINDS),
                           or_(*matches) if len(matches) > 1 else matches[0]))


def _summary_query(where: Sequence[ColumnElement[bool]], limit: int) -> Select[Any]:
    return (select(*(messages.c[name] for name in SUMMARY_COLUMNS))
            .where(*where).order_by(messages.c.id.desc()).limit(limit))


def search(store: Store, flt: MessageFilter, *, limit: int = 100,
           before_id: int | None = None, scan_limit: int = TEXT_SCAN_LIMIT) -> SearchPage:
    """One page of messages matching `flt`, newest first, metadata only (no content)."""
    limit = max(1, min(limit, MAX_LIMIT))
    where = metadata_conditions(flt)
    if before_id is not None:
        where.append(messages.c.id < before_id)
    with store.engine.connect() as conn:
        if not flt.text:
            rows = [dict(r._mapping) for r in conn.execute(_summary_query(where, limit + 1))]
            more = len(rows) > limit
            rows = rows[:limit]
            return SearchPage(rows, rows[-1]["id"] if more else None)
        candidates = (select(messages.c.id).where(*where)
                      .order_by(messages.c.id.desc()).limit(scan_limit).subquery())
        query = _summary_query(
            [messages.c.id.in_(select(candidates.c.id)), text_condition(flt.text)], limit + 1)
        rows = [dict(r._mapping) for r in conn.execute(query)]
        scanned, oldest = conn.execute(
            select(func.count(), func.min(candidates.c.id))).one()
        if len(rows) > limit:
            rows = rows[:limit]
            return SearchPage(rows, rows[-1]["id"], scanned)
        more = scanned >= scan_limit and conn.execute(
            select(messages.c.id).where(*where, messages.c.id < oldest).limit(1)).first()
    return SearchPage(rows, oldest if more else None, scanned)


def iter_matches(store: Store, flt: MessageFilter, *, page: int = 500,
                 before_id: int | None = None, most: int | None = None) -> Iterator[dict[str, Any]]:
    """Every matching summary, newest first, page by page (export, bulk reprocess)."""
    given = 0
    while True:
        want = page if most is None else min(page, most - given)
        if want <= 0:
            return
        result = search(store, flt, limit=want, before_id=before_id)
        yield from result.messages
        given += len(result.messages)
        if result.next_before_id is None:
            return
        before_id = result.next_before_id


# -- one message in full ---------------------------------------------------------------------


def payload(data: bytes) -> dict[str, Any]:
    """A stored payload for JSON: its text, and base64 too when it is not valid UTF-8."""
    try:
        return {"size": len(data), "text": data.decode("utf-8")}
    except UnicodeDecodeError:
        return {"size": len(data), "text": data.decode("latin-1"),
                "base64": base64.b64encode(data).decode("ascii"), "encoding": "unknown"}


def message_detail(store: Store, message_id: int) -> dict[str, Any] | None:
    """Everything about one message: metadata, contents, deliveries and its timeline.

    Per destination: the payload queued for it (`encoded`, which is what the queue sends),
    the responses it answered (ACK or HTTP body) and the delivery's state.
    """
    with store.engine.connect() as conn:
        row = conn.execute(select(messages).where(messages.c.id == message_id)).first()
        if row is None:
            return None
        stored = conn.execute(
            select(contents.c.kind, contents.c.destination, contents.c.created_at,
                   contents.c.data)
            .where(contents.c.message_id == message_id).order_by(contents.c.id)).all()
        delivered = conn.execute(
            select(deliveries).where(deliveries.c.message_id == message_id)
            .order_by(deliveries.c.id)).all()
        events = conn.execute(
            select(audit_events.c.id, audit_events.c.at, audit_events.c.actor,
                   audit_events.c.action, audit_events.c.detail)
            .where(audit_events.c.message_id == message_id)
            .order_by(audit_events.c.id)).all()
    detail: dict[str, Any] = {"message": dict(row._mapping), "contents": {},
                              "destinations": {}, "timeline": []}
    for d in delivered:
        detail["destinations"][d.destination] = {
            "status": d.status, "attempts": d.attempts, "lane_key": d.lane_key,
            "held": bool(d.held), "last_error": d.last_error,
            "first_attempt_at": d.first_attempt_at, "next_attempt_at": d.next_attempt_at,
            "updated_at": d.updated_at, "contents": {}}
    for kind, destination, created_at, data in stored:
        item = {"created_at": created_at, **payload(bytes(data))}
        if destination is None:
            detail["contents"].setdefault(kind, []).append(item)
        else:
            place = detail["destinations"].setdefault(destination, {"contents": {}})
            place["contents"].setdefault(kind, []).append(item)
    for ev in events:
        try:
            extra = json.loads(ev.detail)
        except ValueError:
            extra = {"unreadable": True}
        detail["timeline"].append({"event_id": ev.id, "at": ev.at, "actor": ev.actor,
                                   "action": ev.action, "detail": extra})
    detail["contents_pruned"] = not stored
    return detail


def for_reprocess(flt: MessageFilter) -> MessageFilter:
    """A bulk reprocess by filter only ever touches ERROR messages."""
    if flt.statuses and flt.statuses != (Status.ERROR.value,):
        raise ValueError("a bulk reprocess by filter takes only status ERROR")
    return replace(flt, statuses=(Status.ERROR.value,))



def raw_contents(store: Store, message_ids: Sequence[int]) -> dict[int, bytes]:
    """The raw payload of each message that still has one (pruned ones are left out)."""
    if not message_ids:
        return {}
    with store.engine.connect() as conn:
        rows = conn.execute(
            select(contents.c.message_id, contents.c.data)
            .where(contents.c.message_id.in_(list(message_ids)),
                   contents.c.kind == ContentKind.RAW.value)
            .order_by(contents.c.id))
        found: dict[int, bytes] = {}
        for mid, data in rows:
            found.setdefault(mid, bytes(data))
        return found
