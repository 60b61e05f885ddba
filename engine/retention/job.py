"""The pruning job: on a schedule, batch by batch through the writer, then one audit event.

Each batch is one short transaction on the writer's thread, between the group commits of
incoming messages, so ingest waits at most one batch. A run ends with a
`retention.pruned` audit event carrying the counts per channel (never content), and gives
freed space back where the store can.

Scheduling follows the file source: APScheduler's `TwistedScheduler` with one interval job
whose only work is to start `run` unless one is running; `run` is the tested unit.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import TYPE_CHECKING

from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.twisted import TwistedScheduler
from twisted.internet import defer
from twisted.logger import Logger

from engine.retention.prune import (
    Policy,
    Step,
    Tally,
    audit_detail,
    prune_step,
    reclaim_space,
)
from engine.store.store import now_us

if TYPE_CHECKING:
    from engine.service import EngineService

log = Logger()
ACTOR = "retention"


def engine_policy(engine: EngineService) -> Policy:
    """Days per deployed channel, and the engine file's default for every other channel."""
    deployment = engine.deployment
    channels = {} if deployment is None else {
        name: deployed.config.retention.content_days
        for name, deployed in deployment.channels.items()}
    return Policy(engine.config.retention.content_days, channels)


class RetentionBusy(Exception):
    """A run was asked for while one is going."""


class RetentionJob:
    """Prunes old contents of one engine's store, on a schedule or when asked."""

    def __init__(self, engine: EngineService,
                 clock_us: Callable[[], int] = now_us) -> None:
        self.engine = engine
        self.clock_us = clock_us
        self.busy = False
        self._idle: list[defer.Deferred[None]] = []
        self._scheduler: TwistedScheduler | None = None

    def start(self) -> None:
        """Run every `retention.interval_minutes`, the first time one interval from now."""
        cfg = self.engine.config.retention
        if not cfg.enabled:
            return
        scheduler = TwistedScheduler(
            reactor=self.engine.reactor, timezone=UTC,
            executors={"default": DebugExecutor()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None})
        scheduler.add_job(self._tick, "interval", minutes=cfg.interval_minutes,
                          next_run_time=datetime.now(UTC) + timedelta(
                              minutes=cfg.interval_minutes), name="retention")
        scheduler.start()
        self._scheduler = scheduler

    def stop(self) -> defer.Deferred[None]:
        """Stop the schedule; fires once a run in progress has finished its batch."""
        scheduler, self._scheduler = self._scheduler, None
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
        if not self.busy:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        return d

    def _stopping(self) -> bool:
        return bool(self._idle)

    def _tick(self) -> None:
        if not self.busy:
            self.run().addErrback(lambda f: log.error(
                "retention run failed: {kind}", kind=f.type.__name__))

    def run(self) -> defer.Deferred[Tally]:
        """One full run now."""
        return defer.ensureDeferred(self._run_all())

    async def _run_all(self) -> Tally:
        total = Tally()
        async for step in self.steps():
            total.merge(step.tally)
        return total

    async def steps(self) -> AsyncIterator[Step]:
        """Run batch after batch, yielding each; audit and reclaim at the end."""
        if self.busy:
            raise RetentionBusy("a retention run is already going")
        self.busy = True
        try:
            async for step in self._steps():
                yield step
        finally:
            self.busy = False
            idle, self._idle = self._idle, []
            for d in idle:
                d.callback(None)

    async def _steps(self) -> AsyncIterator[Step]:
        engine = self.engine
        store, writer = engine.store, engine.writer
        assert store is not None and writer is not None
        policy = engine_policy(engine)
        now = self.clock_us()
        batch = engine.config.retention.batch_size
        total = Tally()
        after = 0
        while True:
            step = await writer.call(partial(prune_step, batch=batch), store, policy, now, after)
            total.merge(step.tally)
            yield step
            after = step.after_id
            if step.done or self._stopping():
                break
        await engine.audit_action(ACTOR, "retention.pruned", detail=audit_detail(policy, total))
        released = await writer.call(reclaim_space, store)
        log.info("retention: contents of {count} messages pruned; {pages} pages released",
                 count=total.messages, pages=released)
