"""`/api/v1/channels`: the deployed channels, their states and queues; deploy and friends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from channels.catalog import load_catalog
from engine.api.routing import Answer, ApiRequest, NotFound, Role, Route
from engine.store.queue_stats import queue_stats

if TYPE_CHECKING:
    from engine.service import EngineService


def routes(engine: EngineService) -> list[Route]:
    """Channel operations: listing is for viewers, changing them for administrators."""

    async def list_channels(request: ApiRequest) -> Answer:
        assert engine.deployment is not None and engine.store is not None
        stats = await engine._read(queue_stats, engine.store)
        channels = engine.deployment.status()
        for channel in channels:
            add_counters(engine, channel, stats)
        since = datetime.fromtimestamp(engine.metrics.started_at, UTC)
        return Answer(200, {"node": engine.node_id, "since": since.isoformat(),
                            "channels": channels})

    async def audited(request: ApiRequest, action: str, channel: str | None = None,
                      **detail: Any) -> None:
        """A configuration change on the audit chain: who, from where, which channel."""
        who = request.principal.name if request.principal else "admin-api"
        await engine.audit_action(who, action, peer=request.peer, channel=channel,
                                  detail=detail)

    async def reload(request: ApiRequest) -> Answer:
        result = await engine.reload()
        await audited(request, "channels.reload", **{
            kind: ",".join(sorted(names)) for kind, names in result["changes"].items()})
        return Answer(200, result)

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
        await audited(request, "channel.deploy", name)
        return Answer(200, {"channel": name, "state": "deployed"})

    def action(operation: str, state: str) -> Route:
        async def handle(request: ApiRequest) -> Answer:
            deployment = engine.deployment
            assert deployment is not None
            name = request.params["name"]
            if name not in deployment.channels:
                raise NotFound(f"channel {name} is not deployed")
            await getattr(deployment, operation)(name)
            await audited(request, f"channel.{operation}", name)
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


def add_counters(engine: EngineService, channel: dict[str, Any], stats: Any) -> None:
    """Counters since this engine started and queue figures, onto one channel's status.

    `queued` and `oldest_queued_age_seconds` come from the store (every node's queue);
    `sent` and `errored` are this node's deliveries since it started, and the channel's
    `sent` is the sum over its destinations (deliveries, not messages).
    """
    metrics = engine.metrics
    counts = metrics.channel(channel["name"])
    now_us = metrics.now_us()
    sent = 0
    for dest in channel["destinations"]:
        stat = stats.get((channel["name"], dest["name"]))
        done = metrics.destination(channel["name"], dest["name"])
        dest["queued"] = stat.depth if stat else 0
        dest["oldest_queued_age_seconds"] = (
            round(stat.oldest_age_seconds(now_us), 3) if stat else 0.0)
        dest["sent"] = done.sent
        dest["errored"] = done.errored
        sent += done.sent
    channel["counters"] = {"received": counts.received, "filtered": counts.filtered,
                           "sent": sent, "errored": counts.errored,
                           "duplicates": counts.duplicates}
