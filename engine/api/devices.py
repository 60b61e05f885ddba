"""`/api/v1/devices`: tracked devices, their silence and completeness, per device and unit.

For viewers: device identities (EUI-64, system ids) and units (PV1-3 point of care) only,
never patient data.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.api.routing import Answer, ApiRequest, Role, Route

if TYPE_CHECKING:
    from engine.service import EngineService


def routes(engine: EngineService) -> list[Route]:
    """Listing devices is for viewers."""

    async def list_devices(request: ApiRequest) -> Answer:
        data = getattr(engine, "devices", None)
        if data is None:
            return Answer(200, {"devices": [], "units": []})
        tracker = data.tracker
        now = engine.reactor.seconds()
        channel = request.query("channel")
        state = request.query("state")
        devices = [tracker.describe(d, now) for d in tracker.devices()
                   if channel in (None, "", d.channel)]
        if state:
            devices = [d for d in devices if d["state"] == state]
        return Answer(200, {"devices": devices, "units": tracker.units(now)})

    return [Route("GET", "devices", list_devices, Role.VIEWER,
                  "Tracked devices: last seen, expected interval, silence, completeness "
                  "per device and per unit (?channel=, ?state=silent)")]
