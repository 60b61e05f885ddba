"""The MLLP listener: decoder events in, handler answers out, in arrival order.

Logs carry the peer address and sizes only, never frame content (PHI stays in the store).
"""

from __future__ import annotations

from collections import deque
from contextlib import suppress
from typing import Any, Final, Protocol

from twisted.internet import interfaces
from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred
from twisted.internet.protocol import Factory, connectionDone
from twisted.internet.protocol import Protocol as TwistedProtocol
from twisted.logger import Logger
from twisted.protocols.policies import TimeoutMixin
from twisted.python.failure import Failure

from mllp.codec import (
    DEFAULT_MAX_FRAME_BYTES,
    ClosedMidFrame,
    Decoder,
    Event,
    Frame,
    FrameAbandoned,
    FrameTooLarge,
    JunkDiscarded,
    encode,
)
from mllp.send_now import write_now

log = Logger()

MAX_JUNK_RUN: Final = 64 * 1024
"""A peer that sends this many bytes without a start block is not speaking MLLP."""

MAX_PENDING: Final = 1000
"""Unanswered frames per connection before reading pauses (backpressure)."""

HTTP_METHODS: Final = (
    b"GET ",
    b"POST ",
    b"HEAD ",
    b"PUT ",
    b"DELETE ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
    b"PRI ",
)
_SNIFF_BYTES: Final = max(len(m) for m in HTTP_METHODS)
_HTTP_BODY: Final = b"This port speaks MLLP (HL7 v2 over TCP), not HTTP.\n"
HTTP_400: Final = (
    b"HTTP/1.1 400 Bad Request\r\n"
    b"Content-Type: text/plain; charset=utf-8\r\n"
    b"Content-Length: " + str(len(_HTTP_BODY)).encode() + b"\r\n"
    b"Connection: close\r\n"
    b"\r\n" + _HTTP_BODY
)
_WHITESPACE: Final = b" \t\r\n"


class FrameHandler(Protocol):
    """What the engine implements to receive frames from a listener."""

    def frame_received(self, payload: bytes, peer: str) -> Deferred[bytes | None] | bytes | None:
        """Handle one frame; return (or fire with) the unframed answer, or None."""

    def frame_refused(self, head: bytes, peer: str, reason: str) -> bytes | None:
        """An oversize frame; return a NAK to write before the connection closes."""


def format_peer(address: object) -> str:
    """Render a peer address as ``host:port`` for logs and the store."""
    if isinstance(address, IPv6Address):
        return f"[{address.host}]:{address.port}"
    if isinstance(address, IPv4Address):
        return f"{address.host}:{address.port}"
    return str(address)


def _http_verdict(prefix: bytes) -> bool | None:
    """True if the connection opened with an HTTP request line, None if undecided."""
    if prefix.startswith(HTTP_METHODS):
        return True
    if any(method.startswith(prefix) for method in HTTP_METHODS):
        return None
    return False


class _Slot:
    """One frame's place in the connection's answer queue."""

    __slots__ = ("close_after", "done", "response")

    def __init__(
        self, response: bytes | None = None, *, done: bool = False, close_after: bool = False
    ) -> None:
        self.response = response
        self.done = done
        self.close_after = close_after


class MLLPServerProtocol(TwistedProtocol, TimeoutMixin):
    """One MLLP connection: frames to the handler, answers back in arrival order."""

    def __init__(self, factory: MLLPServerFactory) -> None:
        self.factory = factory
        self.peer = "unknown"
        self._handler = factory.handler
        self._decoder = Decoder(factory.max_frame_bytes)
        self._queue: deque[_Slot] = deque()
        self._sniff: bytes | None = b""
        self._counted = False
        self._closing = False
        self._lost = False
        self._paused = False

    def callLater(self, period: float, func: Any) -> Any:
        """Schedule the idle timeout on the factory's clock (a task.Clock in tests)."""
        return self.factory.clock.callLater(period, func)

    def connectionMade(self) -> None:
        self.peer = format_peer(self.transport.getPeer())
        self.factory.open_connections += 1
        self._counted = True
        with suppress(AttributeError, NotImplementedError):
            self.transport.setTcpNoDelay(True)
        self.setTimeout(self.factory.idle_timeout)
        log.debug("MLLP connection from {peer}", peer=self.peer)

    def dataReceived(self, data: bytes) -> None:
        if self._closing:
            return
        self.resetTimeout()
        if self._sniff is not None and self._answer_http(data):
            return
        for event in self._decoder.feed(data):
            if self._closing:
                break
            if type(event) is Frame:  # nearly every event: no dispatch call for it
                self._frame(event.payload)
            else:
                self._dispatch(event)
        if not self._closing and self._decoder.junk_pending > MAX_JUNK_RUN:
            log.warn(
                "Closing MLLP connection from {peer}: {size} bytes without a start block",
                peer=self.peer,
                size=self._decoder.junk_pending,
            )
            self._close_after_answers()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._lost = True
        self._closing = True
        self.setTimeout(None)
        self._queue.clear()
        for event in self._decoder.close():
            self._note(event)
        if self._counted:
            self._counted = False
            self.factory.open_connections -= 1
        log.debug("MLLP connection from {peer} closed", peer=self.peer)

    def timeoutConnection(self) -> None:
        if self._queue and not self._closing:
            # Waiting for the engine's answers is not idle time: look again later. (Cheaper
            # than cancelling and re-creating the timer around every frame.)
            self.setTimeout(self.factory.idle_timeout)
            return
        log.info(
            "Closing idle MLLP connection from {peer} ({size} bytes of unfinished frame)",
            peer=self.peer,
            size=self._decoder.frame_bytes,
        )
        self._closing = True
        self.transport.abortConnection()

    def _answer_http(self, data: bytes) -> bool:
        """Answer a plain HTTP request with 400 and close; True if it was one."""
        assert self._sniff is not None
        prefix = self._sniff + data[: _SNIFF_BYTES - len(self._sniff)]
        verdict = _http_verdict(prefix)
        if verdict is None:
            self._sniff = prefix
            return False
        self._sniff = None
        if verdict:
            log.warn("HTTP request on MLLP port from {peer}; answered 400", peer=self.peer)
            self.transport.write(HTTP_400)
            self._close()
        return verdict

    def _dispatch(self, event: Event) -> None:
        if isinstance(event, Frame):
            self._frame(event.payload)
        elif isinstance(event, FrameTooLarge):
            self._refuse(event)
        else:
            self._note(event)

    def _frame(self, payload: bytes) -> None:
        try:
            result = self._handler.frame_received(payload, self.peer)
        except Exception:
            slot = _Slot()
            self._queue.append(slot)
            self._failed(Failure(), slot)
            return
        if isinstance(result, Deferred):
            slot = _Slot()
            self._enqueue(slot)
            result.addBoth(self._settled, slot)
        elif self._queue or not isinstance(result, bytes | None):
            slot = _Slot()
            self._enqueue(slot)
            self._completed(result, slot)
        elif result is not None:
            write_now(self.transport, encode(result))

    def _refuse(self, event: FrameTooLarge) -> None:
        reason = f"frame larger than {event.limit} bytes"
        log.warn(
            "Refusing oversize frame from {peer}: more than {limit} bytes",
            peer=self.peer,
            limit=event.limit,
        )
        try:
            answer = self._handler.frame_refused(event.head, self.peer, reason)
        except Exception:
            _log_handler_failure(Failure(), self.peer, "frame_refused")
            answer = None
        self._close_after_answers(answer)

    def _note(self, event: Event) -> None:
        """Log what the decoder skipped: peer and sizes only."""
        if isinstance(event, JunkDiscarded):
            if event.size == len(event.data) and not event.data.strip(_WHITESPACE):
                return
            log.info(
                "Discarded {size} bytes outside frames from {peer}",
                peer=self.peer,
                size=event.size,
            )
        elif isinstance(event, FrameAbandoned):
            log.warn(
                "Peer {peer} abandoned a frame after {size} bytes",
                peer=self.peer,
                size=event.size,
            )
        elif isinstance(event, ClosedMidFrame):
            log.warn(
                "Connection from {peer} closed inside a frame after {size} bytes",
                peer=self.peer,
                size=event.size,
            )

    def _enqueue(self, slot: _Slot) -> None:
        self._queue.append(slot)
        if len(self._queue) >= MAX_PENDING and not self._paused and not self._closing:
            self._paused = True
            self.transport.pauseProducing()

    def _settled(self, result: Any, slot: _Slot) -> None:
        """The handler's Deferred fired: one callback for both outcomes, bound once."""
        if isinstance(result, Failure):
            self._failed(result, slot)
        else:
            self._completed(result, slot)

    def _completed(self, response: Any, slot: _Slot) -> None:
        if response is not None and not isinstance(response, bytes):
            self._failed(Failure(TypeError(f"answer is {type(response).__name__}")), slot)
            return
        if self._lost:
            return
        slot.response = response
        slot.done = True
        self._flush()

    def _failed(self, failure: Failure, slot: _Slot) -> None:
        _log_handler_failure(failure, self.peer, "frame_received")
        if self._lost:
            return
        slot.done = True
        slot.close_after = True
        self._closing = True
        self._flush()

    def _flush(self) -> None:
        """Write every finished answer at the head of the queue, in arrival order."""
        queue = self._queue
        while queue and queue[0].done:
            slot = queue.popleft()
            if slot.response is not None:
                write_now(self.transport, encode(slot.response))
            if slot.close_after:
                queue.clear()
                self._close()
                return
        if self._closing:
            return
        if not queue:
            self.resetTimeout()  # idle time counts from the last answer as well
        if self._paused and len(queue) <= MAX_PENDING // 2:
            self._paused = False
            self.transport.resumeProducing()

    def _close_after_answers(self, last: bytes | None = None) -> None:
        """Stop reading frames; close once earlier answers (and ``last``) are written."""
        self._closing = True
        self._enqueue(_Slot(last, done=True, close_after=True))
        self._flush()

    def _close(self) -> None:
        self._closing = True
        self.setTimeout(None)
        self.transport.loseConnection()


def _log_handler_failure(failure: Failure, peer: str, hook: str) -> None:
    """Log a handler bug by exception type and location, without its message."""
    where = "unknown"
    if failure.frames:
        _, filename, line, *_ = failure.frames[-1]
        where = f"{filename}:{line}"
    log.error(
        "Frame handler {hook} failed for {peer} with {error} at {where}; closing connection",
        hook=hook,
        peer=peer,
        error=failure.type.__qualname__ if failure.type else "unknown",
        where=where,
    )


class MLLPServerFactory(Factory):
    """Builds MLLP connections for one handler, within a connection limit."""

    protocol = MLLPServerProtocol

    def __init__(
        self,
        handler: FrameHandler,
        *,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
        idle_timeout: float | None = 300,
        max_connections: int = 1000,
        clock: interfaces.IReactorTime | None = None,
    ) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.handler = handler
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.max_connections = max_connections
        self.clock = clock
        self.open_connections = 0

    def buildProtocol(self, addr: Any) -> MLLPServerProtocol | None:
        if self.open_connections >= self.max_connections:
            log.warn(
                "Refusing MLLP connection from {peer}: {limit} connections open",
                peer=format_peer(addr),
                limit=self.max_connections,
            )
            return None
        return self.protocol(self)
