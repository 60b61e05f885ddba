"""The MLLP source connector: frames in, durable messages and honest ACKs out.

It reads only the header on the hot path, decides the acknowledgment, hands the message
to the store through an injected `commit` callable, and writes a positive ACK only after
that commit returned (promise 1). Anything unreadable is still stored as received and
answered AR with an ERR segment (promise 4).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from profiles.hl7.acceptance import check_acceptance, suggested_outcome
from profiles.hl7.ack import (
    AckOutcome,
    ErrorDetail,
    ack_code,
    build_ack,
    build_reject_for_unreadable,
)
from profiles.hl7.batch import BatchError, is_batch, split_batch
from profiles.hl7.header import Header, HeaderError, read_header, salvage_control_id

log = Logger()

STORE_FAILED = ErrorDetail(code=207, severity="E", text="message could not be stored")
NOT_DELIVERED = ErrorDetail(code=207, severity="E",
                            text="stored, but delivery was not confirmed in time")
DELIVERY_UNCONFIRMED = object()
"""What `commit` fires with when the channel answers after delivery and delivery failed."""


@dataclass(slots=True)
class Received:
    """What the source hands to the store for one message (ids and facts, plus raw)."""

    channel: str
    received_at: float
    peer: str
    raw: bytes
    ack_code: str
    header: Header | None
    error: str | None
    salvaged_control_id: str = ""
    ack: bytes = b""
    """The answer built for it before the commit, kept with it (the store's `ack` content)."""


Commit = Callable[[Received], "defer.Deferred[Any]"]


class MLLPSource:
    """Implements the MLLP listener's frame handler for one channel."""

    def __init__(
        self,
        channel: str,
        commit: Commit,
        *,
        clock: Any,
        control_ids: Callable[[], str],
        sender: tuple[str, str] = ("INTERLINK", ""),
        on_answer: Callable[[float], None] | None = None,
        screen: Callable[[bytes], Sequence[ErrorDetail]] | None = None,
    ) -> None:
        self.channel = channel
        self._screen = screen
        """The channel's checks that reject before the ACK (device data rules): ERR entries."""
        self._commit = commit
        self._clock = clock
        self._control_ids = control_ids
        self._sender = sender
        self._on_answer = on_answer
        self._second = -1
        self._second_at = datetime.fromtimestamp(0, UTC)

    def _now(self) -> datetime:
        """The ACK's MSH-7 time, to the second (one datetime per second, not per message)."""
        second = int(self._clock.seconds())
        if second != self._second:
            self._second = second
            self._second_at = datetime.fromtimestamp(second, UTC)
        return self._second_at

    # -- the listener's FrameHandler interface -------------------------------------------

    def frame_received(self, payload: bytes, peer: str) -> defer.Deferred[bytes | None]:
        """Store one frame (one message or a batch) and answer it after the commit."""
        received_at = self._clock.seconds()
        timed_from = received_at if self._on_answer is not None else None
        if not is_batch(payload):
            return self._receive_one(payload, peer, received_at, timed_from)
        d = self._receive_batch(payload, peer, received_at)
        if timed_from is not None:
            d.addBoth(self._answered, timed_from)
        return d

    def _answered(self, answer: Any, received_at: float) -> Any:
        """Tell the `on_answer` hook (ACK latency) how long this frame took to answer."""
        assert self._on_answer is not None
        self._on_answer(self._clock.seconds() - received_at)
        return answer

    def frame_refused(self, head: bytes, peer: str, reason: str) -> bytes | None:
        """An oversize frame: keep what we saw of it and answer AR salvaging MSH-10."""
        error = HeaderError(reason, salvage_control_id(head))
        answer = build_reject_for_unreadable(head, error, now=self._now(),
                                             control_id=self._control_ids(),
                                             sender=self._sender)
        self._commit(Received(self.channel, self._clock.seconds(), peer, head, "AR", None,
                              f"refused: {reason}", error.salvaged_control_id, answer)
                     ).addErrback(_log_store_failure)
        return answer

    # -- one message ---------------------------------------------------------------------

    def _receive_one(self, raw: bytes, peer: str, received_at: float,
                     timed_from: float | None) -> defer.Deferred[bytes | None]:
        """Check, build the answer, hand to the store; the answer goes out after the commit.

        ``timed_from`` is set when this message is a whole frame whose answer latency the
        `on_answer` hook is told (a batch's parts are timed together, by the batch).
        """
        try:
            header = read_header(raw)
        except HeaderError as error:
            return self._reject_unreadable(raw, peer, received_at, error, timed_from)
        errors = check_acceptance(header, raw)
        outcome = suggested_outcome(errors) if errors else AckOutcome.ACCEPT
        if outcome is AckOutcome.ACCEPT and self._screen is not None:
            rejected = self._screen(raw)
            if rejected:  # stored as ERROR with the reasons, answered AE/CE with ERR
                errors, outcome = [*errors, *rejected], AckOutcome.ERROR
        code = ack_code(header, outcome)
        failed = _failures(errors) if errors else None
        # Built before the commit so that, once it returns, answering is only a write.
        ack = build_ack(header, outcome=outcome, now=self._now(),
                        control_id=self._control_ids(), sender=self._sender, errors=errors)
        d = self._commit(Received(self.channel, received_at, peer, raw, code, header, failed,
                                  ack=ack))
        return d.addBoth(self._settle, header, ack, timed_from)

    def _settle(self, result: Any, header: Header | None, ack: bytes,
                timed_from: float | None) -> bytes:
        """The answer once the commit has ended: ``ack`` if stored, else AE/CE with ERR 207.

        One callback for both outcomes, bound once per message (no closures): this runs
        for every message a listener takes. An unreadable message (no ``header``) keeps
        its AR whatever the store did.
        """
        try:
            if isinstance(result, Failure):
                _log_store_failure(result)
                if header is not None:
                    return self._error_ack(header, STORE_FAILED)
            elif result is DELIVERY_UNCONFIRMED and header is not None:
                return self._error_ack(header, NOT_DELIVERED)
            return ack
        finally:
            if timed_from is not None and self._on_answer is not None:
                self._on_answer(self._clock.seconds() - timed_from)

    def _error_ack(self, header: Header, detail: ErrorDetail) -> bytes:
        """AE (CE in enhanced mode) with one ERR, for what went wrong after the check."""
        return build_ack(header, outcome=AckOutcome.ERROR, now=self._now(),
                         control_id=self._control_ids(), sender=self._sender, errors=[detail])

    def _reject_unreadable(self, raw: bytes, peer: str, received_at: float,
                           error: HeaderError, timed_from: float | None = None
                           ) -> defer.Deferred[bytes | None]:
        answer = build_reject_for_unreadable(raw, error, now=self._now(),
                                             control_id=self._control_ids(),
                                             sender=self._sender)
        d = self._commit(Received(self.channel, received_at, peer, raw, "AR", None,
                                  f"unreadable header: {error.reason}",
                                  error.salvaged_control_id, answer))
        return d.addBoth(self._settle, None, answer, timed_from)

    # -- batches -------------------------------------------------------------------------

    def _receive_batch(self, raw: bytes, peer: str, received_at: float
                       ) -> defer.Deferred[bytes | None]:
        try:
            parts = split_batch(raw)
        except BatchError as error:
            first_msh = raw.find(b"MSH")
            salvaged = salvage_control_id(raw[first_msh:]) if first_msh >= 0 else ""
            return self._reject_unreadable(raw, peer, received_at,
                                           HeaderError(f"malformed batch: {error}", salvaged))
        answers = [self._receive_one(part, peer, received_at, None) for part in parts]
        d = defer.gatherResults(answers, consumeErrors=True)
        return d.addCallback(lambda acks: b"".join(
            a if a.endswith(b"\r") else a + b"\r" for a in acks if a))


def _failures(errors: Sequence[ErrorDetail]) -> str | None:
    """The E/F findings as the stored error text ('code text; ...'), None when there are none."""
    return "; ".join(f"{e.code} {e.text}".strip() for e in errors
                     if e.severity in ("E", "F")) or None


def _log_store_failure(failure: Any) -> None:
    """Name the failure by type only: an exception's text may quote message content."""
    log.error("message could not be stored: {kind}", kind=failure.type.__name__)
