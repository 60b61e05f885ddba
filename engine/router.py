"""Moves committed messages on from RECEIVED, through their channel's pipeline.

Routing runs after the ACK, never in front of it. The channel's pipeline (filter,
transformer, destinations) decides: QUEUED with one delivery row per destination, or
FILTERED with its reason, or ERROR with the failing step's traceback on the record
(promise 2). A channel without a deployed pipeline leaves the message FILTERED as
"channel has no destinations", visible and countable. Messages a crash left RECEIVED are
routed again by `recover` at start.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from channels.pipeline import NO_DESTINATIONS, ChannelPipeline, Decision, Verdict
from engine.store.deliveries import NewDelivery, Routing
from engine.store.status import ContentKind, Status
from engine.store.store import Store

log = Logger()

PipelineLookup = Callable[[str], "ChannelPipeline | None"]
Routed = Callable[[Sequence[Routing]], None]
_STATUS = {Verdict.QUEUED: Status.QUEUED, Verdict.FILTERED: Status.FILTERED,
           Verdict.ERROR: Status.ERROR}


def routing_for(message_id: int, channel: str, decision: Decision) -> Routing:
    """The store's record of one pipeline decision."""
    deliveries = [NewDelivery(o.destination, o.payload, o.lane_key, _STATUS[o.verdict],
                              o.reason) for o in decision.outputs]
    return Routing(message_id, channel, _STATUS[decision.verdict], decision.reason,
                   decision.error, deliveries)


class Router:
    """Runs pipelines for committed messages and records the decisions in batches."""

    def __init__(
        self,
        route: Callable[[Sequence[Routing]], defer.Deferred[None]],
        clock: Any,
        pipelines: PipelineLookup | None = None,
        routed: Routed | None = None,
    ) -> None:
        self._record = route
        self._clock = clock
        self._pipelines = pipelines or (lambda _: None)
        self._routed = routed
        self._pending: list[tuple[int, str, bytes]] = []
        self._scheduled = False
        self._inflight: set[defer.Deferred[None]] = set()
        self.routed = 0

    def route(self, message_id: int, channel: str, raw: bytes) -> None:
        """Accept one committed message for routing in the next batch."""
        self._pending.append((message_id, channel, raw))
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self._flush)

    def decide(self, message_id: int, channel: str, raw: bytes) -> Routing:
        """Run the channel's pipeline for one message."""
        pipeline = self._pipelines(channel)
        if pipeline is None:
            return Routing(message_id, channel, Status.FILTERED, NO_DESTINATIONS)
        try:
            decision = pipeline.run(raw)
        except Exception as error:  # a defect must not leave a batch stuck in RECEIVED
            kind = type(error).__name__
            log.error("message {id} of channel {channel}: pipeline failed: {kind}",
                      id=message_id, channel=channel, kind=kind)
            decision = Decision(Verdict.ERROR, f"pipeline failed: {kind}",
                                f"pipeline failed: {kind}")
        if decision.verdict is Verdict.ERROR:
            log.warn("message {id} of channel {channel} not routed: {reason}",
                     id=message_id, channel=channel, reason=decision.reason)
        return routing_for(message_id, channel, decision)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending, []
        if not batch:
            return
        routings = [self.decide(mid, ch, raw) for mid, ch, raw in batch]
        d = self._record(routings)
        self._inflight.add(d)

        def done(result: Any) -> Any:
            self._inflight.discard(d)
            self.routed += len(batch)
            return result

        d.addBoth(done)
        if self._routed is not None:
            d.addCallback(lambda _: self._routed(routings))  # type: ignore[misc]
        d.addErrback(lambda f: log.error(
            "routing of {n} messages not recorded ({kind}); they stay RECEIVED and are "
            "routed again at the next start", n=len(batch), kind=f.type.__name__))

    def drain(self) -> defer.Deferred[Any]:
        """Fires once every message handed over so far has its routing committed."""
        if self._pending:
            self._flush()
        return defer.DeferredList(list(self._inflight))

    def recover(self, store: Store, batch: int = 1000) -> int:
        """Route every message an earlier run left RECEIVED; returns the count."""
        after, count = 0, 0
        while rows := store.pending_routing(limit=batch, after_id=after):
            for mid, channel in rows:
                raw = store.content(mid, ContentKind.RAW) or b""
                self.route(mid, channel, raw)
            count += len(rows)
            after = rows[-1][0]
        if count:
            log.info("recovered {count} messages stored but not yet routed", count=count)
        return count
