"""Which refused credentials go on the audit chain, so a retrying script cannot flood it.

A bearer token that is unknown, revoked or whose owner was removed is worth recording:
it is either a forgotten script still using an old token or someone trying tokens. Such a
caller usually retries, every few seconds, for days. `RefusalDigest` lets the first
refusal of a kind from a peer through at once and then at most one per `interval`, each
carrying how many refusals it stands for.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol


class Clock(Protocol):
    def seconds(self) -> float: ...


@dataclass(slots=True)
class _Seen:
    reported_at: float
    since: int = 0
    """Refusals not yet reported."""


@dataclass(slots=True)
class RefusalDigest:
    """Per key (a peer and what it presented): report the first, then one per interval."""

    clock: Clock
    interval: float = 60.0
    max_keys: int = 10_000
    _keys: dict[str, _Seen] = field(default_factory=dict)

    def refused(self, key: str) -> int:
        """Count one refusal; returns how many an audit row should record now (0: none)."""
        now = self.clock.seconds()
        seen = self._keys.get(key)
        if seen is None:
            if len(self._keys) >= self.max_keys:
                self._forget_old(now)
            self._keys[key] = _Seen(now)
            return 1
        seen.since += 1
        if now - seen.reported_at < self.interval:
            return 0
        count, seen.since, seen.reported_at = seen.since, 0, now
        return count

    def _forget_old(self, now: float) -> None:
        """Drop keys quiet for an interval; an unreported count is lost with them."""
        for key in [k for k, s in self._keys.items() if now - s.reported_at >= self.interval]:
            del self._keys[key]
        if len(self._keys) >= self.max_keys:  # all recent: a flood from many peers
            self._keys.clear()
