"""One destination's queue at run time: lanes in arrival order, retries, dead letters.

The durable queue is the `deliveries` table; this class reads QUEUED rows from it in id
order, splits them into lanes (one lane unless `lanes:` names a field), and sends the head
of each lane, one at a time, so a retry never lets a later message overtake an earlier
one of the same lane (promise 3). Outcomes go back through the single writer. A message
whose retries are exhausted goes to ERROR; with `on_exhausted: hold` its lane stops
behind it until an operator reprocesses it, with `skip` the lane moves on.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from channels.destinations.base import DeliveryResult, Destination, Envelope, Verdict
from engine.delivery.retry import RetryPolicy
from engine.store.deliveries import DeliveryOutcome, QueuedDelivery
from engine.store.status import Status

log = Logger()

Fetch = Callable[[int, int], "defer.Deferred[tuple[list[QueuedDelivery], set[str]]]"]
Record = Callable[[Sequence[DeliveryOutcome]], "defer.Deferred[None]"]
FinalHook = Callable[[int, str, Status], None]


class QueueMonitor(Protocol):
    """What a queue tells metrics and alerts: attempts as they end, final outcomes once
    committed. Ids and times only."""

    def attempted(self, ok: bool, now: float) -> None: ...

    def finished(self, status: Status, received_at_us: int, decided_at_us: int) -> None: ...


class OnExhausted(StrEnum):
    """What a lane does when its head message has used up its retries."""

    HOLD = "hold"
    SKIP = "skip"


@dataclass(slots=True)
class Lane:
    """Deliveries of one lane key, oldest first; only the head is ever in flight."""

    key: str
    waiting: list[QueuedDelivery] = field(default_factory=list)
    busy: bool = False
    timer: Any = None
    awaiting_rescan: bool = False
    """Shared store: a lane new to this node waits for a read from the start, which brings
    any older rows of it that were skipped while another node held the lane."""

    def add(self, row: QueuedDelivery) -> None:
        """Place a row by its message's arrival (message id), never ahead of a send in
        flight: on a shared store a later message may have been routed first.

        Rows nearly always arrive in order, so the usual case is an append; a backlog of
        thousands must not cost a pass over the whole lane per row.
        """
        waiting = self.waiting
        key = (row.message_id, row.id)
        if not waiting or _arrival(waiting[-1]) <= key:
            waiting.append(row)
            return
        at = bisect.bisect(waiting, key, key=_arrival)
        waiting.insert(max(at, 1) if self.busy else at, row)


def _arrival(row: QueuedDelivery) -> tuple[int, int]:
    return (row.message_id, row.id)


class DestinationQueue:
    """Sends one destination's QUEUED deliveries; see the module docstring."""

    def __init__(
        self,
        channel: str,
        destination: Destination,
        *,
        fetch: Fetch,
        record: Record,
        clock: Any,
        policy: RetryPolicy,
        on_exhausted: OnExhausted = OnExhausted.HOLD,
        rng: random.Random | None = None,
        batch: int = 1000,
        rescan_seconds: float = 5.0,
        on_final: FinalHook | None = None,
        shared: bool = False,
        monitor: QueueMonitor | None = None,
    ) -> None:
        self.channel = channel
        self.name = destination.name
        self.destination = destination
        self._fetch = fetch
        self._record = record
        self._clock = clock
        self._policy = policy
        self._on_exhausted = on_exhausted
        self._rng = rng or random.Random()
        self._batch = batch
        self._rescan_seconds = rescan_seconds
        self._on_final = on_final
        self._shared = shared
        self._monitor = monitor
        self._reading_from = 0
        self._lanes: dict[str, Lane] = {}
        self._known: set[int] = set()
        # Rows whose outcome committed while a read was under way: that read may still
        # hold them as QUEUED, and taking them again would send them twice.
        self._settled_during_read: set[int] = set()
        self._held: set[str] = set()
        self._holding: set[str] = set()
        self._cursor = 0
        self._polling = False
        self._poll_again = False
        self._rescan = True
        self._rescan_call: Any = None
        self._outcomes: list[tuple[DeliveryOutcome, defer.Deferred[None]]] = []
        self._flush_scheduled = False
        self._recording: set[defer.Deferred[None]] = set()
        self._inflight: set[defer.Deferred[Any]] = set()
        self.running = False
        self.paused = False
        self.sent = 0
        self.failed = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self) -> None:
        """Start sending: read the queue from its oldest row."""
        self.running = True
        self._rescan = True
        self.destination.start()
        self.wake()
        self._schedule_rescan()

    def pause(self) -> None:
        """Send nothing new; what is in flight finishes."""
        self.paused = True

    def resume(self) -> None:
        """Continue sending after `pause`."""
        self.paused = False
        for lane in list(self._lanes.values()):
            self._run_lane(lane)

    @defer.inlineCallbacks
    def stop(self, grace_seconds: float = 5.0) -> Any:
        """Stop sending; give sends in flight a grace period, then close the connector.

        Closing the connector fails what is still waiting (a connect to a dead EHR, an ACK
        that does not come); those deliveries stay QUEUED and go again at the next start,
        which at-least-once delivery allows.
        """
        self.running = False
        if self._rescan_call is not None and self._rescan_call.active():
            self._rescan_call.cancel()
        for lane in self._lanes.values():
            if lane.timer is not None and lane.timer.active():
                lane.timer.cancel()
        settled = defer.DeferredList(list(self._inflight))
        if self._inflight:
            grace: defer.Deferred[None] = defer.Deferred()
            call = self._clock.callLater(grace_seconds, grace.callback, None)
            yield defer.DeferredList([settled, grace], fireOnOneCallback=True)
            if call.active():
                call.cancel()
        stopping = self.destination.stop()
        yield settled
        self._flush_outcomes()
        yield defer.DeferredList(list(self._recording))
        yield stopping

    @property
    def depth(self) -> int:
        """Deliveries this node holds in memory and has not finished."""
        return sum(len(lane.waiting) for lane in self._lanes.values())

    # -- reading the durable queue -------------------------------------------------------

    def wake(self, *, rescan: bool = False) -> None:
        """New rows may be QUEUED (routing committed, or a reprocess): read them soon."""
        self._rescan = self._rescan or rescan
        if not self.running:
            return
        if self._polling:
            self._poll_again = True
            return
        self._polling = True
        self._clock.callLater(0, self._poll)

    def _schedule_rescan(self) -> None:
        # Rows may become visible below the cursor (another node's commit landing late,
        # a lane lease expiring): a periodic read from the start picks them up.
        def rescan() -> None:
            self.wake(rescan=True)
            self._schedule_rescan()

        if self.running and self._rescan_seconds > 0:
            self._rescan_call = self._clock.callLater(self._rescan_seconds, rescan)

    def _poll(self) -> None:
        self._settled_during_read.clear()
        after = self._reading_from = 0 if self._rescan else self._cursor
        self._rescan = False
        d = self._fetch(after, self._batch)
        d.addCallbacks(self._fetched, self._fetch_failed)

    def _fetch_failed(self, failure: Any) -> None:
        self._polling = False
        log.error("queue {channel}/{destination}: reading the queue failed: {kind}",
                  channel=self.channel, destination=self.name, kind=failure.type.__name__)
        self._clock.callLater(1.0, self.wake)

    def _fetched(self, result: tuple[list[QueuedDelivery], set[str]]) -> None:
        rows, held = result
        self._held = held | self._holding
        from_start = self._reading_from == 0
        if from_start:
            for lane in self._lanes.values():
                lane.awaiting_rescan = False
        for row in rows:
            self._cursor = max(self._cursor, row.id)
            if row.id in self._known or row.id in self._settled_during_read:
                continue
            self._known.add(row.id)
            lane = self._lanes.get(row.lane_key)
            if lane is None:
                lane = self._lanes[row.lane_key] = Lane(row.lane_key)
                if self._shared and not from_start:
                    lane.awaiting_rescan = True
                    self._rescan = self._poll_again = True
            lane.add(row)
        self._settled_during_read.clear()
        self._polling = False
        if len(rows) >= self._batch or self._poll_again:
            self._poll_again = False
            self.wake()
        for lane in list(self._lanes.values()):
            self._run_lane(lane)

    # -- sending -------------------------------------------------------------------------

    def _run_lane(self, lane: Lane) -> None:
        if not lane.waiting and not lane.busy and not (lane.timer and lane.timer.active()):
            # Drained: forget it, or one Lane per patient ever seen would pile up.
            if self._lanes.get(lane.key) is lane:
                del self._lanes[lane.key]
            return
        if lane.busy or not lane.waiting or not self.running or self.paused:
            return
        if lane.key in self._held or lane.awaiting_rescan:
            return
        head = lane.waiting[0]
        wait = head.next_attempt_at / 1e6 - self._clock.seconds()
        if wait > 0:
            if lane.timer is None or not lane.timer.active():
                lane.timer = self._clock.callLater(wait, self._run_lane, lane)
            return
        lane.busy = True
        if head.payload is None:
            result: defer.Deferred[DeliveryResult] = defer.succeed(
                DeliveryResult(Verdict.FAIL, detail="payload missing (pruned?)"))
        else:
            envelope = Envelope(head.message_id, self.channel, self.name,
                                head.control_id, head.message_type, head.attempts + 1,
                                head.received_at / 1e6, head.lane_key)
            result = defer.maybeDeferred(self.destination.send, head.payload, envelope)
        self._inflight.add(result)
        result.addErrback(lambda f: DeliveryResult(Verdict.RETRY, detail=f.type.__name__))
        result.addCallback(self._sent, lane, head)
        result.addBoth(self._settled, result)

    def _settled(self, value: Any, d: defer.Deferred[Any]) -> Any:
        self._inflight.discard(d)
        return value

    def _sent(self, result: DeliveryResult, lane: Lane, head: QueuedDelivery) -> None:
        lane.busy = False
        now_us = int(self._clock.seconds() * 1e6)
        attempts = head.attempts + 1
        first = now_us if head.first_attempt_at is None else head.first_attempt_at
        if self._monitor is not None:
            self._monitor.attempted(result.verdict is Verdict.SENT, now_us / 1e6)
        if result.verdict is Verdict.SENT:
            lane.waiting.pop(0)
            self.sent += 1
            self._finish(head, DeliveryOutcome(
                head.id, head.message_id, self.channel, self.name, Status.SENT, attempts,
                now_us, first, None, result.detail, result.response))
            self._run_lane(lane)
            return
        age = (now_us - first) / 1e6
        if result.verdict is Verdict.RETRY and not self._policy.exhausted(attempts, age):
            delay = self._policy.delay(attempts, self._rng)
            if result.retry_after is not None:
                delay = max(delay, result.retry_after)
            head.attempts, head.first_attempt_at = attempts, first
            head.next_attempt_at = now_us + int(delay * 1e6)
            self._queue_outcome(DeliveryOutcome(
                head.id, head.message_id, self.channel, self.name, Status.QUEUED, attempts,
                head.next_attempt_at, first, result.detail or "retry", result.detail,
                result.response))
            self._run_lane(lane)
            return
        lane.waiting.pop(0)
        self.failed += 1
        hold = self._on_exhausted is OnExhausted.HOLD
        if hold:
            self._holding.add(lane.key)
            self._held.add(lane.key)
        log.warn("queue {channel}/{destination}: message {id} dead-lettered after {n} "
                 "attempts ({detail}){held}", channel=self.channel, destination=self.name,
                 id=head.message_id, n=attempts, detail=result.detail or result.verdict.value,
                 held="; lane held" if hold else "")
        self._finish(head, DeliveryOutcome(
            head.id, head.message_id, self.channel, self.name, Status.ERROR, attempts,
            now_us, first, result.detail or result.verdict.value, result.detail,
            result.response, held=hold), lane.key if hold else None)
        self._run_lane(lane)

    def _finish(self, head: QueuedDelivery, outcome: DeliveryOutcome,
                held_lane: str | None = None) -> None:
        d = self._queue_outcome(outcome)
        decided_at = int(self._clock.seconds() * 1e6)

        def committed(_: Any) -> None:
            self._known.discard(head.id)
            if self._polling:
                self._settled_during_read.add(head.id)
            if held_lane is not None:
                self._holding.discard(held_lane)
            if self._on_final is not None:
                self._on_final(head.message_id, self.name, outcome.status)
            if self._monitor is not None:
                self._monitor.finished(outcome.status, head.received_at, decided_at)

        d.addCallback(committed)
        d.addErrback(lambda f: log.error(
            "queue {channel}/{destination}: outcome of message {id} not recorded: {kind}",
            channel=self.channel, destination=self.name, id=head.message_id,
            kind=f.type.__name__))

    # -- recording outcomes, batched per reactor turn ------------------------------------

    def _queue_outcome(self, outcome: DeliveryOutcome) -> defer.Deferred[None]:
        waiter: defer.Deferred[None] = defer.Deferred()
        self._outcomes.append((outcome, waiter))
        if not self._flush_scheduled:
            self._flush_scheduled = True
            self._clock.callLater(0, self._flush_outcomes)
        return waiter

    def _flush_outcomes(self) -> None:
        self._flush_scheduled = False
        if not self._outcomes:
            return
        batch, self._outcomes = self._outcomes, []
        d = self._record([outcome for outcome, _ in batch])
        self._recording.add(d)

        def settle(result: Any) -> None:
            self._recording.discard(d)
            for _, waiter in batch:
                if isinstance(result, Failure):
                    waiter.errback(result)
                else:
                    waiter.callback(None)

        d.addBoth(settle)
