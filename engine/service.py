"""The running engine as a Twisted service: store, writer, router, channels, listeners.

Start order: open the store, start the writer, deploy the channel files (queues, then
sources), route what an earlier run left RECEIVED, listen on the engine's own MLLP port,
then the admin API. Stop order is the reverse, so nothing that was acknowledged is left
behind: stop accepting, let in-flight messages commit and be answered, record routing,
let queues settle what is in flight, close the store.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger

from channels.catalog import load_catalog
from channels.ids import ControlIdSource
from channels.mllp_source import MLLPSource
from engine.access.gate import AccessGate
from engine.alerts.monitor import AlertMonitor
from engine.alerts.receivers import build_receivers, receiver_names
from engine.audit import AuditEvent
from engine.config import EngineConfig
from engine.delivery.queue import StoreQueue
from engine.deployment import Deployment, listen_mllp
from engine.devices.service import DeviceData
from engine.ingest import Ingest
from engine.metrics import EngineMetrics, listener_connections
from engine.retention.job import RetentionJob
from engine.router import Router
from engine.store.deliveries import Routing
from engine.store.ownership import StoreLock, is_embedded
from engine.store.queue_stats import queue_stats
from engine.store.status import ContentKind, Status
from engine.store.store import Store, now_us, open_store
from engine.threads import DaemonThreadPool
from engine.watch import DeliveryWatch
from engine.workers.pool import PipelineWorkers
from engine.writer import GroupCommitWriter

log = Logger()


def default_node_id() -> str:
    """Host name and process id: unique among nodes sharing one PostgreSQL store."""
    return f"{socket.gethostname()}-{os.getpid()}"


class EngineService(Service):
    """One Interlink node: everything `interlink run` starts and stops."""

    def __init__(self, config: EngineConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.node_id = config.node_id or default_node_id()
        self.store: Store | None = None
        self.writer: GroupCommitWriter | None = None
        self.workers: PipelineWorkers | None = None
        self.router: Router | None = None
        self.deployment: Deployment | None = None
        self.watch = DeliveryWatch(reactor)
        self.port: Any = None
        self.admin_port: Any = None
        self.retention: RetentionJob | None = None
        self._readers = DaemonThreadPool(minthreads=1, maxthreads=2, name="store-reader")
        self._control_ids = ControlIdSource(reactor.seconds())
        self.ready: defer.Deferred[None] = defer.Deferred()
        self._store_lock = StoreLock(config.data_dir)
        self.access = AccessGate(self)
        self.metrics = EngineMetrics(reactor, open_connections=self._open_connections)
        self.alerts: AlertMonitor | None = None
        self.devices: DeviceData | None = None

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self.ready.errback)

    # -- wiring ---------------------------------------------------------------------------

    def _read(self, fn: Any, *args: Any, **kwargs: Any) -> defer.Deferred[Any]:
        """Run a store read on the reader threads, never on the reactor."""
        return deferToThreadPool(self.reactor, self._readers, fn, *args, **kwargs)

    def _fetcher(self, channel: str, destination: str) -> StoreQueue:
        """A destination queue's reads and lane leases, on the store-reader threads."""
        assert self.store is not None
        return StoreQueue(self.store, self._read, channel, destination, self.node_id)

    def source_for(self, channel: str) -> MLLPSource:
        """The receiving logic (ACK after commit) shared by every source of a channel."""
        assert self.writer is not None and self.router is not None
        ingest = Ingest(self.writer, self.router, self._confirmation(channel))
        cfg = self.config
        return MLLPSource(channel, ingest, clock=self.reactor, control_ids=self._control_ids,
                          sender=(cfg.sender_application, cfg.sender_facility),
                          on_answer=self.metrics.channel(channel).answered,
                          screen=self._screen(channel))

    def _screen(self, channel: str) -> Any:
        """The deployed channel's device data rules that reject before the ACK."""
        def screen(raw: bytes) -> Any:
            pipeline = self.deployment.pipeline(channel) if self.deployment else None
            return pipeline.screen(raw) if pipeline is not None else ()

        return screen

    def _device_settings(self, channel: str) -> Any:
        """A channel's `pcd.devices` settings (None when it does not track devices)."""
        deployed = self.deployment.channels.get(channel) if self.deployment else None
        pcd = deployed.config.pcd if deployed is not None else None
        return pcd.devices if pcd is not None else None

    def _confirmation(self, channel: str) -> Any:
        """For `response: after_delivery` channels, what the ACK waits for after commit."""
        def wait(message_id: int) -> defer.Deferred[bool] | None:
            deployment = self.deployment
            deployed = deployment.channels.get(channel) if deployment else None
            if deployed is None or deployed.config.response.mode != "after_delivery":
                return None
            waiting = self.watch.wait(message_id, deployed.config.response.timeout_seconds)
            return waiting.addCallback(self._record_undelivered, message_id)

        return wait

    def _record_undelivered(self, delivered: bool, message_id: int) -> Any:
        """Before a sender hears AE for a message, the store learns it too (so a resend
        is routed again, not answered AA as a duplicate); the answer waits for that."""
        if delivered or self.writer is None or self.store is None:
            return delivered
        d = self.writer.answer_not_delivered([message_id])
        d.addErrback(lambda failure: log.error(
            "could not record the AE answer of message {id}: {kind}", id=message_id,
            kind=failure.type.__name__))
        return d.addCallback(lambda _: False)

    async def _start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        if is_embedded(cfg.store_url()):
            self._store_lock.acquire()
        receivers = build_receivers(cfg.alerts, self.reactor)
        self._readers.start()
        self.store = open_store(cfg.store_url(),
                                duplicate_window_s=cfg.store.duplicate_window_seconds)
        self.writer = GroupCommitWriter(self.store, self.reactor,
                                        on_commit=self.metrics.committed)
        self.writer.start()
        if self.store.shared:
            store = self.store
            self.watch.follow_store(lambda ids: self._read(store.final_deliveries, ids))
        deployment = self.deployment = Deployment(
            reactor=self.reactor, fetcher=self._fetcher, record=self.writer.record,
            submit=self.writer.submit, route=self._route, receiver_for=self.source_for,
            on_final=self.watch.delivery_final, shared_store=self.store.shared,
            monitor_for=self.metrics.destination)
        devices = self.devices = DeviceData(self.reactor, self.store, self.writer.call,
                                            self._read, self._device_settings)
        if cfg.pipeline_workers:
            self.workers = PipelineWorkers(self.reactor, cfg.pipeline_workers, lambda: {
                name: d.config for name, d in deployment.channels.items()})
            self.workers.start()
        self.router = Router(self.writer.route, self.reactor, deployment.pipeline,
                             self._routed, claim=devices.claim,
                             sighted=devices.tracker.sighted, workers=self.workers)
        await devices.start()
        await self.reload()
        self.router.recover(self.store)
        store = self.store
        self.metrics.start(lambda: self._read(queue_stats, store))
        self.alerts = AlertMonitor(cfg.alerts, self.metrics, receivers, clock=self.reactor,
                                   node=self.node_id, devices=lambda: devices.tracker)
        self.alerts.start()
        if cfg.alerts.rules:
            log.info("alerts: {n} rules to {receivers}", n=len(cfg.alerts.rules),
                     receivers=", ".join(receiver_names(receivers)))
        self.port = await listen_mllp(self.reactor, cfg.mllp, self.source_for(cfg.mllp.channel))
        address = self.port.getHost()
        log.info("MLLP listening on {host}:{port} for channel {channel}",
                 host=address.host, port=address.port, channel=cfg.mllp.channel)
        from engine.admin import listen_admin

        self.retention = RetentionJob(self)
        self.retention.start()
        self.admin_port = await listen_admin(self)
        address = self.admin_port.getHost()
        log.info("admin API on {scheme}://{host}:{port}/api/v1/", host=address.host,
                 port=address.port, scheme="https" if cfg.admin.tls else "http")

    def _open_connections(self) -> dict[str, int]:
        """Open MLLP connections per channel: the engine's listener and channel sources."""
        counts: dict[str, int] = {}
        if self.port is not None:
            counts[self.config.mllp.channel] = listener_connections(self.port)
        for name, deployed in (self.deployment.channels.items() if self.deployment else ()):
            if deployed.port is not None and deployed.config.source is not None \
                    and deployed.config.source.type == "mllp":
                counts[name] = counts.get(name, 0) + listener_connections(deployed.port)
        return counts

    def _route(self, message_id: int, channel: str, raw: bytes) -> None:
        assert self.router is not None
        self.router.route(message_id, channel, raw)

    def _routed(self, routings: Sequence[Routing]) -> None:
        """Routing committed: wake the queues that got rows, tell waiting senders."""
        assert self.deployment is not None
        queued: dict[str, set[str]] = {}
        for r in routings:
            for d in r.deliveries:
                if d.status is Status.QUEUED:
                    queued.setdefault(r.channel, set()).add(d.destination)
        for channel, destinations in queued.items():
            self.deployment.wake(channel, destinations)
        self.watch.routed(routings)

    # -- operations the admin API and signals call ----------------------------------------

    async def reload(self) -> dict[str, Any]:
        """Re-read the channel files; deploy what is new or changed, undeploy what is gone."""
        assert self.deployment is not None
        cfg = self.config
        catalog = load_catalog(cfg.channels_dir, listeners={
            f"tcp:{cfg.mllp.port}": "the engine's MLLP listener",
            f"tcp:{cfg.admin.port}": "the admin API"})
        for issue in catalog.issues:
            log.error("channel file problem: {issue}", issue=str(issue))
        changes = await self.deployment.apply(catalog)
        if any(changes.values()):
            log.info("channels: {changes}", changes=changes)
        return {"changes": changes, "issues": [str(i) for i in catalog.issues]}

    async def reprocess(self, message_ids: Sequence[int], actor: str) -> dict[str, list[int]]:
        """Re-queue ERROR messages; those that never reached a queue are routed again."""
        assert self.writer is not None and self.store is not None
        assert self.router is not None and self.deployment is not None
        store = self.store
        requeued, reroute = await self.writer.call(store.reprocess, list(message_ids), actor)
        for mid in reroute:
            rows = await self._read(store.list_messages, message_id=mid, limit=1)
            raw = await self._read(store.content, mid, ContentKind.RAW)
            if rows:
                self.router.route(mid, rows[0]["channel"], raw or b"")
        self.deployment.wake_all()
        return {"requeued": requeued, "rerouted": reroute,
                "unchanged": [i for i in message_ids if i not in requeued + reroute]}

    async def audit_action(self, actor: str, action: str, *, peer: str = "",
                           message_id: int | None = None, channel: str | None = None,
                           detail: dict[str, Any] | None = None) -> None:
        """Put one human action (login, view, search, deploy…) on the audit chain.

        `detail` carries ids and parameters, never message content (promise 6).
        """
        assert self.writer is not None and self.store is not None
        event = AuditEvent(now_us(), actor, action, message_id, channel,
                           {"peer": peer, **(detail or {})})
        await self.writer.call(self.store.append_audit, [event])

    # -- stopping -------------------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        self.metrics.stop()
        if self.alerts is not None:
            self.alerts.stop()
        if self.admin_port is not None:
            await self.admin_port.stopListening()
        if self.retention is not None:
            await self.retention.stop()
        self.access.forget_local_token()
        if self.port is not None:
            await self.port.stopListening()
        if self.deployment is not None:
            await self.deployment.stop_sources()
        log.info("stopped accepting messages")
        if self.writer is not None:
            await self.writer.drain()
        if self.router is not None:
            await self.router.drain()
        if self.workers is not None:
            await self.workers.stop()
        if self.devices is not None:
            await self.devices.stop()
        if self.deployment is not None:
            await self.deployment.stop()
        self.watch.stop()
        if self.writer is not None:
            await self.writer.stop()
        self._readers.stop()
        self._store_lock.release()
        log.info("store closed; stopped cleanly")
