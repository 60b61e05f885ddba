"""The engine's side of a source: turn what a source received into a store write."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer

from channels.mllp_source import Received
from engine.router import Router
from engine.store.status import Status
from engine.store.store import IncomingMessage, StoredMessage
from engine.writer import GroupCommitWriter


class Ingest:
    """The `commit` callable sources are given: store durably, then hand on to routing."""

    def __init__(self, writer: GroupCommitWriter, router: Router) -> None:
        self._writer = writer
        self._router = router

    def __call__(self, received: Received) -> defer.Deferred[StoredMessage]:
        d = self._writer.submit(to_incoming(received))
        return d.addCallback(self._stored)

    def _stored(self, stored: StoredMessage) -> StoredMessage:
        if stored.status is Status.RECEIVED:
            self._router.route(stored.id, stored.channel)
        return stored


def to_incoming(received: Received) -> IncomingMessage:
    """Map a source's record onto the store's row, header facts included."""
    h: Any = received.header
    msg = IncomingMessage(
        channel=received.channel,
        received_at=int(received.received_at * 1_000_000),
        peer=received.peer,
        raw=received.raw,
        ack_code=received.ack_code,
        error=received.error,
        control_id=received.salvaged_control_id,
    )
    if h is not None:
        msg.control_id = h.control_id
        msg.message_type = "^".join(p for p in (h.message_type, h.trigger_event) if p)
        msg.version = h.version
        msg.sending_application = str(h.sending_application)
        msg.sending_facility = str(h.sending_facility)
        msg.patient_id = h.patient_id
    return msg
