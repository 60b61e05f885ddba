"""`/api/v1/retention/prune`: run the pruning job now, with its progress streamed.

Administrators only. The answer is JSON lines: one per batch (`{"after_id", "messages"}`,
the messages pruned so far) and a last one with the counts per channel, which is also
what the `retention.pruned` audit event records.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

from engine.api.routing import Answer, ApiRequest, Role, Route, Streamed
from engine.retention.prune import Tally

if TYPE_CHECKING:
    from engine.service import EngineService


def routes(engine: EngineService) -> list[Route]:
    """Running retention on demand."""

    async def prune(request: ApiRequest) -> Answer:
        job = engine.retention
        if job is None:
            return Answer(503, {"error": "the engine is not running"})
        if job.busy:
            return Answer(409, {"error": "a retention run is already going"})
        steps = job.steps()

        async def lines() -> AsyncIterator[bytes]:
            total = Tally()
            try:
                async for step in steps:
                    total.merge(step.tally)
                    yield json.dumps({"after_id": step.after_id,
                                      "messages": total.messages}).encode() + b"\n"
            finally:
                # A caller who leaves does not cut the run short: it finishes and is
                # audited either way.
                async for _ in steps:
                    pass
            yield json.dumps({"done": True, "messages": total.messages,
                              "channels": total.channels}).encode() + b"\n"

        return Answer(200, Streamed(lines()), content_type="application/x-ndjson")

    return [Route("POST", "retention/prune", prune, Role.ADMIN,
                  "Prune old message contents now (metadata and audit stay); progress "
                  "streamed as JSON lines", produces="application/x-ndjson")]
