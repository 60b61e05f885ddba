"""Deployed channels: their sources, pipelines and destination queues, changed live.

Deploy starts a channel's queues and then its source; undeploy stops the source first
and then lets the queues finish what is in flight, so nothing acknowledged is left
behind. Pause stops the source and the sending, keeping everything stored; resume
restarts both. `apply` brings the running set in line with a freshly loaded catalog
(the SIGHUP and `interlink channels reload` path): new files deploy, changed files
redeploy, removed files undeploy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger

from channels.catalog import Catalog, LoadedChannel
from channels.destinations.base import Destination
from channels.destinations.registry import ChannelLinkConfig, build_destination
from channels.model import ChannelConfig, DestinationSpec, MLLPListenerConfig, MLLPSourceConfig
from channels.pipeline import ChannelPipeline
from channels.sources.file import FileSource, FileSourceConfig
from channels.sources.http import HTTPSourceConfig, listen_http
from engine.delivery.queue import DestinationQueue, Fetch, FinalHook, OnExhausted, QueueMonitor
from engine.delivery.retry import RetryPolicy
from engine.link import ChannelLink
from mllp.endpoints import server_endpoint
from mllp.server import MLLPServerFactory

log = Logger()

Fetcher = Callable[[str, str], Fetch]
MonitorFor = Callable[[str, str], QueueMonitor]
ReceiverFor = Callable[[str], Any]


class State(StrEnum):
    """What a channel is doing."""

    DEPLOYED = "deployed"
    PAUSED = "paused"


@dataclass(slots=True)
class DeployedChannel:
    """One channel at run time."""

    loaded: LoadedChannel
    queues: dict[str, DestinationQueue] = field(default_factory=dict)
    state: State = State.DEPLOYED
    port: Any = None
    file_source: FileSource | None = None

    @property
    def config(self) -> ChannelConfig:
        return self.loaded.config


def listen_mllp(reactor: Any, config: MLLPListenerConfig, handler: Any) -> defer.Deferred[Any]:
    """Start an MLLP listener (the engine's own or a channel's) for a frame handler."""
    factory = MLLPServerFactory(
        handler, max_frame_bytes=config.max_frame_bytes,
        idle_timeout=config.idle_timeout_seconds,
        max_connections=config.max_connections, clock=reactor)
    factory.noisy = False
    tls = config.tls.settings() if config.tls is not None else None
    endpoint = server_endpoint(reactor, config.endpoint_description(), tls)
    return defer.ensureDeferred(endpoint.listen(factory))


def retry_policy(spec: DestinationSpec) -> RetryPolicy:
    """The queue's retry policy from a destination's `retry:` block."""
    r = spec.retry
    return RetryPolicy(r.initial_seconds, r.multiplier, r.max_seconds, r.jitter,
                       r.max_attempts, r.max_age_seconds)


class Deployment:
    """The channels this node runs; see the module docstring."""

    def __init__(self, *, reactor: Any, fetcher: Fetcher, record: Any, submit: Any,
                 route: Callable[[int, str, bytes], None], receiver_for: ReceiverFor,
                 on_final: FinalHook | None = None, shared_store: bool = False,
                 monitor_for: MonitorFor | None = None) -> None:
        self._reactor = reactor
        self._fetcher = fetcher
        self._record = record
        self._submit = submit
        self._route = route
        self._receiver_for = receiver_for
        self._on_final = on_final
        self._shared_store = shared_store
        self._monitor_for = monitor_for
        self.channels: dict[str, DeployedChannel] = {}

    # -- lookups the router and the admin API use -----------------------------------------

    def pipeline(self, channel: str) -> ChannelPipeline | None:
        deployed = self.channels.get(channel)
        return deployed.loaded.pipeline if deployed is not None else None

    def is_deployed(self, channel: str) -> bool:
        return channel in self.channels

    def wake(self, channel: str, destinations: Any = None, *, rescan: bool = False) -> None:
        """Tell a channel's queues that rows were QUEUED for them."""
        deployed = self.channels.get(channel)
        if deployed is None:
            return
        for name, queue in deployed.queues.items():
            if destinations is None or name in destinations:
                queue.wake(rescan=rescan)

    def wake_all(self) -> None:
        """After a reprocess: every queue reads its table again from the start."""
        for channel in self.channels:
            self.wake(channel, rescan=True)

    # -- changing what runs ---------------------------------------------------------------

    async def deploy(self, loaded: LoadedChannel) -> None:
        """Start a channel (queues first, then the source); redeploys if already running."""
        if loaded.name in self.channels:
            await self.undeploy(loaded.name)
        deployed = DeployedChannel(loaded)
        for spec in loaded.config.destinations:
            if spec.enabled:
                deployed.queues[spec.name] = self._queue(loaded.name, spec)
        self.channels[loaded.name] = deployed
        for queue in deployed.queues.values():
            queue.start()
        try:
            await self._start_source(deployed)
        except Exception:
            await self.undeploy(loaded.name)
            raise
        log.info("channel {channel} deployed from {file}", channel=loaded.name,
                 file=str(loaded.file))

    async def undeploy(self, name: str) -> None:
        """Stop the source, then the queues once their sends in flight are settled."""
        deployed = self.channels.pop(name, None)
        if deployed is None:
            return
        await self._stop_source(deployed)
        # Queues settle side by side: each may wait out its grace period for a dead peer.
        await defer.gatherResults([q.stop() for q in deployed.queues.values()])
        log.info("channel {channel} undeployed", channel=name)

    async def pause(self, name: str) -> None:
        """Stop taking and sending messages; everything stored stays where it is."""
        deployed = self.channels[name]
        if deployed.state is State.PAUSED:
            return
        deployed.state = State.PAUSED
        await self._stop_source(deployed)
        for queue in deployed.queues.values():
            queue.pause()
        log.info("channel {channel} paused", channel=name)

    async def resume(self, name: str) -> None:
        """Take and send messages again after `pause`."""
        deployed = self.channels[name]
        if deployed.state is not State.PAUSED:
            return
        await self._start_source(deployed)
        deployed.state = State.DEPLOYED
        for queue in deployed.queues.values():
            queue.resume()
        log.info("channel {channel} resumed", channel=name)

    async def apply(self, catalog: Catalog) -> dict[str, list[str]]:
        """Deploy new and changed channels, undeploy removed ones; returns what changed."""
        changes: dict[str, list[str]] = {"deployed": [], "redeployed": [], "undeployed": []}
        wanted = {n: c for n, c in catalog.channels.items() if c.config.enabled}
        broken = {issue.file for issue in catalog.issues}
        for name, deployed in self.channels.items():
            if name not in wanted and str(deployed.loaded.file) in broken:
                # A typo in a running channel's file must not take the channel down.
                log.warn("channel {channel}: {file} has errors; the running version stays",
                         channel=name, file=str(deployed.loaded.file))
                wanted[name] = deployed.loaded
        for name in [n for n in self.channels if n not in wanted]:
            await self.undeploy(name)
            changes["undeployed"].append(name)
        for name, loaded in wanted.items():
            current = self.channels.get(name)
            if current is not None and current.loaded.digest == loaded.digest:
                continue
            await self.deploy(loaded)
            changes["redeployed" if current is not None else "deployed"].append(name)
        return changes

    async def stop_sources(self) -> None:
        """Stop every channel's source (first step of shutdown); queues keep running."""
        for deployed in self.channels.values():
            await self._stop_source(deployed)

    async def stop(self) -> None:
        """Undeploy everything (engine shutdown), all channels side by side."""
        await defer.gatherResults([defer.ensureDeferred(self.undeploy(name))
                                   for name in list(self.channels)])

    # -- parts ----------------------------------------------------------------------------

    def _queue(self, channel: str, spec: DestinationSpec) -> DestinationQueue:
        destination: Destination
        if isinstance(spec.to, ChannelLinkConfig):
            destination = ChannelLink(spec.name, spec.to.channel, submit=self._submit,
                                      route=self._route, deployed=self.is_deployed,
                                      clock=self._reactor)
        else:
            destination = build_destination(spec.name, spec.to, self._reactor)
        return DestinationQueue(
            channel, destination, fetch=self._fetcher(channel, spec.name),
            record=self._record, clock=self._reactor, policy=retry_policy(spec),
            on_exhausted=OnExhausted(spec.on_exhausted), on_final=self._on_final,
            shared=self._shared_store,
            monitor=self._monitor_for(channel, spec.name) if self._monitor_for else None)

    async def _start_source(self, deployed: DeployedChannel) -> None:
        source = deployed.config.source
        name = deployed.config.name
        if source is None:
            return
        receive = self._receiver_for(name)
        if isinstance(source, MLLPSourceConfig):
            deployed.port = await listen_mllp(self._reactor, source, receive)
        elif isinstance(source, HTTPSourceConfig):
            deployed.port = await listen_http(self._reactor, source,
                                              receive.frame_received)
        elif isinstance(source, FileSourceConfig):
            deployed.file_source = FileSource(source, receive.frame_received,
                                              reactor=self._reactor)
            deployed.file_source.startService()
        if deployed.port is not None:
            address = deployed.port.getHost()
            log.info("channel {channel}: {kind} source on {host}:{port}", channel=name,
                     kind=source.type, host=address.host, port=address.port)

    async def _stop_source(self, deployed: DeployedChannel) -> None:
        if deployed.port is not None:
            await deployed.port.stopListening()
            deployed.port = None
        if deployed.file_source is not None:
            await deployed.file_source.stopService()
            deployed.file_source = None

    def status(self) -> list[dict[str, Any]]:
        """Each deployed channel with its state, source and queue counters."""
        out = []
        for name, deployed in sorted(self.channels.items()):
            address = deployed.port.getHost() if deployed.port is not None else None
            out.append({
                "name": name,
                "state": deployed.state.value,
                "file": str(deployed.loaded.file),
                "source": deployed.config.source.type if deployed.config.source else None,
                "port": getattr(address, "port", None),
                "destinations": [
                    {"name": q.name, "in_memory": q.depth, "sent": q.sent,
                     "dead_lettered": q.failed, "paused": q.paused}
                    for q in deployed.queues.values()],
            })
        return out
