"""Moves committed messages on from RECEIVED.

Routing runs after the ACK, never in front of it. A channel's destinations (and their
filters and transformers) decide where a message goes; a channel that has none leaves the
message FILTERED with that reason, so it stays visible and countable (promise 2).
Messages a crash left RECEIVED are picked up again by `recover` at start.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from engine.store.status import Status
from engine.store.store import Store, Transition

log = Logger()

NO_DESTINATIONS = "channel has no destinations"


class Router:
    """Collects committed messages and turns them into transitions in batches."""

    def __init__(
        self,
        transition: Callable[[Sequence[Transition]], defer.Deferred[None]],
        clock: Any,
        destinations: Mapping[str, Sequence[str]] | None = None,
    ) -> None:
        self._transition = transition
        self._clock = clock
        self._destinations = destinations or {}
        self._pending: list[tuple[int, str]] = []
        self._scheduled = False
        self._inflight: set[defer.Deferred[None]] = set()
        self.routed = 0

    def route(self, message_id: int, channel: str) -> None:
        """Accept one committed message for routing in the next batch."""
        self._pending.append((message_id, channel))
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self._flush)

    def _decide(self, message_id: int, channel: str) -> Transition:
        if not self._destinations.get(channel):
            return Transition(message_id, channel, Status.FILTERED, NO_DESTINATIONS)
        return Transition(message_id, channel, Status.QUEUED)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        d = self._transition([self._decide(mid, ch) for mid, ch in batch])
        self._inflight.add(d)

        def done(result: Any) -> Any:
            self._inflight.discard(d)
            self.routed += len(batch)
            return result

        d.addBoth(done)
        d.addErrback(lambda f: log.failure(
            "routing of {n} messages not recorded; they stay RECEIVED and are retried at "
            "the next start", f, n=len(batch)))

    def drain(self) -> defer.Deferred[Any]:
        """Fires once every message handed over so far has its transition committed."""
        if self._pending:
            self._flush()
        return defer.DeferredList(list(self._inflight))

    def recover(self, store: Store, batch: int = 1000) -> int:
        """Hand every message left RECEIVED by an earlier run to routing; returns the count."""
        after, count = 0, 0
        while rows := store.pending_routing(limit=batch, after_id=after):
            for mid, channel in rows:
                self.route(mid, channel)
            count += len(rows)
            after = rows[-1][0]
        if count:
            log.info("recovered {count} messages stored but not yet routed", count=count)
        return count
