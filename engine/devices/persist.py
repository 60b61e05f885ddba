"""Tracked devices in the store (``pcd_devices``), so silence survives a restart."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Engine, select
from sqlalchemy.dialects import postgresql, sqlite

from engine.store.device_tables import pcd_devices


class DeviceRows:
    """Save changed devices (upsert) and load them all back."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        postgres = engine.dialect.name == "postgresql"
        self._insert = postgresql.insert if postgres else sqlite.insert

    def save(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert or update each row (one transaction)."""
        if not rows:
            return
        t = pcd_devices
        with self._engine.begin() as conn:
            for start in range(0, len(rows), 500):
                stmt: Any = self._insert(t).values(list(rows[start:start + 500]))
                stmt = stmt.on_conflict_do_update(
                    index_elements=[t.c.channel, t.c.device],
                    set_={name: stmt.excluded[name] for name in
                          ("unit", "first_seen", "last_seen", "state", "silent_since",
                           "arrivals", "gaps")})
                conn.execute(stmt)

    def load(self) -> list[dict[str, Any]]:
        """Every saved device."""
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(select(pcd_devices))]
