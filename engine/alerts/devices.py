"""What alert rules of type `device_silence` read: a device tracker's view of quiet devices.

Device tracking (last reading per device, its expected interval; `engine/devices/`) lives
elsewhere; it implements `DeviceSilenceProvider` and the engine hands its tracker to the
alert monitor. Without one, `device_silence` rules find nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True, slots=True)
class SilentDevice:
    """A device that has sent nothing for longer than expected (its id, never a patient's)."""

    device: str
    silent_seconds: float
    expected_interval_seconds: float | None = None
    channel: str | None = None


class DeviceSilenceProvider(Protocol):
    """Implemented by the device tracker; called on the reactor thread, so it must answer
    from memory."""

    def silent_devices(self, now: float) -> Iterable[SilentDevice]:
        """Devices overdue at `now` (Unix seconds)."""
        ...
