"""End-to-end confirmation for `response: after_delivery` channels.

Such a sender gets its ACK only when every destination has delivered the message (or
declined it by filter), or AE when one dead-lettered it or the channel's timeout passed
first. The watch learns what to wait for from routing and hears each delivery's final
state from the queues.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from engine.store.deliveries import Routing
from engine.store.status import Status


@dataclass(slots=True)
class _Waiter:
    done: defer.Deferred[bool]
    timer: Any
    pending: set[str] | None = None
    finished: set[str] = field(default_factory=set)


class DeliveryWatch:
    """Deferreds that fire True when a message is delivered everywhere, else False."""

    def __init__(self, clock: Any) -> None:
        self._clock = clock
        self._waiters: dict[int, _Waiter] = {}

    def wait(self, message_id: int, timeout: float) -> defer.Deferred[bool]:
        """Fires True once delivered (or filtered), False on dead letter or timeout."""
        done: defer.Deferred[bool] = defer.Deferred()
        timer = self._clock.callLater(timeout, self._settle, message_id, False)
        self._waiters[message_id] = _Waiter(done, timer)
        return done

    def routed(self, routings: Sequence[Routing]) -> None:
        """Routing committed: a waiter now knows which destinations to wait for."""
        if not self._waiters:
            return
        for r in routings:
            waiter = self._waiters.get(r.message_id)
            if waiter is None:
                continue
            if r.status is not Status.QUEUED:
                self._settle(r.message_id, r.status is Status.FILTERED)
                continue
            waiter.pending = {d.destination for d in r.deliveries
                              if d.status is Status.QUEUED} - waiter.finished
            if not waiter.pending:
                self._settle(r.message_id, True)

    def delivery_final(self, message_id: int, destination: str, status: Status) -> None:
        """A queue recorded SENT or ERROR for one destination of a message."""
        waiter = self._waiters.get(message_id)
        if waiter is None:
            return
        if status is not Status.SENT:
            self._settle(message_id, False)
            return
        waiter.finished.add(destination)
        if waiter.pending is not None:
            waiter.pending.discard(destination)
            if not waiter.pending:
                self._settle(message_id, True)

    def _settle(self, message_id: int, delivered: bool) -> None:
        waiter = self._waiters.pop(message_id, None)
        if waiter is None:
            return
        if waiter.timer.active():
            waiter.timer.cancel()
        waiter.done.callback(delivered)
