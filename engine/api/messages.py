"""`/api/v1/messages`: search, one message in full, export, and reprocessing failures.

Everything here shows message content or patient ids, so every route needs the operator
role, and every look is on the audit chain before the answer leaves: `message.search`
(the filters, not the results), `message.view`, `message.export`. Reprocess is audited
per message by the store, with the caller as actor.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.api.routing import (
    Answer,
    ApiRequest,
    BadRequest,
    NotFound,
    Param,
    Role,
    Route,
    Streamed,
)
from engine.store.search import (
    MAX_LIMIT,
    MessageFilter,
    for_reprocess,
    message_detail,
    payload,
    raw_contents,
    search,
)

if TYPE_CHECKING:
    from engine.service import EngineService

MAX_REPROCESS = 500
"""Messages one reprocess call takes, by ids or by filter; callers page for more."""
EXPORT_PAGE = 200
FILTER_KEYS = ("channel", "status", "since", "until", "control_id", "patient_id",
               "message_type", "sending_application", "text")

FILTER_PARAMS = (
    Param("channel", "Channel name (exact)"),
    Param("status", "RECEIVED, QUEUED, SENT, FILTERED or ERROR; several separated by commas"),
    Param("since", "Received at or after: ISO 8601 (UTC unless an offset is given) "
                   "or microseconds since the epoch"),
    Param("until", "Received before (same forms as since)"),
    Param("control_id", "MSH-10 (exact)"),
    Param("patient_id", "PID-3 first identifier (exact)"),
    Param("message_type", "ORU matches every ORU; ORU^R01 that trigger event"),
    Param("sending_application", "MSH-3 (exact)"),
    Param("text", "Bytes inside the raw or outgoing content (case-sensitive); looks inside "
                  "at most 20000 messages per page"),
)


def parse_time(value: str, name: str) -> int:
    """ISO 8601 (UTC unless it says otherwise) or integer microseconds → microseconds."""
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise BadRequest(f"{name}: expected ISO 8601 time or microseconds") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1_000_000)


def filter_from(values: Mapping[str, Any]) -> MessageFilter:
    """A search filter from query arguments or a JSON object with the same names."""
    unknown = sorted(set(values) - set(FILTER_KEYS))
    if unknown:
        raise BadRequest(f"unknown filter {unknown[0]!r}; known: {', '.join(FILTER_KEYS)}")

    def text(name: str) -> str | None:
        value = values.get(name)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise BadRequest(f"{name}: expected a string")
        return value

    statuses = tuple(s.strip().upper() for s in (text("status") or "").split(",") if s.strip())
    since, until = text("since"), text("until")
    try:
        return MessageFilter(
            channel=text("channel"), statuses=statuses,
            since_us=parse_time(since, "since") if since else None,
            until_us=parse_time(until, "until") if until else None,
            control_id=text("control_id"), patient_id=text("patient_id"),
            message_type=text("message_type"),
            sending_application=text("sending_application"), text=text("text"))
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc


def query_filter(request: ApiRequest, extra: tuple[str, ...] = ()) -> MessageFilter:
    """The filter named by a request's query string (ignoring paging arguments)."""
    names = {key.decode("utf-8", "replace") for key in request.raw.args}
    return filter_from({n: request.query(n) for n in names if n not in extra})


def int_arg(request: ApiRequest, name: str, default: int | None, *, low: int = 1,
            high: int | None = None) -> int | None:
    """An optional whole-number query argument within bounds."""
    value = request.query(name)
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise BadRequest(f"{name}: expected a whole number") from exc
    if number < low or (high is not None and number > high):
        raise BadRequest(f"{name}: must be between {low} and {high or 'any'}")
    return number


def iso(us: int | None) -> str | None:
    """Microseconds since the epoch as ISO 8601 UTC with milliseconds."""
    if us is None:
        return None
    return datetime.fromtimestamp(us / 1_000_000, UTC).isoformat(timespec="milliseconds")


def summary(row: Mapping[str, Any]) -> dict[str, Any]:
    """A message in a result list: metadata, its error's first line, readable times."""
    out = dict(row)
    out["received"] = iso(row["received_at"])
    if row.get("error"):
        out["error"] = row["error"].splitlines()[0]
    return out


def routes(engine: EngineService) -> list[Route]:
    """Message operations: all of them for operators."""

    def actor(request: ApiRequest) -> str:
        return request.principal.name if request.principal else "admin-api"

    async def audit(request: ApiRequest, action: str, **kwargs: Any) -> None:
        await engine.audit_action(actor(request), action, peer=request.peer, **kwargs)

    async def search_messages(request: ApiRequest) -> Answer:
        assert engine.store is not None
        flt = query_filter(request, ("limit", "before_id"))
        limit = int_arg(request, "limit", 100, high=MAX_LIMIT)
        before_id = int_arg(request, "before_id", None)
        await audit(request, "message.search", detail=flt.described())
        page = await engine._read(search, engine.store, flt, limit=limit, before_id=before_id)
        body: dict[str, Any] = {"messages": [summary(r) for r in page.messages],
                                "next_before_id": page.next_before_id}
        if page.scanned is not None:
            body["scanned"] = page.scanned
        return Answer(200, body)

    async def show(request: ApiRequest) -> Answer:
        assert engine.store is not None
        try:
            message_id = int(request.params["id"])
        except ValueError as exc:
            raise BadRequest("a message id is a whole number") from exc
        detail = await engine._read(message_detail, engine.store, message_id)
        if detail is None:
            raise NotFound(f"message {message_id} does not exist")
        await audit(request, "message.view", message_id=message_id,
                    channel=detail["message"]["channel"])
        detail["message"] = summary(detail["message"]) | {
            "error": detail["message"]["error"]}
        return Answer(200, detail)

    async def export(request: ApiRequest) -> Answer:
        assert engine.store is not None
        store = engine.store
        shape = request.query("format", "jsonl")
        if shape not in ("jsonl", "hl7"):
            raise BadRequest("format: jsonl or hl7")
        flt = query_filter(request, ("format", "limit", "before_id"))
        most = int_arg(request, "limit", None)
        start = int_arg(request, "before_id", None)
        await audit(request, "message.export", detail={**flt.described(), "format": shape})

        async def chunks() -> AsyncIterator[bytes]:
            before, given = start, 0
            while most is None or given < most:
                want = EXPORT_PAGE if most is None else min(EXPORT_PAGE, most - given)
                page = await engine._read(search, store, flt, limit=want, before_id=before)
                raws = await engine._read(raw_contents, store,
                                          [r["id"] for r in page.messages])
                lines = []
                for row in page.messages:
                    raw = raws.get(row["id"])
                    if shape == "hl7":
                        if raw is not None:
                            lines.append(raw + b"\n")
                    else:
                        item = summary(row) | {"raw": None if raw is None else payload(raw)}
                        lines.append(json.dumps(item, ensure_ascii=False).encode() + b"\n")
                if lines:
                    yield b"".join(lines)
                given += len(page.messages)
                if page.next_before_id is None:
                    return
                before = page.next_before_id

        kind = "application/x-ndjson" if shape == "jsonl" else "x-application/hl7-v2+er7"
        return Answer(200, Streamed(chunks()), content_type=kind, headers={
            "content-disposition": f'attachment; filename="messages.{shape}"'})

    async def reprocess(request: ApiRequest) -> Answer:
        assert engine.store is not None
        body = request.json()
        if not isinstance(body, dict) or ("ids" in body) == ("filter" in body):
            raise BadRequest('expected {"ids": [message ids]} or {"filter": {...}}')
        if "ids" in body:
            try:
                ids = [int(i) for i in body["ids"]]
            except (ValueError, TypeError) as exc:
                raise BadRequest('"ids" must be a list of message ids') from exc
            if len(ids) > MAX_REPROCESS:
                raise BadRequest(f"at most {MAX_REPROCESS} ids per call")
            return Answer(200, await engine.reprocess(ids, actor=actor(request)))
        if not isinstance(body["filter"], dict):
            raise BadRequest('"filter" is an object with the search filters')
        try:
            flt = for_reprocess(filter_from(body["filter"]))
            limit = int(body.get("limit", MAX_REPROCESS))
            before_id = None if body.get("before_id") is None else int(body["before_id"])
        except (ValueError, TypeError) as exc:
            raise BadRequest(str(exc)) from exc
        if not 1 <= limit <= MAX_REPROCESS:
            raise BadRequest(f"limit: between 1 and {MAX_REPROCESS}")
        page = await engine._read(search, engine.store, flt, limit=limit, before_id=before_id)
        ids = [r["id"] for r in page.messages]
        await audit(request, "message.reprocess.bulk",
                    detail={**flt.described(), "matched": len(ids)})
        result: dict[str, Any] = await engine.reprocess(ids, actor=actor(request))
        return Answer(200, {**result, "matched": len(ids),
                            "next_before_id": page.next_before_id})

    return [
        Route("GET", "messages", search_messages, Role.OPERATOR,
              "Search messages, newest first (metadata only)",
              params=(*FILTER_PARAMS,
                      Param("limit", f"Page size, 1 to {MAX_LIMIT} (default 100)",
                            type="integer"),
                      Param("before_id", "Next page: the next_before_id of the previous one",
                            type="integer"))),
        Route("GET", "messages/export", export, Role.OPERATOR,
              "Export the messages of a search, streamed: JSON lines with the raw content, "
              "or the raw HL7 messages one after another, each followed by a newline",
              params=(*FILTER_PARAMS,
                      Param("format", "jsonl (default) or hl7"),
                      Param("limit", "At most this many messages", type="integer"),
                      Param("before_id", "Start below this message id", type="integer")),
              produces="application/x-ndjson"),
        Route("POST", "messages/reprocess", reprocess, Role.OPERATOR,
              "Re-queue ERROR messages (or route again those that never reached a queue)",
              body='{"ids": [message ids]} (at most 500), or {"filter": {search filters}, '
                   '"limit": 500, "before_id": N} for ERROR messages matching a search; '
                   "the answer's next_before_id continues a bulk run"),
        Route("GET", "messages/{id}", show, Role.OPERATOR,
              "One message in full: metadata, raw content, per destination the payload, "
              "responses and delivery state, and its audit timeline"),
    ]
