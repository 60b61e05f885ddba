"""`/api/v1/channels`: the deployed channels, their states and queues; deploy and friends."""

from __future__ import annotations

from typing import TYPE_CHECKING

from channels.catalog import load_catalog
from engine.api.routing import Answer, ApiRequest, NotFound, Role, Route

if TYPE_CHECKING:
    from engine.service import EngineService


def routes(engine: EngineService) -> list[Route]:
    """Channel operations: listing is for viewers, changing them for administrators."""

    async def list_channels(request: ApiRequest) -> Answer:
        assert engine.deployment is not None and engine.store is not None
        depths = await engine._read(engine.store.queue_depths)
        channels = engine.deployment.status()
        for channel in channels:
            for dest in channel["destinations"]:
                dest["queued"] = depths.get((channel["name"], dest["name"]), 0)
        return Answer(200, {"node": engine.node_id, "channels": channels})

    async def reload(request: ApiRequest) -> Answer:
        return Answer(200, await engine.reload())

    async def deploy(request: ApiRequest) -> Answer:
        assert engine.deployment is not None
        name = request.params["name"]
        catalog = load_catalog(engine.config.channels_dir)
        loaded = catalog.channels.get(name)
        if loaded is None:
            problems = [str(i) for i in catalog.issues]
            return Answer(404, {"error": f"no valid channel file for {name}",
                                "issues": problems})
        await engine.deployment.deploy(loaded)
        return Answer(200, {"channel": name, "state": "deployed"})

    def action(operation: str, state: str) -> Route:
        async def handle(request: ApiRequest) -> Answer:
            deployment = engine.deployment
            assert deployment is not None
            name = request.params["name"]
            if name not in deployment.channels:
                raise NotFound(f"channel {name} is not deployed")
            await getattr(deployment, operation)(name)
            return Answer(200, {"channel": name, "state": state})

        return Route("POST", f"channels/{{name}}/{operation}", handle, Role.ADMIN,
                     f"{operation.capitalize()} a deployed channel")

    return [
        Route("GET", "channels", list_channels, Role.VIEWER,
              "Deployed channels with states and queue depths"),
        Route("POST", "channels/reload", reload, Role.ADMIN,
              "Re-read the channel files (as SIGHUP does)"),
        Route("POST", "channels/{name}/deploy", deploy, Role.ADMIN,
              "Deploy (or redeploy) one channel file"),
        action("pause", "paused"),
        action("resume", "deployed"),
        action("undeploy", "undeployed"),
    ]
