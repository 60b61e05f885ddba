"""End-to-end confirmation for `response: after_delivery` channels.

Such a sender gets its ACK only when every destination has delivered the message (or
declined it by filter), or AE when one dead-lettered it or the channel's timeout passed
first. The watch learns what to wait for from routing and hears each delivery's final
state from the queues.

On a shared store another node may hold a message's lane and deliver it; its queue tells
only its own node. So a node there also reads the final states of the messages it awaits
from the store every `FOLLOW_SECONDS` (`follow_store`), and its sender hears AA/CA instead
of an AE at the timeout for a message that was delivered.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.store.deliveries import Routing
from engine.store.status import Status

log = Logger()

FOLLOW_SECONDS = 0.5
"""How often a node on a shared store reads the final states of the messages it awaits."""

FinalStates = Callable[[list[int]], defer.Deferred[Sequence[tuple[int, str, str]]]]
"""Message ids → (message id, destination, SENT or ERROR) of their settled deliveries."""


@dataclass(slots=True)
class _Waiter:
    done: defer.Deferred[bool]
    timer: Any
    pending: set[str] | None = None
    finished: set[str] = field(default_factory=set)


class DeliveryWatch:
    """Deferreds that fire True when a message is delivered everywhere, else False."""

    def __init__(self, clock: Any, *, follow_seconds: float = FOLLOW_SECONDS) -> None:
        self._clock = clock
        self._waiters: dict[int, _Waiter] = {}
        self._final_states: FinalStates | None = None
        self._follow_seconds = follow_seconds
        self._follow_call: Any = None
        self._reading = False
        self._stopped = False

    def follow_store(self, final_states: FinalStates) -> None:
        """Also read awaited messages' outcomes from a store other nodes deliver from."""
        self._final_states = final_states
        self._follow_later()

    def stop(self) -> None:
        """No more store reads (the engine is stopping); waiters keep their timers."""
        self._stopped = True
        if self._follow_call is not None and self._follow_call.active():
            self._follow_call.cancel()
        self._follow_call = None

    def wait(self, message_id: int, timeout: float) -> defer.Deferred[bool]:
        """Fires True once delivered (or filtered), False on dead letter or timeout."""
        done: defer.Deferred[bool] = defer.Deferred()
        timer = self._clock.callLater(timeout, self._settle, message_id, False)
        self._waiters[message_id] = _Waiter(done, timer)
        self._follow_later()
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

    # -- following a shared store ------------------------------------------------------------

    def _follow_later(self) -> None:
        if (self._final_states is None or self._stopped or self._reading
                or self._follow_call is not None or not self._waiters):
            return
        self._follow_call = self._clock.callLater(self._follow_seconds, self._follow)

    def _follow(self) -> None:
        self._follow_call = None
        if self._final_states is None or not self._waiters:
            return
        self._reading = True
        d = defer.maybeDeferred(self._final_states, sorted(self._waiters))
        d.addCallbacks(self._heard, self._not_heard)
        d.addBoth(self._read_done)

    def _heard(self, states: Sequence[tuple[int, str, str]]) -> None:
        for message_id, destination, status in states:
            self.delivery_final(message_id, destination, Status(status))

    def _not_heard(self, failure: Failure) -> None:
        # Tried again at the next tick; the timeout still answers AE if it never works.
        log.warn("could not read the outcomes of awaited messages: {kind}",
                 kind=failure.type.__name__)

    def _read_done(self, _: Any) -> None:
        self._reading = False
        self._follow_later()
