"""The contract between the engine's delivery queue and every destination connector.

A connector never decides about retries or dead letters by itself: it reports a verdict
and the queue acts on it. ``send`` does not errback for ordinary delivery problems
(refused, timeout, negative ACK, HTTP error); those come back as RETRY or FAIL results.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from twisted.internet.defer import Deferred


class Verdict(StrEnum):
    """What the queue should do with the delivery next."""

    SENT = "SENT"
    """Delivered and accepted (AA/CA, HTTP 2xx, file written)."""
    RETRY = "RETRY"
    """Try again later with backoff (refused, timeout, closed mid-ACK, AE/CE, HTTP 5xx/429)."""
    FAIL = "FAIL"
    """Do not retry: dead-letter now (AR/CR by default, HTTP 4xx other than 408/429)."""


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one attempt.

    ``response`` is the ACK or HTTP body as received: it is stored and may hold PHI.
    ``detail`` is short and PHI-free ("AE (ERR 207)", "ACK timeout after 30s",
    "ConnectionRefusedError"). ``retry_after`` is the peer's hint in seconds, if any.
    """

    verdict: Verdict
    response: bytes | None = None
    detail: str = ""
    retry_after: float | None = None


@dataclass(frozen=True, slots=True)
class Envelope:
    """Facts about the message being delivered, for file names, headers and logs (no content)."""

    message_id: int
    channel: str
    destination: str
    control_id: str
    message_type: str
    attempt: int
    received_at: float
    """Epoch seconds."""
    lane: str = ""
    """The delivery's lane key: a connector with several connections keeps a lane on one."""


class Destination(Protocol):
    """One configured destination of a channel."""

    name: str

    def start(self) -> None:
        """Begin any background work (connecting, pools); called once before sends."""
        ...

    def stop(self) -> Deferred[None]:
        """Release connections and threads; fires when nothing is left in flight."""
        ...

    def send(self, payload: bytes, envelope: Envelope) -> Deferred[DeliveryResult]:
        """Deliver one payload; fires with a result, errbacks only on programming errors."""
        ...
