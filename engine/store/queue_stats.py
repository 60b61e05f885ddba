"""Queue depth and the oldest waiting message per destination, read in two small queries.

Metrics, the channels list and alert rules all ask the same question; it runs on a reader
thread (never on the reactor), and reads ids and times only, never content.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from engine.store import schema
from engine.store.status import Status
from engine.store.store import Store


@dataclass(frozen=True, slots=True)
class QueueStat:
    """One destination's durable queue: how many deliveries wait, and since when."""

    depth: int
    oldest_received_at_us: int | None
    """Arrival time of the oldest message still QUEUED for it (None when empty)."""

    def oldest_age_seconds(self, now_us: int) -> float:
        """How long the oldest waiting message has waited (0 for an empty queue)."""
        if self.oldest_received_at_us is None:
            return 0.0
        return max(0.0, (now_us - self.oldest_received_at_us) / 1e6)


def queue_stats(store: Store) -> dict[tuple[str, str], QueueStat]:
    """QUEUED deliveries per (channel, destination) with their oldest message's arrival."""
    d, m = schema.deliveries, schema.messages
    with store.engine.connect() as conn:
        groups = conn.execute(
            select(d.c.channel, d.c.destination, func.count(), func.min(d.c.message_id))
            .where(d.c.status == Status.QUEUED.value)
            .group_by(d.c.channel, d.c.destination)).all()
        oldest_ids = {int(g[3]) for g in groups if g[3] is not None}
        arrivals: dict[int, int] = {}
        if oldest_ids:
            rows = conn.execute(select(m.c.id, m.c.received_at)
                                .where(m.c.id.in_(sorted(oldest_ids))))
            arrivals = {int(r[0]): int(r[1]) for r in rows}
    return {(g[0], g[1]): QueueStat(int(g[2]), arrivals.get(int(g[3])) if g[3] else None)
            for g in groups}


def ping(store: Store) -> None:
    """A trivial query: raises if the store cannot answer (readiness)."""
    with store.engine.connect() as conn:
        conn.execute(select(1)).scalar()
