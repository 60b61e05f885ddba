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
    """The exact bytes an event's hash covers; stable across backends and versions."""
    return json.dumps(
        [at, actor, action, message_id, channel, detail_json],
        separators=(",", ":"),
        ensure_ascii=True,
    ).encode("ascii")


def detail_json(detail: dict[str, Any]) -> str:
    """Serialise an event's detail the one way the chain expects."""
    return json.dumps(detail, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def seal(prev_hash: str, canonical: bytes) -> str:
    """Hash of one event given the hash of the event before it."""
    return hashlib.sha256(prev_hash.encode("ascii") + canonical).hexdigest()


class AuditChain:
    """Seals events in order; owned by the single writer so the chain has one tail."""

    def __init__(self, last_hash: str = GENESIS_HASH) -> None:
        self.last_hash = last_hash

    def rows(self, events: Iterable[AuditEvent]) -> list[dict[str, Any]]:
        """Turn events into `audit_events` rows, advancing the chain's tail."""
        out = []
        prev = self.last_hash
        for ev in events:
            dj = detail_json(ev.detail)
            digest = seal(prev, canonical_form(ev.at, ev.actor, ev.action, ev.message_id,
                                               ev.channel, dj))
            out.append({
                "at": ev.at,
                "actor": ev.actor,
                "action": ev.action,
                "message_id": ev.message_id,
                "channel": ev.channel,
                "detail": dj,
                "prev_hash": prev,
                "hash": digest,
            })
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
