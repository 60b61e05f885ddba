"""One destination's queue at run time: lanes in arrival order, retries, dead letters.

The durable queue is the `deliveries` table; this class reads QUEUED rows from it in id
order, splits them into lanes (one lane unless `lanes:` names a field), and sends the head
of each lane, one at a time, so a retry never lets a later message overtake an earlier
one of the same lane (promise 3). Outcomes go back through the single writer. A message
whose retries are exhausted goes to ERROR; with `on_exhausted: hold` its lane stops
behind it until an operator reprocesses it, with `skip` the lane moves on.

On a shared store (several nodes on PostgreSQL) a node sends a lane only while it holds
the lane's lease: reads move past rows of lanes other nodes hold (they come back at a
read from the start), the queue renews the leases of every lane it has work in, drops a
lane whose lease went elsewhere, and releases a lane's lease once the lane has drained.
Reads and lease calls go to the store one at a time, so a release never crosses a read
that takes the lane again. A paused queue there reads nothing and lets its lanes go.
"""

from __future__ import annotations

import bisect
import random
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from channels.destinations.base import DeliveryResult, Destination, Envelope, Verdict
from engine.delivery.retry import RetryPolicy
from engine.store.deliveries import LEASE_SECONDS, Claim, DeliveryOutcome, QueuedDelivery
from engine.store.status import Status

if TYPE_CHECKING:
    from engine.store.store import Store

log = Logger()

Record = Callable[[Sequence[DeliveryOutcome]], "defer.Deferred[None]"]
FinalHook = Callable[[int, str, Status], None]


class Fetch(Protocol):
    """Reads a destination's queue: the claim after a cursor position, at most `limit`
    rows read, leaving out the rows in `have` that the queue holds already
    (`Store.claim`)."""

    def __call__(self, after: int, limit: int, have: Collection[int]
                 ) -> defer.Deferred[Claim]: ...


@runtime_checkable
class LaneLeases(Protocol):
    """A shared store's lane leases, kept by one destination's queue (`Store.renew_leases`,
    `Store.release_leases`); a `Fetch` on a shared store offers these as well."""

    lease_seconds: float

    def renew(self, lanes: Sequence[str]) -> defer.Deferred[set[str]]:
        """Extend this node's leases of `lanes`; the lanes it still holds."""

    def release(self, lanes: Sequence[str]) -> defer.Deferred[None]:
        """Give up this node's leases of `lanes`."""


@dataclass(frozen=True, slots=True)
class StoreQueue:
    """One node's reads and lane leases of one destination's queue: a `Fetch` with
    `LaneLeases`, each a store call that `call` runs off the reactor thread."""

    store: Store
    call: Callable[..., defer.Deferred[Any]]
    channel: str
    destination: str
    node: str
    lease_seconds: float = LEASE_SECONDS

    def __call__(self, after: int, limit: int, have: Collection[int]
                 ) -> defer.Deferred[Claim]:
        return self.call(self.store.claim, self.channel, self.destination, node=self.node,
                         after_id=after, limit=limit, lease_seconds=self.lease_seconds,
                         have=have)

    def renew(self, lanes: Sequence[str]) -> defer.Deferred[set[str]]:
        return self.call(self.store.renew_leases, self.channel, self.destination,
                         node=self.node, lanes=lanes, lease_seconds=self.lease_seconds)

    def release(self, lanes: Sequence[str]) -> defer.Deferred[None]:
        return self.call(self.store.release_leases, self.channel, self.destination,
                         node=self.node, lanes=lanes)


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
    recording: int = 0
    """Outcomes of its sends not committed yet: until they are, the lane has not drained."""
    unrecorded: bool = False
    """An outcome failed to commit: its row is still QUEUED, so the lease is not released
    early; it runs out instead."""
    awaiting_rescan: bool = False
    """Shared store: a lane new to this node waits for a read from the start, which brings
    any older rows of it that were skipped while another node held the lane."""
    rescan_pass: int = 0
    """The first read from the start that may end the wait (one begun after the lane was
    seen) ..."""
    rescan_upto: int = 0
    """... once it has read this far: where the read that first saw the lane began."""
    leased_at: float = 0.0
    """Shared store: when the last store call that confirmed this node's lease was made."""
    lost: bool = False
    """Its lease went to another node: nothing new is sent, and once what is in flight is
    recorded the lane is forgotten (a later read brings its rows back if the lease does)."""

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

    def drained(self) -> bool:
        """Nothing waiting, nothing in flight or due, every outcome recorded."""
        return (not self.waiting and not self.busy and self.recording == 0
                and not (self.timer and self.timer.active()))


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
        self._leases = fetch if shared and isinstance(fetch, LaneLeases) else None
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
        self._lanes: dict[str, Lane] = {}
        self._known: set[int] = set()
        # Rows whose outcome committed while a read was under way: that read may still
        # hold them as QUEUED, and taking them again would send them twice.
        self._settled_during_read: set[int] = set()
        self._held: set[str] = set()
        self._holding: set[str] = set()
        self._cursor = 0
        # A read from the start (a pass) goes on batch after batch on a shared store.
        self._pass_at: int | None = None  # how far the pass under way has got
        self._pass_from = 0  # the cursor when it began
        self._passes = 0
        # Lanes whose rows reads may have left behind below where they got (another
        # node's lane, a lane lost here): since the last pass that covered the whole
        # queue, and since the pass under way began. A lane first seen in a later read
        # waits for a pass only if it is among them.
        self._skipped: set[str] = set()
        self._pass_skipped: set[str] = set()
        # Lanes whose rows were forgotten while a read was under way: that read left out
        # the rows it was told this queue has, so it may hold the lane without them.
        self._forgotten_during_read: set[str] = set()
        self._rescan = True
        self._rescan_call: Any = None
        self._read_wanted = False
        self._reading = False
        self._reading_from = 0
        self._read_issued_at = 0.0
        self._renew_due = False
        self._renew_call: Any = None
        self._to_release: set[str] = set()
        self._in_call = False
        self._store_call: defer.Deferred[Any] | None = None
        self._call_scheduled = False
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
        self._schedule_renewal()

    def pause(self) -> None:
        """Send nothing new; what is in flight finishes.

        On a shared store a paused queue also stops reading and lets every lane go (its
        rows are left to the store, its lease released once what is in flight is
        recorded), so other nodes deliver those lanes meanwhile instead of waiting for
        the resume.
        """
        self.paused = True
        if self._leases is not None:
            for lane in list(self._lanes.values()):
                self._let_go_of(lane)

    def resume(self) -> None:
        """Continue sending after `pause`; on a shared store, from a read from the start."""
        self.paused = False
        if self._leases is not None:
            self.wake(rescan=True)
        for lane in list(self._lanes.values()):
            self._run_lane(lane)

    @property
    def _standing_aside(self) -> bool:
        """Paused on a shared store: no reads, no lanes kept beyond what is in flight."""
        return self.paused and self._leases is not None

    @defer.inlineCallbacks
    def stop(self, grace_seconds: float = 5.0) -> Any:
        """Stop sending; give sends in flight a grace period, then close the connector.

        Closing the connector fails what is still waiting (a connect to a dead EHR, an ACK
        that does not come); those deliveries stay QUEUED and go again at the next start,
        which at-least-once delivery allows. On a shared store the leases of this node's
        lanes are then released, so other nodes take them over without waiting.
        """
        self.running = False
        for call in (self._rescan_call, self._renew_call):
            if call is not None and call.active():
                call.cancel()
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
        yield self._release_all()
        yield stopping

    @property
    def depth(self) -> int:
        """Deliveries this node holds in memory and has not finished."""
        return sum(len(lane.waiting) for lane in self._lanes.values())

    # -- store calls, one at a time ------------------------------------------------------

    def wake(self, *, rescan: bool = False) -> None:
        """New rows may be QUEUED (routing committed, or a reprocess): read them soon."""
        self._rescan = self._rescan or rescan
        self._read_wanted = True
        self._kick()

    def _kick(self) -> None:
        """Make the next store call soon, unless one is under way (it kicks when done)."""
        if not self.running or self._in_call or self._call_scheduled:
            return
        if self._read_wanted or self._renew_due or self._to_release:
            self._call_scheduled = True
            self._clock.callLater(0, self._next_call)

    def _next_call(self) -> None:
        # Lease upkeep goes first: a renewal has a deadline, and a release lets another
        # node take the lane sooner. A lane a read brought back since is not released.
        self._call_scheduled = False
        if not self.running or self._in_call:
            return
        if self._renew_due:
            self._renew_due = False
            if self._renew():
                return
        leases = self._leases
        releasing = sorted(key for key in self._to_release if key not in self._lanes)
        self._to_release.clear()
        if releasing and leases is not None:
            self._calling(lambda: leases.release(releasing).addErrback(
                self._lease_call_failed, "releasing"))
        elif self._read_wanted and not self._standing_aside:
            self._poll()

    def _calling(self, start: Callable[[], defer.Deferred[Any]]) -> None:
        """Make one store call; the next waits until it has ended."""
        self._in_call = True

        def ended(result: Any) -> Any:
            self._in_call = False
            self._store_call = None
            self._kick()
            return result

        d = start()
        if self._in_call:
            self._store_call = d
        d.addBoth(ended)

    def _lease_call_failed(self, failure: Failure, doing: str) -> None:
        log.error("queue {channel}/{destination}: {doing} lane leases failed: {kind}",
                  channel=self.channel, destination=self.name, doing=doing,
                  kind=failure.type.__name__)

    # -- reading the durable queue -------------------------------------------------------

    def _schedule_rescan(self) -> None:
        # Rows may become visible below the cursor (another node's commit landing late,
        # a lane lease expiring): a periodic read from the start picks them up.
        # A read from the start still under way serves as this one.
        def rescan() -> None:
            if self._pass_at is None:
                self.wake(rescan=True)
            self._schedule_rescan()

        if self.running and self._rescan_seconds > 0:
            self._rescan_call = self._clock.callLater(self._rescan_seconds, rescan)

    def _poll(self) -> None:
        # Alone, a node reads one batch from the start and goes on from its cursor; on a
        # shared store a pass goes on, batch after batch, to the end of the queue (rows of
        # other nodes' lanes fill batches there) and leaves out the rows held here.
        self._read_wanted = False
        self._settled_during_read.clear()
        self._forgotten_during_read.clear()
        if self._rescan and self._pass_at is None:
            self._rescan = False
            self._passes += 1
            self._pass_at, self._pass_from = 0, self._cursor
            self._pass_skipped = set()
        after = self._reading_from = self._cursor if self._pass_at is None else self._pass_at
        have = frozenset(self._known) if self._shared and after < self._cursor else frozenset()
        self._reading = True
        self._read_issued_at = self._clock.seconds()
        self._calling(lambda: self._fetch(after, self._batch, have).addCallbacks(
            self._fetched, self._fetch_failed))

    def _fetch_failed(self, failure: Any) -> None:
        self._reading = False
        log.error("queue {channel}/{destination}: reading the queue failed: {kind}",
                  channel=self.channel, destination=self.name, kind=failure.type.__name__)
        self._clock.callLater(1.0, self.wake)

    def _fetched(self, claim: Claim) -> None:
        self._held = claim.held | self._holding
        self._left_behind(claim.others)
        for key in claim.others:
            if key in self._lanes:
                self._lose(self._lanes[key])
        if self._leases is not None:
            self._confirm_leases({row.lane_key for row in claim.rows})
        after = self._reading_from
        skipped = self._skipped if self._pass_at is None else self._pass_skipped
        for row in claim.rows:
            if row.id in self._known or row.id in self._settled_during_read:
                continue
            key = row.lane_key
            lane = self._lanes.get(key)
            if key in self._forgotten_during_read or (lane is not None and lane.lost):
                self._left_behind((key,))
                continue
            if lane is None:
                lane = self._lanes[key] = Lane(key, leased_at=self._read_issued_at)
                if self._shared and after > 0 and key in skipped:
                    self._await_rescan(lane, after)
            self._known.add(row.id)
            lane.add(row)
        self._cursor = max(self._cursor, claim.position)
        if self._pass_at is not None:
            self._passed(claim)
        if claim.more:
            self._read_wanted = True
        self._settled_during_read.clear()
        self._forgotten_during_read.clear()
        self._reading = False
        for lane in list(self._lanes.values()):
            if self._standing_aside:
                self._let_go_of(lane)  # a read under way when the queue was paused
            else:
                self._run_lane(lane)

    def _left_behind(self, keys: Collection[str]) -> None:
        """Reads may have passed rows of these lanes that this node does not hold."""
        self._skipped.update(keys)
        if self._pass_at is not None:
            self._pass_skipped.update(keys)

    def _confirm_leases(self, keys: Collection[str]) -> None:
        """The claim took or renewed these lanes' leases. A lane in memory whose lease may
        have run out before the claim reached the store may have been sent by another node
        meanwhile: its rows here are stale, so it is dropped and starts again."""
        assert self._leases is not None
        now = self._clock.seconds()
        for key in keys:
            lane = self._lanes.get(key)
            if lane is None or lane.lost:
                continue
            if now - lane.leased_at >= self._leases.lease_seconds:
                self._lose(lane)
            else:
                lane.leased_at = max(lane.leased_at, self._read_issued_at)

    def _await_rescan(self, lane: Lane, after: int) -> None:
        """A lane first seen in a read that began at `after`, after reads that left rows
        of it behind: it waits until the next pass has read that far, bringing them."""
        lane.awaiting_rescan = True
        lane.rescan_pass = self._passes + 1
        lane.rescan_upto = after
        self._rescan = True
        self._read_wanted = True

    def _passed(self, claim: Claim) -> None:
        """The pass under way got to `claim.position`: lanes waiting for it that it has
        passed may send. It ends at the end of the queue or at a cut."""
        assert self._pass_at is not None
        for lane in self._lanes.values():
            if (lane.awaiting_rescan and lane.rescan_pass <= self._passes
                    and lane.rescan_upto <= claim.position):
                lane.awaiting_rescan = False
        if self._shared and claim.more:
            self._pass_at = claim.position
            return
        self._pass_at = None
        if claim.position >= self._pass_from:  # it read the whole queue
            self._skipped = self._pass_skipped
        else:
            self._skipped |= self._pass_skipped
        if self._rescan:
            self._read_wanted = True  # asked for during this pass: another one

    # -- lane leases (shared store) ------------------------------------------------------

    def _schedule_renewal(self) -> None:
        # Every lane with work here is renewed well before its lease runs out, also those
        # no read touches (a backlog deeper than one read, a lane backing off).
        def due() -> None:
            self._renew_due = True
            self._kick()
            self._schedule_renewal()

        if self.running and self._leases is not None:
            self._renew_call = self._clock.callLater(self._leases.lease_seconds / 3, due)

    def _renew(self) -> bool:
        """Renew the leases of every lane held here in one store call (False: none)."""
        assert self._leases is not None
        lanes = sorted(key for key, lane in self._lanes.items() if not lane.lost)
        if not lanes:
            return False
        leases, issued = self._leases, self._clock.seconds()
        self._calling(lambda: leases.renew(lanes).addCallbacks(
            self._renewed, self._renew_failed, (lanes, issued)))
        return True

    def _renewed(self, kept: set[str], lanes: list[str], issued: float) -> None:
        lost = 0
        for key in lanes:
            lane = self._lanes.get(key)
            if lane is None or lane.lost:
                continue
            if key in kept:
                lane.leased_at = max(lane.leased_at, issued)
            else:
                lost += 1
                self._lose(lane)
        if lost:
            log.warn("queue {channel}/{destination}: {n} lanes went to another node; "
                     "their rows are left to it", channel=self.channel,
                     destination=self.name, n=lost)

    def _renew_failed(self, failure: Failure) -> None:
        self._lease_call_failed(failure, "renewing")
        self._clock.callLater(1.0, self._renew_soon)

    def _renew_soon(self) -> None:
        self._renew_due = True
        self._kick()

    def _lapsed(self, lane: Lane) -> bool:
        """The lease may have run out: no renewal was confirmed for as long as it lasts."""
        return (self._leases is not None
                and self._clock.seconds() - lane.leased_at >= self._leases.lease_seconds)

    def _lose(self, lane: Lane) -> None:
        """The lane's lease is (or may be) another node's: send nothing new from it, and
        forget its waiting rows so a later read can bring them back."""
        if lane.lost:
            return
        lane.lost = True
        self._let_go_of(lane)

    def _let_go_of(self, lane: Lane) -> None:
        """Keep only the lane's send in flight: its other rows are forgotten (a later read
        brings them back), and once the send is recorded the lane leaves memory."""
        if lane.timer is not None and lane.timer.active():
            lane.timer.cancel()
        keep = lane.waiting[:1] if lane.busy else []
        self._forget_rows(lane.key, [row.id for row in lane.waiting[len(keep):]])
        lane.waiting = keep
        self._run_lane(lane)

    def _forget_rows(self, key: str, ids: Collection[int]) -> None:
        """Rows of a lost lane are left to the store: a later read may bring them back,
        and the lane waits for a pass when it is next seen."""
        self._known.difference_update(ids)
        self._left_behind((key,))
        if self._reading:
            self._forgotten_during_read.add(key)

    def _forget(self, lane: Lane) -> None:
        """A drained lane leaves memory (one Lane per patient ever seen would pile up);
        on a shared store its lease is released, unless it was lost or an outcome of it
        failed to commit."""
        if self._lanes.get(lane.key) is not lane:
            return
        del self._lanes[lane.key]
        if self._leases is not None and not lane.lost and not lane.unrecorded:
            self._to_release.add(lane.key)
            self._kick()

    @defer.inlineCallbacks
    def _release_all(self) -> Any:
        """Stopping: after the store call under way, release every lease held here."""
        if self._leases is None:
            return
        if self._store_call is not None:
            yield defer.DeferredList([self._store_call])
        keys = self._to_release | {k for k, lane in self._lanes.items() if not lane.lost}
        self._to_release.clear()
        if keys:
            yield self._leases.release(sorted(keys)).addErrback(
                self._lease_call_failed, "releasing")

    # -- sending -------------------------------------------------------------------------

    def _run_lane(self, lane: Lane) -> None:
        if not lane.waiting and lane.drained():
            self._forget(lane)
            return
        if lane.lost or lane.busy or not lane.waiting or not self.running or self.paused:
            return
        if lane.key in self._held or lane.awaiting_rescan:
            return
        if self._leases is not None and self._lapsed(lane):
            self._lose(lane)
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
            self._finish(lane, head, DeliveryOutcome(
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
            outcome = DeliveryOutcome(
                head.id, head.message_id, self.channel, self.name, Status.QUEUED, attempts,
                head.next_attempt_at, first, result.detail or "retry", result.detail,
                result.response)
            if lane.lost or self._standing_aside:
                # Another node has the lane now, or may take it: the row stays QUEUED.
                lane.waiting.pop(0)
                self._record_for(lane, outcome).addBoth(self._let_go, head)
            else:
                self._record_for(lane, outcome)
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
        self._finish(lane, head, DeliveryOutcome(
            head.id, head.message_id, self.channel, self.name, Status.ERROR, attempts,
            now_us, first, result.detail or result.verdict.value, result.detail,
            result.response, held=hold), lane.key if hold else None)
        self._run_lane(lane)

    def _finish(self, lane: Lane, head: QueuedDelivery, outcome: DeliveryOutcome,
                held_lane: str | None = None) -> None:
        d = self._record_for(lane, outcome)
        decided_at = int(self._clock.seconds() * 1e6)

        def committed(_: Any) -> None:
            self._known.discard(head.id)
            if self._reading:
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

    def _let_go(self, result: Any, head: QueuedDelivery) -> Any:
        self._forget_rows(head.lane_key, (head.id,))
        return result

    def _record_for(self, lane: Lane, outcome: DeliveryOutcome) -> defer.Deferred[None]:
        """Record an outcome of the lane's. With leases to release, the lane has not
        drained until it commits; alone, nothing waits for that."""
        d = self._queue_outcome(outcome)
        if self._leases is None:
            return d
        lane.recording += 1

        def recorded(result: Any) -> Any:
            lane.recording -= 1
            if isinstance(result, Failure):
                lane.unrecorded = True
            self._run_lane(lane)
            return result

        return d.addBoth(recorded)

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
