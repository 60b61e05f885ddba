"""`/api/v1/messages`: what happened to messages, and reprocessing those that failed."""

from __future__ import annotations

from typing import TYPE_CHECKING

from engine.api.routing import Answer, ApiRequest, BadRequest, Role, Route

if TYPE_CHECKING:
    from engine.service import EngineService


def routes(engine: EngineService) -> list[Route]:
    """Message operations."""

    async def reprocess(request: ApiRequest) -> Answer:
        body = request.json()
        try:
            ids = [int(i) for i in body["ids"]]
        except (ValueError, KeyError, TypeError) as exc:
            raise BadRequest('expected a JSON body {"ids": [message ids]}') from exc
        actor = request.principal.name if request.principal else "admin-api"
        return Answer(200, await engine.reprocess(ids, actor=actor))

    return [
        Route("POST", "messages/reprocess", reprocess, Role.OPERATOR,
              "Re-queue ERROR messages (or route again those that never reached a queue)"),
    ]
