"""Moves committed messages on from RECEIVED, through their channel's pipeline.

Routing runs after the ACK, never in front of it. The channel's pipeline (filter,
transformer, destinations) decides: QUEUED with one delivery row per destination, or
FILTERED with its reason, or ERROR with the failing step's traceback on the record
(promise 2). A channel without a deployed pipeline leaves the message FILTERED as
"channel has no destinations", visible and countable. Messages a crash left RECEIVED are
routed again by `recover` at start.

With pipeline workers (`engine.workers`), a batch's messages are decided in the worker
processes and only recorded here. When no worker can answer, messages of channels
without Python hooks are decided here; a batch with hooks waits for a worker (up to
`WORKER_WAIT_SECONDS`), because a hook can hang or end the process that runs it. For the
same reason a batch whose worker got stuck, or ended while deciding, is not decided here:
its messages of hook-running channels are ERROR, for an operator to reprocess.
Channels that de-duplicate readings (`pcd.deduplicate`) are always decided here: they first
claim their readings' keys in the store (`claim`), then finish the pipeline knowing which
were received before. Batches are recorded in the order they were routed even while a
claim or a worker's answer is under way.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from channels.pcd import Sighting
from channels.pipeline import NO_DESTINATIONS, ChannelPipeline, Decision, Prepared, Verdict
from engine.store.deliveries import NewDelivery, Routing
from engine.store.status import ContentKind, Status
from engine.store.store import Store
from engine.workers.pool import (
    PipelineWorkers,
    WorkerEnded,
    WorkerOverdue,
    WorkersUnavailable,
)

log = Logger()

PipelineLookup = Callable[[str], "ChannelPipeline | None"]
Routed = Callable[[Sequence[Routing]], None]
Claims = list[tuple[int, list[str], float]]
"""(message id, reading keys, how long to remember them in seconds) per message."""
Claim = Callable[[Claims], "defer.Deferred[dict[int, dict[str, int]]]"]
"""Fires with, per message id, the keys an earlier message carried first (and its id)."""
Sighted = Callable[[str, Sequence[Sighting]], None]
Workers = PipelineWorkers
_Item = tuple[int, str, "ChannelPipeline | None", "Prepared | None"]
CLAIM_FAILED = "readings could not be matched against earlier ones (store unavailable)"
MAX_BATCH = 1000
"""Messages decided together at most: bounds a worker's answer and a routing commit."""
ROOM_HIGH = 5000
ROOM_LOW = 2500
"""Messages waiting for a decision above which sources hold their answers (`room`), and
below which they answer again."""
ROOM_MAX_WAIT_SECONDS = 5.0
"""The longest an answer is held for room: well inside any sender's ACK timeout."""
WORKER_WAIT_SECONDS = 60.0
"""How long a batch with hooks waits for a pipeline worker (restarts back off to 30 s)
before its hook-running messages are ERROR."""
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
        claim: Claim | None = None,
        sighted: Sighted | None = None,
        workers: Workers | None = None,
    ) -> None:
        self._record = route
        self._clock = clock
        self._pipelines = pipelines or (lambda _: None)
        self._routed = routed
        self._claim = claim
        self._sighted = sighted
        self._workers = workers
        self._order = defer.DeferredLock()
        self._pending: list[tuple[int, str, bytes]] = []
        self._scheduled = False
        self._inflight: set[defer.Deferred[None]] = set()
        self._room: list[tuple[defer.Deferred[None], Any]] = []
        self.backlog = 0
        """Messages handed over whose decision is not made yet."""
        self.routed = 0

    def route(self, message_id: int, channel: str, raw: bytes) -> None:
        """Accept one committed message for routing in the next batch."""
        self.backlog += 1
        self._pending.append((message_id, channel, raw))
        if not self._scheduled:
            self._scheduled = True
            self._clock.callLater(0, self._flush)

    def decide(self, message_id: int, channel: str, raw: bytes,
               seen: dict[str, int] | None = None) -> Routing:
        """Run the channel's pipeline for one message."""
        pipeline = self._pipelines(channel)
        if pipeline is None:
            return Routing(message_id, channel, Status.FILTERED, NO_DESTINATIONS)
        return self._finish((message_id, channel, pipeline,
                             self._prepare(message_id, channel, pipeline, raw)), seen)

    def _prepare(self, message_id: int, channel: str, pipeline: ChannelPipeline,
                 raw: bytes) -> Prepared:
        try:
            return pipeline.prepare(raw)
        except Exception as error:  # a defect must not leave a batch stuck in RECEIVED
            return Prepared(decision=self._defect(message_id, channel, error))

    def _finish(self, item: _Item, seen: dict[str, int] | None) -> Routing:
        message_id, channel, pipeline, prepared = item
        if pipeline is None or prepared is None:
            return Routing(message_id, channel, Status.FILTERED, NO_DESTINATIONS)
        try:
            decision = pipeline.finish(prepared, seen)
        except Exception as error:  # a defect must not leave a batch stuck in RECEIVED
            decision = self._defect(message_id, channel, error)
        return self._conclude(message_id, channel, decision)

    def _routing(self, item: _Item, seen: dict[str, int] | None,
                 decided: dict[int, Decision]) -> Routing:
        """The record for one item: from a worker's decision, or decided here now."""
        decision = decided.get(item[0])
        if decision is not None:
            return self._conclude(item[0], item[1], decision)
        return self._finish(item, seen)

    def _conclude(self, message_id: int, channel: str, decision: Decision) -> Routing:
        """Log what went wrong, note the devices heard from, and make the store's record."""
        if decision.verdict is Verdict.ERROR:
            log.warn("message {id} of channel {channel} not routed: {reason}",
                     id=message_id, channel=channel, reason=decision.reason)
        if decision.sightings and self._sighted is not None:
            self._sighted(channel, decision.sightings)
        return routing_for(message_id, channel, decision)

    @staticmethod
    def _defect(message_id: int, channel: str, error: Exception | str) -> Decision:
        kind = error if isinstance(error, str) else type(error).__name__
        log.error("message {id} of channel {channel}: pipeline failed: {kind}",
                  id=message_id, channel=channel, kind=kind)
        return Decision(Verdict.ERROR, f"pipeline failed: {kind}", f"pipeline failed: {kind}")

    def room(self) -> defer.Deferred[None] | None:
        """Back-pressure for sources: None while routing keeps up, else a Deferred that
        fires once the messages waiting for a decision are back under `ROOM_LOW`.

        A source holds its (already committed) answers on it, so senders that wait for
        their ACKs slow down to the pace at which messages can be decided, instead of
        the store filling with RECEIVED messages faster than they can be routed.
        """
        if self.backlog < ROOM_HIGH:
            return None
        d: defer.Deferred[None] = defer.Deferred()
        timer = self._clock.callLater(ROOM_MAX_WAIT_SECONDS, self._give_room, d)
        self._room.append((d, timer))
        return d

    @staticmethod
    def _give_room(d: defer.Deferred[None]) -> None:
        """Answer anyway after a while: a sender must not time out over our backlog."""
        if not d.called:
            d.callback(None)

    def _flush(self) -> None:
        self._scheduled = False
        batch, self._pending = self._pending[:MAX_BATCH], self._pending[MAX_BATCH:]
        if self._pending:
            self._scheduled = True
            self._clock.callLater(0, self._flush)
        if not batch:
            return
        d = self._order.run(self._process, batch)
        self._inflight.add(d)
        d.addBoth(self._settle, d, len(batch))

    def _settle(self, result: Any, d: defer.Deferred[Any], size: int) -> None:
        self._inflight.discard(d)
        self.backlog -= size
        if self._room and self.backlog <= ROOM_LOW:
            waiting, self._room = self._room, []
            for room, timer in waiting:
                if timer.active():
                    timer.cancel()
                self._give_room(room)
        if isinstance(result, Failure):
            log.error("routing a batch failed ({kind}); its messages stay RECEIVED",
                      kind=result.type.__name__)

    def _process(self, batch: list[tuple[int, str, bytes]]) -> defer.Deferred[None] | None:
        """Decide a batch (in the workers where they can), then record it in order."""
        if self._workers is not None:
            remote = [m for m in batch if self._for_workers(m[1])]
            if remote:
                d = self._workers.decide(remote)
                return d.addCallbacks(self._decided, self._undecided,
                                      callbackArgs=(batch, remote),
                                      errbackArgs=(batch, remote))
        return self._process_here(batch, {})

    def _runs_hooks(self, channel: str) -> bool:
        pipeline = self._pipelines(channel)
        return pipeline is not None and bool(pipeline.hooks)

    def _for_workers(self, channel: str) -> bool:
        """Channels that de-duplicate readings claim them in the store between reading and
        deciding, which only this process can do; the others can be decided elsewhere."""
        pipeline = self._pipelines(channel)
        return pipeline is not None and not pipeline.dedupe_window_seconds

    def _decided(self, answers: list[Any], batch: list[tuple[int, str, bytes]],
                 remote: list[tuple[int, str, bytes]]) -> defer.Deferred[None] | None:
        decided: dict[int, Decision] = {}
        for (mid, channel, _), answer in zip(remote, answers, strict=True):
            if isinstance(answer, Decision):
                decided[mid] = answer
            elif answer is not None:  # the worker's pipeline raised: a defect, by type
                decided[mid] = self._defect(mid, channel, getattr(answer, "kind", "Exception"))
        return self._process_here(batch, decided)

    def _undecided(self, failure: Failure, batch: list[tuple[int, str, bytes]],
                   remote: list[tuple[int, str, bytes]]) -> defer.Deferred[None] | None:
        decided: dict[int, Decision] = {}
        error = failure.value
        if isinstance(error, WorkerOverdue):
            # Deciding these here could hang the reactor as it hung the worker: they are
            # ERROR, reprocessed by an operator once the cause is fixed.
            text = f"pipeline gave no answer in {error.seconds:g} s (worker restarted)"
            decided = dict.fromkeys(error.message_ids, Decision(Verdict.ERROR, text, text))
        elif isinstance(error, WorkerEnded):
            # A hook may have ended it; declarative steps cannot, so those are decided here.
            text = f"pipeline worker ended ({error.how}) while deciding; reprocess once fixed"
            lost = set(error.message_ids)
            decided = {mid: Decision(Verdict.ERROR, text, text) for mid, channel, _ in remote
                       if mid in lost and self._runs_hooks(channel)}
            log.error("pipeline worker ended ({how}) while deciding {n} messages; {e} with "
                      "hooks are ERROR", how=error.how, n=len(lost), e=len(decided))
        elif isinstance(error, WorkersUnavailable):
            if self._workers is not None and any(self._runs_hooks(c) for _, c, _ in remote):
                return self._workers.when_ready(WORKER_WAIT_SECONDS).addCallbacks(
                    lambda _: self._process(batch), self._no_worker,
                    errbackArgs=(batch, remote))
        else:
            log.error("pipeline workers failed a batch ({kind}); deciding it here",
                      kind=failure.type.__name__)
        return self._process_here(batch, decided)

    def _no_worker(self, failure: Failure, batch: list[tuple[int, str, bytes]],
                   remote: list[tuple[int, str, bytes]]) -> defer.Deferred[None] | None:
        """No worker came back in time: hook-running messages are ERROR, the rest decided
        here."""
        text = f"no pipeline worker: {failure.getErrorMessage()}; reprocess once one runs"
        log.error("{text} ({n} messages)", text=text, n=len(remote))
        return self._process_here(batch, {
            mid: Decision(Verdict.ERROR, text, text)
            for mid, channel, _ in remote if self._runs_hooks(channel)})

    def _process_here(self, batch: list[tuple[int, str, bytes]],
                      decided: dict[int, Decision]) -> defer.Deferred[None] | None:
        """Prepare what is not decided yet, claim readings where a channel de-duplicates,
        and record the batch."""
        items: list[_Item] = []
        claims: Claims = []
        for mid, channel, raw in batch:
            if mid in decided:
                items.append((mid, channel, None, None))
                continue
            pipeline = self._pipelines(channel)
            prepared = self._prepare(mid, channel, pipeline, raw) if pipeline else None
            items.append((mid, channel, pipeline, prepared))
            if pipeline is not None and prepared is not None and prepared.observations:
                window = pipeline.dedupe_window_seconds
                if window:
                    claims.append((mid, [o.key for o in prepared.observations], window))
        if not claims or self._claim is None:
            self._record_batch(batch, [self._routing(item, None, decided) for item in items])
            return None

        def claimed(seen: dict[int, dict[str, int]]) -> None:
            self._record_batch(batch, [self._routing(item, seen.get(item[0]), decided)
                                       for item in items])

        def unclaimed(failure: Any) -> None:
            log.error("readings of {n} messages could not be claimed ({kind})",
                      n=len(claims), kind=failure.type.__name__)
            failed = {mid for mid, _, _ in claims}
            self._record_batch(batch, [
                Routing(i[0], i[1], Status.ERROR, CLAIM_FAILED, CLAIM_FAILED)
                if i[0] in failed else self._routing(i, None, decided) for i in items])

        return self._claim(claims).addCallbacks(claimed, unclaimed)

    def _record_batch(self, batch: list[tuple[int, str, bytes]],
                      routings: list[Routing]) -> None:
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
        while self._pending:
            self._flush()
        return defer.ensureDeferred(self._settled())

    async def _settled(self) -> None:
        while self._inflight:
            await defer.DeferredList(list(self._inflight))

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
