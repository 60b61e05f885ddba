"""Device data for a running engine: the readings ledger and the device tracker, wired in.

The engine's router claims readings through `claim` (on the store writer's thread) and
reports sightings to `tracker`. A loop on the reactor's clock checks for silent devices,
saves changed devices every `save_seconds` and forgets expired readings every
`expire_seconds`; `stop` saves what is left.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, task
from twisted.logger import Logger
from twisted.python.failure import Failure

from channels.pcd import DeviceTrackingConfig
from engine.devices.observations import Claims, ObservationLedger
from engine.devices.persist import DeviceRows
from engine.devices.tracker import DeviceTracker
from engine.store.store import Store

log = Logger()

Run = Callable[..., "defer.Deferred[Any]"]


class DeviceData:
    """See the module docstring; `write` runs a function on the store writer's thread."""

    def __init__(self, clock: Any, store: Store, write: Run, read: Run,
                 settings: Callable[[str], DeviceTrackingConfig | None], *,
                 check_seconds: float = 5.0, save_seconds: float = 30.0,
                 expire_seconds: float = 3600.0) -> None:
        self._clock = clock
        self._write = write
        self._read = read
        self.ledger = ObservationLedger(store.engine)
        self.rows = DeviceRows(store.engine)
        self.tracker = DeviceTracker(clock, settings)
        self._check_seconds = check_seconds
        self._save_seconds = save_seconds
        self._expire_seconds = expire_seconds
        self._last_save = 0.0
        self._last_expiry = 0.0
        self._loop: task.LoopingCall | None = None
        self._saving: defer.Deferred[Any] | None = None

    async def start(self) -> None:
        """Load saved devices, then check on the clock."""
        loaded = self.tracker.load(await self._read(self.rows.load))
        if loaded:
            log.info("device tracking: {n} devices from the store", n=loaded)
        now = self._clock.seconds()
        self._last_save = self._last_expiry = now
        self._loop = task.LoopingCall(self.tick)
        self._loop.clock = self._clock
        self._loop.start(self._check_seconds, now=False)

    def claim(self, claims: Claims) -> defer.Deferred[dict[int, dict[str, int]]]:
        """Claim readings' keys for their messages (the router's `claim`)."""
        now_us = int(self._clock.seconds() * 1_000_000)
        return self._write(self.ledger.claim, claims, now_us)

    def tick(self) -> None:
        """Check for silence; now and then save devices and forget expired readings."""
        self.tracker.check()
        now = self._clock.seconds()
        if now - self._last_save >= self._save_seconds and self._saving is None:
            self._last_save = now
            self.save()
        if now - self._last_expiry >= self._expire_seconds:
            self._last_expiry = now
            d = self._write(self.ledger.expire, int(now * 1_000_000))
            d.addErrback(lambda f: log.error("expired readings not forgotten ({kind})",
                                             kind=f.type.__name__))

    def save(self) -> defer.Deferred[Any]:
        """Write changed devices to the store."""
        rows = self.tracker.changed_rows()
        if not rows:
            return defer.succeed(None)
        d = self._write(self.rows.save, rows)
        self._saving = d

        def done(result: Any) -> None:
            self._saving = None
            if isinstance(result, Failure):
                log.error("device states not saved ({kind})", kind=result.type.__name__)

        d.addBoth(done)
        return d

    async def stop(self) -> None:
        """Stop checking and save what changed."""
        if self._loop is not None and self._loop.running:
            self._loop.stop()
        if self._saving is not None:
            await self._saving
        await self.save()
