"""`/metrics`, `/healthz` and `/readyz` beside the API, for Prometheus and load balancers.

`/metrics` is the Prometheus text format, unauthenticated like most exporters unless
`access.metrics_require_token` is set: it carries names and numbers, never message
content. `/healthz` answers while the process runs; `/readyz` answers 200 only when the
store answers a trivial query, the writer runs and channels are deployed, and 503 with the
reason otherwise.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from engine.metrics import CONTENT_TYPE
from engine.store.queue_stats import ping

if TYPE_CHECKING:
    from engine.service import EngineService

log = Logger()
STORE_TIMEOUT_SECONDS = 2.0


class MetricsPage(resource.Resource):
    """The engine's registry in the Prometheus text format (rendered from memory)."""

    isLeaf = True

    def __init__(self, engine: EngineService) -> None:
        super().__init__()
        self._engine = engine

    def render_GET(self, request: server.Request) -> bytes | int:
        if not self._engine.config.access.metrics_require_token:
            return self._exposition(request)
        d = defer.ensureDeferred(self._engine.access.authenticate(request))
        d.addCallbacks(self._answer, self._failed, callbackArgs=(request,),
                       errbackArgs=(request,))
        return server.NOT_DONE_YET

    def _answer(self, principal: Any, request: server.Request) -> None:
        if principal is None:
            request.setHeader(b"www-authenticate", b'Bearer realm="interlink"')
            self._finish(request, _json(request, 401, {"error": "an API token is required"}))
        else:
            self._finish(request, self._exposition(request))

    def _failed(self, failure: Any, request: server.Request) -> None:
        log.error("could not check a /metrics caller: {kind}", kind=failure.type.__name__)
        self._finish(request, _json(request, 503, {"error": "cannot check the token now"}))

    @staticmethod
    def _finish(request: server.Request, body: bytes) -> None:
        if not request._disconnected:  # type: ignore[attr-defined]
            request.write(body)
            request.finish()

    def _exposition(self, request: server.Request) -> bytes:
        request.setHeader(b"content-type", CONTENT_TYPE.encode())
        request.setHeader(b"cache-control", b"no-store")
        return bytes(self._engine.metrics.exposition())


class HealthPage(resource.Resource):
    """The process is alive and its reactor turns."""

    isLeaf = True

    def render_GET(self, request: server.Request) -> bytes:
        return _json(request, 200, {"status": "alive"})


class ReadyPage(resource.Resource):
    """Ready to take traffic: store answers, writer runs, channels deployed."""

    isLeaf = True

    def __init__(self, engine: EngineService) -> None:
        super().__init__()
        self._engine = engine

    def render_GET(self, request: server.Request) -> int:
        d = defer.ensureDeferred(not_ready_because(self._engine))

        def answer(reason: str | None) -> None:
            if request._disconnected:
                return
            body = ({"status": "ready"} if reason is None
                    else {"status": "not ready", "reason": reason})
            request.write(_json(request, 200 if reason is None else 503, body))
            request.finish()

        d.addCallback(answer)
        return server.NOT_DONE_YET


async def not_ready_because(engine: EngineService) -> str | None:
    """Why the engine should not get traffic yet (None when it is ready)."""
    if not engine.ready.called or engine.store is None:
        return "starting"
    writer = engine.writer
    if writer is None or not writer.running:
        return "the store writer is not running"
    try:
        check = engine._read(ping, engine.store)
        check.addTimeout(STORE_TIMEOUT_SECONDS, engine.reactor)
        await check
    except defer.TimeoutError:
        return f"the store did not answer within {STORE_TIMEOUT_SECONDS:g} s"
    except Exception as error:  # the driver's text may name hosts; the type is enough
        return f"the store did not answer: {type(error).__name__}"
    deployment = engine.deployment
    if deployment is None or not deployment.channels:
        return "no channels deployed"
    return None


def _json(request: server.Request, status: int, body: Any) -> bytes:
    request.setResponseCode(status)
    request.setHeader(b"content-type", b"application/json")
    request.setHeader(b"cache-control", b"no-store")
    return json.dumps(body).encode() + b"\n"


def mounts(engine: EngineService) -> dict[bytes, resource.Resource]:
    """Top-level resources of the admin listener."""
    return {b"metrics": MetricsPage(engine), b"healthz": HealthPage(),
            b"readyz": ReadyPage(engine)}
