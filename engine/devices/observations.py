"""The ledger of readings de-duplicating channels received: which message carried each first.

`claim` runs on the store writer's thread (between group commits) in a transaction of its
own. Every reading's key is inserted unless a live row has it; then the owners are read
back. On PostgreSQL a second node inserting the same key waits for the first node's
transaction and then finds its row, so a reading belongs to exactly one message however
many nodes receive it. A message claiming again (routed again after a crash or a
reprocess) finds its own id and keeps its readings. Keys are taken in sorted order so two
transactions never wait on each other crosswise.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.device_tables import pcd_observations

Claims = Sequence[tuple[int, Sequence[str], float]]
_CHUNK = 500


class ObservationLedger:
    """Readings already received, by key, in the store (see the module docstring)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        dialect = engine.dialect.name
        if dialect not in ("sqlite", "postgresql"):
            raise ValueError(f"de-duplication needs SQLite or PostgreSQL, not {dialect}")
        self._insert = postgresql.insert if dialect == "postgresql" else sqlite.insert

    def claim(self, claims: Claims, now_us: int) -> dict[int, dict[str, int]]:
        """Per message id, the keys another message carried first, with that message's id.

        ``claims`` are (message id, keys, window seconds); the first message of the batch
        to name a key owns it.
        """
        first: dict[str, tuple[int, int]] = {}
        for message_id, keys, window in claims:
            expires = now_us + int(window * 1_000_000)
            for key in keys:
                first.setdefault(key, (message_id, expires))
        if not first:
            return {}
        owners: dict[str, int] = {}
        t = pcd_observations
        ordered = sorted(first)
        with self._engine.begin() as conn:
            for start in range(0, len(ordered), _CHUNK):
                chunk = ordered[start:start + _CHUNK]
                rows = [{"key": k, "message_id": first[k][0], "seen_at": now_us,
                         "expires_at": first[k][1]} for k in chunk]
                stmt: Any = self._insert(t).values(rows)
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.c.key],
                    set_={"message_id": stmt.excluded.message_id,
                          "seen_at": stmt.excluded.seen_at,
                          "expires_at": stmt.excluded.expires_at},
                    where=t.c.expires_at < now_us)
                conn.execute(stmt)
                found = conn.execute(select(t.c.key, t.c.message_id).where(t.c.key.in_(chunk)))
                owners.update({row.key: row.message_id for row in found})
        seen: dict[int, dict[str, int]] = {}
        for message_id, keys, _ in claims:
            earlier = {k: owners[k] for k in keys if owners.get(k, message_id) != message_id}
            if earlier:
                seen[message_id] = earlier
        return seen

    def expire(self, now_us: int) -> int:
        """Forget readings past their window; returns how many rows went."""
        with self._engine.begin() as conn:
            result = conn.execute(delete(pcd_observations)
                                  .where(pcd_observations.c.expires_at < now_us))
            return int(result.rowcount or 0)

    def count(self) -> int:
        """Rows held (for tests and operators)."""
        from sqlalchemy import func

        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(pcd_observations))
                       .scalar() or 0)
