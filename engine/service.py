"""The running engine as a Twisted service tree: store writer, router, listeners.

Start order: open the store, start the writer, recover unrouted messages, then listen.
Stop order is the reverse, so nothing that was acknowledged is left behind: stop
accepting, let in-flight messages commit and be answered, record routing, close the store.
"""

from __future__ import annotations

from typing import Any

from twisted.application.service import Service
from twisted.internet import defer
from twisted.logger import Logger

from channels.ids import ControlIdSource
from channels.mllp_source import MLLPSource
from engine.config import EngineConfig
from engine.ingest import Ingest
from engine.router import Router
from engine.store.store import Store, open_store
from engine.writer import GroupCommitWriter
from mllp.endpoints import TLSSettings, server_endpoint
from mllp.server import MLLPServerFactory

log = Logger()


class EngineService(Service):
    """One Interlink node: everything `interlink run` starts and stops."""

    def __init__(self, config: EngineConfig, reactor: Any) -> None:
        self.config = config
        self.reactor = reactor
        self.store: Store | None = None
        self.writer: GroupCommitWriter | None = None
        self.router: Router | None = None
        self.factory: MLLPServerFactory | None = None
        self.port: Any = None
        self.ready: defer.Deferred[None] = defer.Deferred()

    def startService(self) -> None:
        super().startService()
        d = defer.ensureDeferred(self._start())
        d.addCallbacks(self.ready.callback, self.ready.errback)

    async def _start(self) -> None:
        cfg = self.config
        cfg.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = open_store(cfg.store_url(),
                                duplicate_window_s=cfg.store.duplicate_window_seconds)
        self.writer = GroupCommitWriter(self.store, self.reactor)
        self.writer.start()
        self.router = Router(self.writer.transition, self.reactor)
        self.router.recover(self.store)
        source = MLLPSource(
            cfg.mllp.channel,
            Ingest(self.writer, self.router),
            clock=self.reactor,
            control_ids=ControlIdSource(self.reactor.seconds()),
            sender=(cfg.sender_application, cfg.sender_facility),
        )
        self.factory = MLLPServerFactory(
            source,
            max_frame_bytes=cfg.mllp.max_frame_bytes,
            idle_timeout=cfg.mllp.idle_timeout_seconds,
            max_connections=cfg.mllp.max_connections,
            clock=self.reactor,
        )
        self.factory.noisy = False
        tls = None
        if cfg.mllp.tls is not None:
            t = cfg.mllp.tls
            tls = TLSSettings(t.certificate, t.private_key, t.ca_certificates,
                              t.require_client_certificate)
        endpoint = server_endpoint(self.reactor, cfg.mllp.endpoint_description(), tls)
        self.port = await endpoint.listen(self.factory)
        address = self.port.getHost()
        log.info("MLLP listening on {host}:{port} for channel {channel}",
                 host=address.host, port=address.port, channel=cfg.mllp.channel)

    def stopService(self) -> defer.Deferred[None]:
        super().stopService()
        return defer.ensureDeferred(self._stop())

    async def _stop(self) -> None:
        if self.port is not None:
            await self.port.stopListening()
            log.info("stopped accepting connections")
        if self.writer is not None:
            await self.writer.drain()
        if self.router is not None:
            await self.router.drain()
        if self.writer is not None:
            await self.writer.stop()
        log.info("store closed; stopped cleanly")
