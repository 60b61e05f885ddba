"""The engine's side of a source: turn what a source received into a store write."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from channels.mllp_source import DELIVERY_UNCONFIRMED, Received
from engine.router import Router
from engine.store.status import Status
from engine.store.store import IncomingMessage, StoredMessage
from engine.writer import GroupCommitWriter
from profiles.hl7.header import Header

Confirmation = Callable[[int], "defer.Deferred[bool] | None"]


class Ingest:
    """The `commit` callable sources are given: store durably, then hand on to routing.

    With a `confirm` hook (channels answering after delivery) the Deferred fires only
    when the hook's does, with `DELIVERY_UNCONFIRMED` when delivery did not succeed.
    While routing is far behind (`Router.room`) the answer waits for it to catch up, at
    most a few seconds: the message is already committed, and senders that wait for
    their ACKs slow down instead of filling the store with messages nobody can route yet.
    """

    def __init__(self, writer: GroupCommitWriter, router: Router,
                 confirm: Confirmation | None = None) -> None:
        self._writer = writer
        self._router = router
        self._confirm = confirm

    def __call__(self, received: Received) -> defer.Deferred[Any]:
        d = self._writer.submit(to_incoming(received))
        return d.addCallback(self._stored, received.raw)

    def _stored(self, stored: StoredMessage, raw: bytes) -> Any:
        if stored.status is not Status.RECEIVED:
            return stored
        waiting = self._confirm(stored.id) if self._confirm is not None else None
        self._router.route(stored.id, stored.channel, raw)
        room = self._router.room()
        if room is not None:  # routing is behind: the sender waits a little for its ACK
            return room.addCallback(lambda _: self._confirmed(stored, waiting))
        return self._confirmed(stored, waiting)

    @staticmethod
    def _confirmed(stored: StoredMessage, waiting: defer.Deferred[bool] | None) -> Any:
        """The stored message, once delivery confirmed it where the channel waits for that."""
        if waiting is None:
            return stored
        return waiting.addCallback(lambda ok: stored if ok else DELIVERY_UNCONFIRMED)


def to_incoming(received: Received) -> IncomingMessage:
    """Map a source's record onto the store's row, header facts included."""
    h = received.header
    if h is None:
        return IncomingMessage(
            channel=received.channel,
            received_at=int(received.received_at * 1_000_000),
            peer=received.peer,
            raw=received.raw,
            ack_code=received.ack_code,
            error=received.error,
            control_id=received.salvaged_control_id,
            ack=received.ack,
        )
    # The header's facts (those apply_header copies) go into the one constructor call:
    # every received message passes here.
    return IncomingMessage(
        channel=received.channel,
        received_at=int(received.received_at * 1_000_000),
        peer=received.peer,
        raw=received.raw,
        ack_code=received.ack_code,
        error=received.error,
        control_id=h.control_id,
        message_type=message_type(h),
        version=h.version,
        sending_application=h.sending_application.text,
        sending_facility=h.sending_facility.text,
        patient_id=h.patient_id,
        ack=received.ack,
    )


def apply_header(msg: IncomingMessage, h: Header) -> None:
    """Copy the header facts the store indexes (ids, type, sender, patient) onto a row."""
    msg.control_id = h.control_id
    msg.message_type = message_type(h)
    msg.version = h.version
    msg.sending_application = h.sending_application.text
    msg.sending_facility = h.sending_facility.text
    msg.patient_id = h.patient_id


def message_type(h: Header) -> str:
    """MSH-9.1^MSH-9.2 as the store keeps it ('ORU^R01'; either alone when the other is empty)."""
    kind, event = h.message_type, h.trigger_event
    return f"{kind}^{event}" if kind and event else kind or event
