"""The MLLP destination: HL7 v2 to a peer such as an EHR interface, judged by its ACK.

Delivery is the MLLP sender's job (one connection, one message in flight, reconnects);
this module decides what an answer means: MSA-1 AA/CA is SENT, AE/CE and AR/CR follow the
configured policy, and an ACK whose MSA-2 names another message is never taken as ours.
"""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from twisted.application.internet import backoffPolicy
from twisted.internet.defer import Deferred, DeferredList
from twisted.python.failure import Failure

from channels.destinations.base import DeliveryResult, Envelope, Verdict
from mllp.endpoints import ClientTLSSettings
from mllp.sender import ACKTimeout, MLLPSender, SenderError
from profiles.hl7.header import HeaderError, read_header
from profiles.hl7.message import Message

OnNegative = Literal["retry", "fail"]

_ACCEPTED = {"AA", "CA"}
_ERROR = {"AE", "CE"}
_REJECTED = {"AR", "CR"}
_CODE = re.compile(r"[A-Z]{2}")
_ERR_CODE = re.compile(r"\d{1,5}")
ANOTHER_MESSAGE = "ACK for another message"


class MLLPTLSConfig(BaseModel):
    """How to verify the peer (None: the platform's CAs) and, optionally, prove who we are."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ca_certificates: Path | None = None
    certificate: Path | None = None
    private_key: Path | None = None
    server_name: str | None = Field(
        None, description="Name to verify in the peer's certificate when it is not `host`."
    )

    @model_validator(mode="after")
    def _pair(self) -> MLLPTLSConfig:
        if (self.certificate is None) != (self.private_key is None):
            raise ValueError("certificate and private_key go together")
        return self

    def settings(self) -> ClientTLSSettings:
        return ClientTLSSettings(
            ca_certificates=self.ca_certificates,
            certificate=self.certificate,
            private_key=self.private_key,
            hostname=self.server_name,
        )


class MLLPDestinationConfig(BaseModel):
    """One MLLP peer and how to read its answers."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["mllp"]
    host: str = Field(min_length=1)
    port: int = Field(ge=1, le=65535)
    tls: MLLPTLSConfig | None = None
    ack_timeout_seconds: float = Field(30.0, gt=0)
    connect_timeout_seconds: float = Field(30.0, gt=0)
    reconnect_max_seconds: float = Field(60.0, gt=0)
    connections: int = Field(
        1, ge=1, le=64, description="Parallel connections; each lane keeps to one of them.")
    on_ae: OnNegative = "retry"
    on_ar: OnNegative = "fail"
    check_control_id: bool = True


def _verdict(policy: OnNegative) -> Verdict:
    return Verdict.RETRY if policy == "retry" else Verdict.FAIL


def _error_code(ack: Message) -> str:
    """The first ERR code: ERR-3.1 from v2.5 on, ERR-1.4.1 before (digits only, else '')."""
    for path in ("ERR-3.1", "ERR-1.4.1"):
        code = ack.get(path)
        if _ERR_CODE.fullmatch(code):
            return code
    return ""


def judge_ack(ack: bytes, control_id: str, config: MLLPDestinationConfig) -> DeliveryResult:
    """Turn an ACK into a verdict; the detail names codes only, never content."""
    try:
        message = Message.parse(ack)
    except HeaderError:
        return DeliveryResult(Verdict.RETRY, ack, "unreadable ACK (no usable MSH)")
    if not message.segments("MSA"):
        return DeliveryResult(Verdict.RETRY, ack, "ACK without MSA")
    code = message.get("MSA-1").strip()
    if not _CODE.fullmatch(code):
        return DeliveryResult(Verdict.RETRY, ack, "ACK with unreadable MSA-1")
    if config.check_control_id and message.get("MSA-2").strip() != control_id:
        return DeliveryResult(Verdict.RETRY, ack, ANOTHER_MESSAGE)
    err = _error_code(message)
    detail = f"{code} (ERR {err})" if err else code
    if code in _ACCEPTED:
        return DeliveryResult(Verdict.SENT, ack, detail)
    if code in _ERROR:
        return DeliveryResult(_verdict(config.on_ae), ack, detail)
    if code in _REJECTED:
        return DeliveryResult(_verdict(config.on_ar), ack, detail)
    return DeliveryResult(Verdict.RETRY, ack, f"unknown ACK code {code}")


def _sent_control_id(payload: bytes, envelope: Envelope) -> str:
    """MSH-10 of what goes on the wire (a transformer may have changed it)."""
    try:
        return read_header(payload).control_id
    except HeaderError:
        return envelope.control_id


class MLLPDestination:
    """A Destination that keeps `connections` MLLP connections to its peer.

    MLLP allows one message in flight per connection. Deliveries of one lane always use
    the same connection (by a stable hash of the lane key), so a lane keeps its order
    while different lanes are delivered in parallel.
    """

    def __init__(
        self,
        name: str,
        config: MLLPDestinationConfig,
        reactor: Any,
        *,
        clock: Any = None,
        retry_policy: Any = None,
    ) -> None:
        self.name = name
        self.config = config
        self._senders = [
            MLLPSender(
                reactor,
                (config.host, config.port),
                tls=config.tls.settings() if config.tls is not None else None,
                ack_timeout=config.ack_timeout_seconds,
                connect_timeout=config.connect_timeout_seconds,
                clock=clock,
                retry_policy=retry_policy or backoffPolicy(
                    initialDelay=1.0, maxDelay=config.reconnect_max_seconds, factor=2.0),
            )
            for _ in range(config.connections)
        ]

    def start(self) -> None:
        for sender in self._senders:
            sender.start()

    def stop(self) -> Deferred[None]:
        return DeferredList([s.stop() for s in self._senders]).addCallback(lambda _: None)

    def _sender_for(self, lane: str) -> MLLPSender:
        if len(self._senders) == 1:
            return self._senders[0]
        return self._senders[zlib.crc32(lane.encode("utf-8")) % len(self._senders)]

    def send(self, payload: bytes, envelope: Envelope) -> Deferred[DeliveryResult]:
        """Write the payload and judge the answer; delivery problems come back as RETRY."""
        control_id = _sent_control_id(payload, envelope)
        sender = self._sender_for(envelope.lane)
        return sender.send(payload).addCallbacks(
            self._answered, self._not_answered, callbackArgs=(control_id, sender)
        )

    def _answered(self, ack: bytes, control_id: str, sender: MLLPSender) -> DeliveryResult:
        result = judge_ack(ack, control_id, self.config)
        if result.detail == ANOTHER_MESSAGE:
            # The answer that is really ours may still be on its way: start afresh.
            sender.reset()
        return result

    def _not_answered(self, reason: Failure) -> DeliveryResult:
        if reason.check(ACKTimeout):
            return DeliveryResult(
                Verdict.RETRY, None, f"ACK timeout after {self.config.ack_timeout_seconds:g}s"
            )
        reason.trap(SenderError)
        return DeliveryResult(Verdict.RETRY, None, str(reason.value))
