"""Pruning message contents past their channel's age, in small batches.

What goes: every `contents` row (raw, outgoing payloads, responses) of a message received
before its channel's cutoff, once nothing is owed on it: SENT, FILTERED, or rejected at
the door. What stays: the `messages` row (metadata, status, ids), its deliveries and the
whole audit chain; and every content of a message still RECEIVED or QUEUED, or of a dead
letter (ERROR after acceptance), which reprocess needs.

The walk follows `contents` by message id, so a run reads what is still stored, not the
whole history; it stops at the first batch younger than every cutoff.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import delete, func, select

from engine.store.schema import contents, messages
from engine.store.status import Status
from engine.store.store import POSITIVE_ACKS, Store

DAY_US = 86_400 * 1_000_000


@dataclass(frozen=True, slots=True)
class Policy:
    """How many days each channel keeps contents; `default_days` for all others."""

    default_days: float | None = None
    channel_days: Mapping[str, float | None] = field(default_factory=dict)

    def days(self, channel: str) -> float | None:
        """Days this channel keeps contents (None: forever)."""
        own = self.channel_days.get(channel)
        return own if own is not None else self.default_days

    def cutoff(self, channel: str, now_us: int) -> int | None:
        """Contents of messages received before this instant may go (None: never)."""
        days = self.days(channel)
        return None if days is None else now_us - int(days * DAY_US)

    def latest_cutoff(self, now_us: int) -> int | None:
        """The youngest cutoff of any channel: nothing younger is ever pruned."""
        days = [d for d in (self.default_days, *self.channel_days.values()) if d is not None]
        return None if not days else now_us - int(min(days) * DAY_US)


@dataclass(slots=True)
class Tally:
    """What a run removed (or would remove) per channel."""

    channels: dict[str, dict[str, int]] = field(default_factory=dict)

    def add(self, channel: str, messages_: int, rows: int, size: int) -> None:
        counts = self.channels.setdefault(channel, {"messages": 0, "contents": 0, "bytes": 0})
        counts["messages"] += messages_
        counts["contents"] += rows
        counts["bytes"] += size

    def merge(self, other: Tally) -> None:
        for channel, c in other.channels.items():
            self.add(channel, c["messages"], c["contents"], c["bytes"])

    @property
    def messages(self) -> int:
        return sum(c["messages"] for c in self.channels.values())


@dataclass(slots=True)
class Step:
    """One batch of the walk: how far it got, whether it is finished, what it removed."""

    after_id: int
    done: bool
    tally: Tally


def audit_detail(policy: Policy, tally: Tally) -> dict[str, Any]:
    """The `retention.pruned` event's detail: ages and counts per channel, never content."""
    return {"default_days": policy.default_days,
            "days": {name: policy.days(name)
                     for name in sorted(set(policy.channel_days) | set(tally.channels))},
            "channels": tally.channels, "messages": tally.messages}


def prunable(status: str, ack_code: str) -> bool:
    """True when nothing is owed on a message and reprocess will never need its content."""
    if status in (Status.SENT.value, Status.FILTERED.value):
        return True
    return status == Status.ERROR.value and ack_code not in POSITIVE_ACKS


def prune_step(store: Store, policy: Policy, now_us: int, after_id: int = 0, *,
               batch: int = 500, dry_run: bool = False) -> Step:
    """Examine the next `batch` messages that still have contents; delete what may go.

    One transaction per call. Run it on the writer's thread (or, for a dry run, anywhere).
    """
    latest = policy.latest_cutoff(now_us)
    tally = Tally()
    if latest is None:
        return Step(after_id, True, tally)
    with store.engine.begin() as conn:
        ids = conn.execute(
            select(contents.c.message_id).where(contents.c.message_id > after_id)
            .group_by(contents.c.message_id).order_by(contents.c.message_id)
            .limit(batch)).scalars().all()
        if not ids:
            return Step(after_id, True, tally)
        facts = conn.execute(
            select(messages.c.id, messages.c.channel, messages.c.received_at,
                   messages.c.status, messages.c.ack_code)
            .where(messages.c.id.in_(ids))).all()
        chosen: dict[int, str] = {}
        for mid, channel, received_at, status, ack in facts:
            cutoff = policy.cutoff(channel, now_us)
            if cutoff is not None and received_at < cutoff and prunable(status, ack):
                chosen[mid] = channel
        if chosen:
            sizes = conn.execute(
                select(contents.c.message_id, func.count(), func.sum(func.length(
                    contents.c.data)))
                .where(contents.c.message_id.in_(list(chosen)))
                .group_by(contents.c.message_id)).all()
            for mid, rows, size in sizes:
                tally.add(chosen[mid], 1, rows, int(size or 0))
            if not dry_run:
                conn.execute(delete(contents).where(contents.c.message_id.in_(list(chosen))))
        done = all(received_at >= latest for _, _, received_at, _, _ in facts)
    return Step(max(ids), done, tally)


def reclaim_space(store: Store, pages: int = 2000) -> int:
    """Give freed pages back to the file system where the store can (SQLite, incremental
    auto-vacuum); returns the pages released. PostgreSQL's autovacuum reuses the space."""
    if store.engine.dialect.name != "sqlite":
        return 0
    with store.engine.connect() as conn:
        raw: Any = conn.connection.dbapi_connection
        if raw.execute("PRAGMA auto_vacuum").fetchone()[0] != 2:
            return 0
        before = raw.execute("PRAGMA freelist_count").fetchone()[0]
        # executescript steps the pragma to its end; execute() would free one page only.
        raw.executescript(f"PRAGMA incremental_vacuum({int(pages)});")
        after = raw.execute("PRAGMA freelist_count").fetchone()[0]
        conn.commit()
        return int(before - after)
