"""The audit chain (promise 5): append-only events, each sealed with the previous hash.

An event's hash is SHA-256 over the previous event's hash and the event's canonical form,
so editing, deleting or reordering any stored row breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

GENESIS_HASH = "0" * 64
ROW_COLUMNS = ("at", "actor", "action", "message_id", "channel", "detail", "prev_hash", "hash")


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """Who did what to which message, and when; `detail` carries ids, never content."""

    at: int
    actor: str
    action: str
    message_id: int | None = None
    channel: str | None = None
    detail: dict[str, Any] = field(default_factory=dict)


def canonical_form(
    at: int,
    actor: str,
    action: str,
    message_id: int | None,
    channel: str | None,
    detail_json: str,
) -> bytes:
    """The exact bytes an event's hash covers: length-prefixed fields, so unambiguous.

    `detail_json` is hashed as stored, so its serialisation never has to be repeated
    identically; None and '' are told apart by the type tag.
    """
    return _canonical_text(at, actor, action, message_id, channel, detail_json).encode("utf-8")


def _canonical_text(
    at: int,
    actor: str,
    action: str,
    message_id: int | None,
    channel: str | None,
    detail_json: str,
) -> str:
    """`canonical_form` before encoding, in one f-string: the writer seals one per event.

    The form is `<tags>|<len>:<text>|…` over at, actor, action, message_id, channel and
    detail, where a None field is the empty text and lengths count characters.
    """
    at_s = "" if at is None else str(at)
    actor_s = "" if actor is None else str(actor)
    action_s = "" if action is None else str(action)
    detail_s = "" if detail_json is None else str(detail_json)
    if message_id is None:
        id_tag, id_s = "n", ""
    else:
        id_tag, id_s = "v", str(message_id)
    if channel is None:
        channel_tag, channel_s = "n", ""
    else:
        channel_tag, channel_s = "v", str(channel)
    return (f"{id_tag}{channel_tag}|{len(at_s)}:{at_s}|{len(actor_s)}:{actor_s}|"
            f"{len(action_s)}:{action_s}|{len(id_s)}:{id_s}|{len(channel_s)}:{channel_s}|"
            f"{len(detail_s)}:{detail_s}")


json_text = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]
"""A string as JSON exactly as `detail_json` writes it (ASCII, escaped, quoted)."""


def detail_json(detail: dict[str, Any]) -> str:
    """Serialise an event's detail compactly (flat str/int/None values take a fast path)."""
    parts = []
    for key, value in detail.items():
        if isinstance(value, str):
            parts.append(f"{json_text(key)}:{json_text(value)}")
        elif value is None:
            parts.append(f"{json_text(key)}:null")
        elif type(value) is int:
            parts.append(f"{json_text(key)}:{value}")
        else:
            return json.dumps(detail, separators=(",", ":"), ensure_ascii=True)
    return "{" + ",".join(parts) + "}"


def seal(prev_hash: str, canonical: bytes) -> str:
    """Hash of one event given the hash of the event before it."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


Entry = tuple[int, str, str, int | None, str | None, str]
"""An event not sealed yet: at, actor, action, message_id, channel and its detail JSON."""


class AuditChain:
    """Seals events in order; owned by the single writer so the chain has one tail."""

    def __init__(self, last_hash: str = GENESIS_HASH) -> None:
        self.last_hash = last_hash

    def rows(self, events: Iterable[AuditEvent]) -> list[tuple[Any, ...]]:
        """Turn events into `audit_events` rows in `ROW_COLUMNS` order, advancing the tail."""
        return self.seal_entries([(ev.at, ev.actor, ev.action, ev.message_id, ev.channel,
                                   detail_json(ev.detail)) for ev in events])

    def seal_entries(self, entries: Iterable[Entry]) -> list[tuple[Any, ...]]:
        """`rows` for events whose detail is serialised already (the writer's own events).

        Each hash is `seal(prev, canonical_form(…))`, computed from one string: the tail
        is checked to be ASCII once, as `seal` would, and every later one is a hex digest.
        """
        out = []
        prev = self.last_hash
        prev.encode("ascii")
        sha256 = hashlib.sha256
        for at, actor, action, message_id, channel, detail in entries:
            text = _canonical_text(at, actor, action, message_id, channel, detail)
            digest = sha256(f"{prev}{text}".encode()).hexdigest()
            out.append((at, actor, action, message_id, channel, detail, prev, digest))
            prev = digest
        self.last_hash = prev
        return out


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first stored event whose hash or link does not match the chain."""

    event_id: int
    reason: str
    kind: str = "edited"
    """`edited`, `removed` or `reordered`: what most likely happened at `event_id`."""
    at: int | None = None
    """The time the named event claims (microseconds), as stored."""
    action: str = ""
    """The action the named event claims, as stored."""


Locate = Callable[[str], "int | None"]
"""Finds the id of the stored event with a given hash (None when there is none)."""


def verify_rows(rows: Iterable[Any], locate: Locate | None = None
                ) -> tuple[int, ChainBreak | None]:
    """Walk stored rows in id order; return how many were checked and the first break.

    An event whose own hash does not match its content was edited. An intact event whose
    link does not match the event before it was moved or follows a gap: `locate` (a lookup
    of a hash anywhere in the table) tells a reordering (its predecessor is stored
    elsewhere) from a removal (an id gap before it). With neither, the event before it was
    edited and resealed with a new hash. Removing the newest events leaves no trace in
    the chain itself.
    """
    prev = GENESIS_HASH
    before: Any = None
    checked = 0
    for row in rows:
        expected = seal(row.prev_hash, canonical_form(row.at, row.actor, row.action,
                                                      row.message_id, row.channel, row.detail))
        if row.hash != expected:
            return checked, _break(row, "edited", "its content does not match its hash")
        if row.prev_hash != prev:
            broken = _broken_link(row, before, locate)
            return checked - (broken.event_id != row.id), broken
        prev = row.hash
        before = row
        checked += 1
    return checked, None


def _break(row: Any, kind: str, reason: str) -> ChainBreak:
    return ChainBreak(row.id, f"{kind}: {reason}", kind, row.at, row.action)


def _broken_link(row: Any, before: Any, locate: Locate | None) -> ChainBreak:
    """An intact event that does not follow the one stored before it: why not."""
    elsewhere = locate(row.prev_hash) if locate is not None else None
    if elsewhere is not None:
        return _break(row, "reordered", f"it follows event {elsewhere} in the chain, which is "
                                         "stored elsewhere")
    first_missing = before.id + 1 if before is not None else 1
    if row.id > first_missing:
        gap = (f"event {first_missing}" if row.id == first_missing + 1
               else f"events {first_missing} to {row.id - 1}")
        return _break(row, "removed", f"{gap} before it were removed"
                      if row.id > first_missing + 1 else f"{gap} before it was removed")
    if before is None:
        return _break(row, "removed", "the events before it were removed")
    return _break(before, "edited", "it was changed and its hash recomputed: the event "
                                    f"after it (id {row.id}) no longer links to it")
