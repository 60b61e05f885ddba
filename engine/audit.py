"""The audit chain (promise 5): append-only events, each sealed with the previous hash.

An event's hash is SHA-256 over the previous event's hash and the event's canonical form,
so editing, deleting or reordering any stored row breaks every hash after it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
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


def _part(value: str | int | None) -> str:
    text = "" if value is None else str(value)
    return f"{len(text)}:{text}"


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
    tags = "".join("n" if v is None else "v" for v in (message_id, channel))
    return "|".join((tags, _part(at), _part(actor), _part(action), _part(message_id),
                     _part(channel), _part(detail_json))).encode("utf-8")


_encode = json.encoder.encode_basestring_ascii  # type: ignore[attr-defined]


def detail_json(detail: dict[str, Any]) -> str:
    """Serialise an event's detail compactly (flat str/int/None values take a fast path)."""
    parts = []
    for key, value in detail.items():
        if isinstance(value, str):
            parts.append(f"{_encode(key)}:{_encode(value)}")
        elif value is None:
            parts.append(f"{_encode(key)}:null")
        elif type(value) is int:
            parts.append(f"{_encode(key)}:{value}")
        else:
            return json.dumps(detail, separators=(",", ":"), ensure_ascii=True)
    return "{" + ",".join(parts) + "}"


def seal(prev_hash: str, canonical: bytes) -> str:
    """Hash of one event given the hash of the event before it."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


class AuditChain:
    """Seals events in order; owned by the single writer so the chain has one tail."""

    def __init__(self, last_hash: str = GENESIS_HASH) -> None:
        self.last_hash = last_hash

    def rows(self, events: Iterable[AuditEvent]) -> list[tuple[Any, ...]]:
        """Turn events into `audit_events` rows in `ROW_COLUMNS` order, advancing the tail."""
        out = []
        prev = self.last_hash
        for ev in events:
            dj = detail_json(ev.detail)
            digest = seal(prev, canonical_form(ev.at, ev.actor, ev.action, ev.message_id,
                                               ev.channel, dj))
            out.append((ev.at, ev.actor, ev.action, ev.message_id, ev.channel, dj, prev,
                        digest))
            prev = digest
        self.last_hash = prev
        return out


@dataclass(frozen=True, slots=True)
class ChainBreak:
    """The first stored event whose hash or link does not match the chain."""

    event_id: int
    reason: str


def verify_rows(rows: Iterable[Any]) -> tuple[int, ChainBreak | None]:
    """Walk stored rows in id order; return how many were checked and the first break."""
    prev = GENESIS_HASH
    checked = 0
    for row in rows:
        if row.prev_hash != prev:
            return checked, ChainBreak(row.id, "link to the previous event does not match "
                                               "(an event before it was removed or reordered)")
        expected = seal(prev, canonical_form(row.at, row.actor, row.action, row.message_id,
                                             row.channel, row.detail))
        if row.hash != expected:
            return checked, ChainBreak(row.id, "content does not match its hash (edited)")
        prev = row.hash
        checked += 1
    return checked, None
