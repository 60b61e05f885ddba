"""The admin API's control part: channels and queues, on the engine's own reactor.

JSON over HTTP on 127.0.0.1:8575 by default. What is here carries names, states and
counts, never message content. `interlink channels …` and `interlink messages reprocess`
talk to it.

    GET  /api/v1/channels                      deployed channels, states, queue depths
    POST /api/v1/channels/reload               re-read channel files (as SIGHUP does)
    POST /api/v1/channels/NAME/deploy          deploy (or redeploy) one channel file
    POST /api/v1/channels/NAME/pause|resume|undeploy
    POST /api/v1/messages/reprocess            body {"ids": [1, 2]}: re-queue ERROR messages
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.web import resource, server

from channels.catalog import load_catalog

if TYPE_CHECKING:
    from engine.service import EngineService

log = Logger()

Handler = Callable[[server.Request], Awaitable[tuple[int, Any]]]


class ControlAPI(resource.Resource):
    """Routes `/api/v1/...` requests to the engine's operations."""

    isLeaf = True

    def __init__(self, engine: EngineService) -> None:
        super().__init__()
        self.engine = engine

    def render(self, request: server.Request) -> int:
        d = defer.ensureDeferred(self._dispatch(request))
        d.addCallback(lambda answer: self._write(request, *answer))
        d.addErrback(self._failed, request)
        return server.NOT_DONE_YET

    def _failed(self, failure: Any, request: server.Request) -> None:
        log.error("admin request {path} failed: {kind}", path=request.path.decode(),
                  kind=failure.type.__name__)
        self._write(request, 500, {"error": failure.type.__name__})

    @staticmethod
    def _write(request: server.Request, code: int, body: Any) -> None:
        if request.finished or request._disconnected:
            return
        request.setResponseCode(code)
        request.setHeader(b"content-type", b"application/json")
        request.write(json.dumps(body, indent=1).encode() + b"\n")
        request.finish()

    async def _dispatch(self, request: server.Request) -> tuple[int, Any]:
        parts = [p.decode() for p in request.postpath if p]
        method = request.method.decode()
        if parts[:2] != ["api", "v1"]:
            return 404, {"error": "not found"}
        parts = parts[2:]
        if parts == ["channels"] and method == "GET":
            return 200, await self._channels()
        if parts == ["channels", "reload"] and method == "POST":
            return 200, await self.engine.reload()
        if len(parts) == 3 and parts[0] == "channels" and method == "POST":
            return await self._channel_action(parts[1], parts[2])
        if parts == ["messages", "reprocess"] and method == "POST":
            return await self._reprocess(request)
        return 404, {"error": "not found"}

    async def _channels(self) -> dict[str, Any]:
        engine = self.engine
        assert engine.deployment is not None and engine.store is not None
        depths = await engine._read(engine.store.queue_depths)
        channels = engine.deployment.status()
        for channel in channels:
            for dest in channel["destinations"]:
                dest["queued"] = depths.get((channel["name"], dest["name"]), 0)
        return {"node": engine.node_id, "channels": channels}

    async def _channel_action(self, name: str, action: str) -> tuple[int, Any]:
        deployment = self.engine.deployment
        assert deployment is not None
        if action == "deploy":
            catalog = load_catalog(self.engine.config.channels_dir)
            loaded = catalog.channels.get(name)
            if loaded is None:
                problems = [str(i) for i in catalog.issues]
                return 404, {"error": f"no valid channel file for {name}", "issues": problems}
            await deployment.deploy(loaded)
            return 200, {"channel": name, "state": "deployed"}
        if name not in deployment.channels:
            return 404, {"error": f"channel {name} is not deployed"}
        operations = {"pause": (deployment.pause, "paused"),
                      "resume": (deployment.resume, "deployed"),
                      "undeploy": (deployment.undeploy, "undeployed")}
        if action not in operations:
            return 404, {"error": f"unknown action {action}"}
        operation, state = operations[action]
        await operation(name)
        return 200, {"channel": name, "state": state}

    async def _reprocess(self, request: server.Request) -> tuple[int, Any]:
        try:
            body = json.loads(request.content.read() or b"{}")
            ids = [int(i) for i in body["ids"]]
        except (ValueError, KeyError, TypeError):
            return 400, {"error": 'expected a JSON body {"ids": [message ids]}'}
        return 200, await self.engine.reprocess(ids, actor="admin-api")


def listen_admin(engine: EngineService) -> defer.Deferred[Any]:
    """Listen for the admin API on the configured interface and port."""
    from twisted.internet.endpoints import TCP4ServerEndpoint

    admin = engine.config.admin
    root = ControlAPI(engine)
    site = server.Site(root)
    site.noisy = False
    endpoint = TCP4ServerEndpoint(engine.reactor, admin.port, interface=admin.interface)
    return endpoint.listen(site)
