"""Channel-to-channel delivery: one channel's output becomes another channel's input.

The linked message is stored as a new message of the target channel with `parent_id`
pointing at the message it came from, so the link is on the record both ways. The send
counts as delivered once the new message is committed; a resend after a crash is caught
as a duplicate by the target channel (same MSH-3, MSH-4 and MSH-10).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from channels.destinations.base import DeliveryResult, Envelope, Verdict
from engine.ingest import apply_header
from engine.store.status import Status
from engine.store.store import IncomingMessage, StoredMessage
from profiles.hl7.header import HeaderError, read_header

Submit = Callable[[IncomingMessage], "defer.Deferred[StoredMessage]"]
Deployed = Callable[[str], bool]
Route = Callable[[int, str, bytes], None]


class ChannelLink:
    """A destination whose `send` is a commit into another channel of this engine."""

    def __init__(self, name: str, target: str, *, submit: Submit, route: Route,
                 deployed: Deployed, clock: Any) -> None:
        self.name = name
        self.target = target
        self._submit = submit
        self._route = route
        self._deployed = deployed
        self._clock = clock

    def start(self) -> None:
        """Nothing to connect."""

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def send(self, payload: bytes, envelope: Envelope) -> defer.Deferred[DeliveryResult]:
        if not self._deployed(self.target):
            return defer.succeed(DeliveryResult(
                Verdict.RETRY, detail=f"channel {self.target} is not deployed"))
        incoming = IncomingMessage(
            channel=self.target, received_at=int(self._clock.seconds() * 1_000_000),
            peer=f"channel:{envelope.channel}", raw=payload, ack_code="AA",
            parent_id=envelope.message_id)
        try:
            apply_header(incoming, read_header(payload))
        except HeaderError as error:
            return defer.succeed(DeliveryResult(
                Verdict.FAIL, detail=f"output is not HL7 v2: {error.reason}"))

        def stored(result: StoredMessage) -> DeliveryResult:
            if result.status is Status.RECEIVED:
                self._route(result.id, self.target, payload)
            detail = f"message {result.id} of channel {self.target}"
            if result.duplicate_of is not None:
                detail += f" (duplicate of {result.duplicate_of})"
            return DeliveryResult(Verdict.SENT, detail=detail)

        d = self._submit(incoming)
        d.addCallback(stored)
        d.addErrback(lambda f: DeliveryResult(Verdict.RETRY, detail=f.type.__name__))
        return d
