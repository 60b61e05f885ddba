"""Device silence and completeness: every device heard from, by identity, per channel.

Each sighting (a message from a device: OBX-18 EUI-64 or MDC_ATTR_SYS_ID of its MDS,
never MSH-3) updates the device's last seen time and unit (PV1-3 point of care). The
expected reporting interval is the channel's ``pcd.devices.expected_interval_seconds``,
else learned: the median of its recent gaps once there are three. A device is silent when
nothing came for longer than ``silent_after`` intervals; ``check`` finds the ones that just
went silent (logged once, and offered to `device_silence` alert rules through
``silent_devices``). Completeness is readings received ÷ readings expected over the
channel's window (``window_seconds``), per device and per unit.

Time is the clock's (the reactor, or ``task.Clock`` in tests); nothing here does I/O.
``rows``/``load`` carry the state to and from the store so it survives a restart.
"""

from __future__ import annotations

import json
import statistics
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from channels.pcd import DeviceTrackingConfig, Sighting
from engine.alerts.devices import SilentDevice

log = Logger()

Settings = Callable[[str], "DeviceTrackingConfig | None"]
MAX_ARRIVALS = 5000
RECENT_GAPS = 21
LEARN_AFTER = 3


@dataclass(slots=True)
class Device:
    """What is known of one device on one channel."""

    channel: str
    device: str
    unit: str
    first_seen: float
    last_seen: float
    state: str = "reporting"
    silent_since: float | None = None
    arrivals: deque[float] = field(default_factory=lambda: deque(maxlen=MAX_ARRIVALS))
    gaps: deque[float] = field(default_factory=lambda: deque(maxlen=RECENT_GAPS))


@dataclass(frozen=True, slots=True)
class Completeness:
    """Readings received and expected over a window, and their ratio (capped at 1)."""

    received: int
    expected: float

    @property
    def ratio(self) -> float | None:
        if self.expected <= 0:
            return None
        return min(1.0, self.received / self.expected)


class DeviceTracker:
    """Devices by (channel, identity); see the module docstring."""

    def __init__(self, clock: Any, settings: Settings) -> None:
        self._clock = clock
        self._settings = settings
        self._devices: dict[tuple[str, str], Device] = {}
        self._dirty: set[tuple[str, str]] = set()

    # -- input ----------------------------------------------------------------------------

    def sighted(self, channel: str, sightings: Sequence[Sighting]) -> None:
        """Devices heard from now on ``channel``."""
        now = self._clock.seconds()
        for sighting in sightings:
            key = (channel, sighting.device)
            device = self._devices.get(key)
            if device is None:
                device = self._devices[key] = Device(channel, sighting.device, sighting.unit,
                                                     now, now)
            else:
                gap = now - device.last_seen
                if gap > 0:
                    device.gaps.append(gap)
                device.last_seen = max(device.last_seen, now)
                if sighting.unit:
                    device.unit = sighting.unit
                if device.state == "silent":
                    log.info("device {device} on channel {channel} (unit {unit}) reports "
                             "again", device=device.device, channel=channel,
                             unit=device.unit or "-")
                device.state = "reporting"
                device.silent_since = None
            device.arrivals.append(now)
            self._dirty.add(key)

    # -- judging --------------------------------------------------------------------------

    def interval(self, device: Device) -> tuple[float | None, str]:
        """The expected interval in seconds and where it comes from (configured/learned)."""
        settings = self._settings(device.channel)
        if settings is not None and settings.expected_interval_seconds:
            return settings.expected_interval_seconds, "configured"
        if len(device.gaps) >= LEARN_AFTER:
            return statistics.median(device.gaps), "learned"
        return None, "learning"

    def _silent_after(self, device: Device) -> float:
        settings = self._settings(device.channel)
        return settings.silent_after if settings is not None else 3.0

    def _window(self, device: Device) -> float:
        settings = self._settings(device.channel)
        return settings.window_seconds if settings is not None else 3600.0

    def overdue(self, device: Device, now: float) -> bool:
        """Silent for longer than ``silent_after`` expected intervals at ``now``."""
        interval, _ = self.interval(device)
        if interval is None:
            return False
        return now - device.last_seen > self._silent_after(device) * interval

    def check(self) -> list[Device]:
        """Mark devices that just went silent (logged once each); returns them."""
        now = self._clock.seconds()
        newly: list[Device] = []
        for key, device in self._devices.items():
            if device.state != "silent" and self.overdue(device, now):
                device.state = "silent"
                device.silent_since = now
                self._dirty.add(key)
                newly.append(device)
                log.warn("device {device} on channel {channel} (unit {unit}) silent for "
                         "{seconds:.0f} s", device=device.device, channel=device.channel,
                         unit=device.unit or "-", seconds=now - device.last_seen)
        return newly

    def completeness(self, device: Device, now: float) -> Completeness:
        """Readings received ÷ expected over the window (fence posts: both ends count)."""
        start = max(now - self._window(device), device.first_seen)
        received = sum(1 for t in device.arrivals if t >= start)
        interval, _ = self.interval(device)
        if interval is None:
            return Completeness(received, 0.0)
        return Completeness(received, (now - start) / interval + 1)

    # -- output ---------------------------------------------------------------------------

    def devices(self) -> list[Device]:
        """Every tracked device, by channel and identity."""
        return [self._devices[k] for k in sorted(self._devices)]

    def describe(self, device: Device, now: float) -> dict[str, Any]:
        """One device as the API shows it: ids, unit, times, interval, completeness."""
        interval, source = self.interval(device)
        done = self.completeness(device, now)
        state = device.state
        if state != "silent" and interval is None:
            state = "learning"
        return {
            "channel": device.channel, "device": device.device, "unit": device.unit,
            "state": state, "last_seen": device.last_seen,
            "seconds_since_last": max(0.0, now - device.last_seen),
            "silent_since": device.silent_since,
            "expected_interval_seconds": interval, "interval_source": source,
            "silent_after_intervals": self._silent_after(device),
            "window_seconds": self._window(device),
            "received": done.received, "expected": round(done.expected, 2),
            "completeness": None if done.ratio is None else round(done.ratio, 4),
        }

    def units(self, now: float) -> list[dict[str, Any]]:
        """Completeness per unit: readings received ÷ expected over its devices."""
        totals: dict[str, list[float]] = {}
        for device in self._devices.values():
            done = self.completeness(device, now)
            entry = totals.setdefault(device.unit, [0, 0.0, 0, 0])
            entry[2] += 1
            entry[3] += device.state == "silent"
            if done.expected > 0:
                entry[0] += done.received
                entry[1] += done.expected
        return [{"unit": unit, "devices": int(n), "silent": int(silent), "received": int(r),
                 "expected": round(e, 2),
                 "completeness": round(min(1.0, r / e), 4) if e > 0 else None}
                for unit, (r, e, n, silent) in sorted(totals.items())]

    def silent_devices(self, now: float) -> Iterable[SilentDevice]:
        """The alerts engine's view (`DeviceSilenceProvider`): devices overdue at ``now``."""
        for device in self._devices.values():
            if self.overdue(device, now):
                interval, _ = self.interval(device)
                yield SilentDevice(device.device, now - device.last_seen, interval,
                                   device.channel)

    # -- persistence ----------------------------------------------------------------------

    def changed_rows(self) -> list[dict[str, Any]]:
        """Rows of devices changed since the last call, for the store."""
        rows = [self._row(self._devices[key]) for key in sorted(self._dirty)
                if key in self._devices]
        self._dirty.clear()
        return rows

    def _row(self, device: Device) -> dict[str, Any]:
        window_start = self._clock.seconds() - self._window(device)
        arrivals = [t for t in device.arrivals if t >= window_start]
        return {"channel": device.channel, "device": device.device, "unit": device.unit,
                "first_seen": device.first_seen, "last_seen": device.last_seen,
                "state": device.state, "silent_since": device.silent_since,
                "arrivals": json.dumps(arrivals), "gaps": json.dumps(list(device.gaps))}

    def load(self, rows: Iterable[dict[str, Any]]) -> int:
        """Take back devices from the store (at start); returns how many."""
        count = 0
        for row in rows:
            device = Device(row["channel"], row["device"], row["unit"] or "",
                            float(row["first_seen"]), float(row["last_seen"]), row["state"],
                            row["silent_since"])
            device.arrivals.extend(float(t) for t in json.loads(row["arrivals"] or "[]"))
            device.gaps.extend(float(g) for g in json.loads(row["gaps"] or "[]"))
            self._devices[(device.channel, device.device)] = device
            count += 1
        return count
