"""A small MLLP sender: one connection, one message at a time, answers in order.

Each message waits for its answer before the next is sent, which is what most
receivers expect and keeps error reporting exact ("no answer to message 3 of 5").
"""

from __future__ import annotations

from contextlib import suppress
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import connectProtocol
from twisted.internet.error import ConnectionDone
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from mllp.codec import DEFAULT_MAX_FRAME_BYTES, Decoder, Frame, FrameTooLarge, encode
from mllp.endpoints import ClientTLSSettings, client_endpoint


class MLLPError(Exception):
    """Sending over MLLP did not get every answer."""


class MLLPTimeout(MLLPError):
    """Connecting, or waiting for an answer, took longer than the timeout."""


class MLLPConnectFailed(MLLPError):
    """The receiver could not be reached (refused, unreachable, no such host)."""


class MLLPConnectionClosed(MLLPError):
    """The connection ended before every message was answered."""


class MLLPProtocolError(MLLPError):
    """The receiver sent something that is not a usable MLLP answer."""


class _SendProtocol(Protocol):
    """Writes each payload after the previous answer; fires ``result`` when closed."""

    def __init__(
        self, payloads: list[bytes], timeout: float, clock: Any, max_frame_bytes: int
    ) -> None:
        self.result: Deferred[list[bytes]] = Deferred()
        self._payloads = payloads
        self._timeout = timeout
        self._clock = clock
        self._decoder = Decoder(max_frame_bytes)
        self._answers: list[bytes] = []
        self._error: MLLPError | None = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        with suppress(AttributeError, NotImplementedError):
            self.transport.setTcpNoDelay(True)
        self._send_next()

    def dataReceived(self, data: bytes) -> None:
        for event in self._decoder.feed(data):
            if self._error is not None or self._complete():
                return
            if isinstance(event, Frame):
                self._cancel_timer()
                self._answers.append(event.payload)
                self._send_next()
            elif isinstance(event, FrameTooLarge):
                self._fail(MLLPProtocolError(f"answer larger than {event.limit} bytes"))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._cancel_timer()
        if self._error is not None:
            self.result.errback(self._error)
        elif self._complete():
            self.result.callback(self._answers)
        else:
            detail = "" if reason.check(ConnectionDone) else f": {reason.getErrorMessage()}"
            self.result.errback(
                MLLPConnectionClosed(
                    f"connection closed after {len(self._answers)} of "
                    f"{len(self._payloads)} answers{detail}"
                )
            )

    def _complete(self) -> bool:
        return len(self._answers) == len(self._payloads)

    def _send_next(self) -> None:
        if self._complete():
            self.transport.loseConnection()
            return
        self.transport.write(encode(self._payloads[len(self._answers)]))
        self._timer = self._clock.callLater(self._timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self._fail(
            MLLPTimeout(
                f"no answer to message {len(self._answers) + 1} of {len(self._payloads)} "
                f"within {self._timeout:g} s"
            )
        )

    def _fail(self, error: MLLPError) -> None:
        self._error = error
        self._cancel_timer()
        self.transport.abortConnection()

    def _cancel_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None


def send_messages(
    reactor: Any,
    target: str | tuple[str, int],
    payloads: list[bytes],
    *,
    timeout: float = 30,
    tls: ClientTLSSettings | None = None,
    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
) -> Deferred[list[bytes]]:
    """Send each payload framed and collect the answers, in order.

    ``target`` is ``(host, port)`` or a client endpoint string
    (``tcp:host=10.0.0.5:port=2575``). ``timeout`` bounds the connect and each answer.
    The result fires once the connection is closed, with one answer per payload, or
    fails with an :class:`MLLPError`.
    """
    if not payloads:
        return defer.succeed([])
    protocol = _SendProtocol(list(payloads), timeout, reactor, max_frame_bytes)
    connecting = connectProtocol(client_endpoint(reactor, target, tls), protocol)

    def connect_timed_out(result: object, seconds: float) -> None:
        raise MLLPTimeout(f"could not connect to {target!r} within {seconds:g} s")

    connecting.addTimeout(timeout, reactor, onTimeoutCancel=connect_timed_out)

    def connected(_: object) -> Deferred[list[bytes]]:
        return protocol.result

    def not_connected(failure: Failure) -> Failure:
        if failure.check(MLLPTimeout):
            return failure
        raise MLLPConnectFailed(
            f"could not connect to {target!r}: {failure.getErrorMessage()}"
        ) from failure.value

    return connecting.addCallbacks(connected, not_connected)
