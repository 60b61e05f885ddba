"""A persistent MLLP sender for one peer: reconnects quietly, one message in flight.

MLLP has no message ids on the wire, so an answer belongs to whatever was written last.
The sender therefore writes one frame, waits for exactly one answer, and drops the
connection whenever that pairing is in doubt (timeout, unsolicited frame, cancelled
send), so a late ACK can never be matched to the next message. The connection is kept
by ``ClientService`` with a backoff policy on an injected clock: a dead peer costs a
timer, not a log line per message.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from enum import Enum, auto
from typing import Any, Final

from OpenSSL import SSL
from twisted.application.internet import ClientService, backoffPolicy
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from mllp.codec import DEFAULT_MAX_FRAME_BYTES, Decoder, Frame, FrameTooLarge, encode
from mllp.endpoints import ClientTLSSettings, client_endpoint
from mllp.send_now import write_now

log = Logger()

DEFAULT_RETRY_POLICY: Final = backoffPolicy(initialDelay=1.0, maxDelay=60.0, factor=2.0)
"""Reconnect after 1, 2, 4 … 60 s, plus up to 1 s of jitter so many senders spread out."""


class SenderError(Exception):
    """A message did not get its answer; the text names no content."""


class NotConnected(SenderError):
    """No connection within the connect timeout, or the sender is not running."""


class ACKTimeout(SenderError):
    """The frame was written but no answer came in time; the connection was dropped."""


class ConnectionLostBeforeACK(SenderError):
    """The connection ended after the frame was written and before a whole answer."""


class ACKTooLarge(SenderError):
    """The answer grew past the frame limit; the connection was dropped."""


class _State(Enum):
    IDLE = auto()
    WAITING = auto()
    CLOSED = auto()


class _Event(Enum):
    SEND = auto()
    ANSWER = auto()
    TIMEOUT = auto()
    TOO_LARGE = auto()
    CANCEL = auto()
    DROP = auto()
    LOST = auto()


_TRANSITIONS: Final[dict[tuple[_State, _Event], tuple[_State, str]]] = {
    (_State.IDLE, _Event.SEND): (_State.WAITING, "_write"),
    (_State.WAITING, _Event.ANSWER): (_State.IDLE, "_answered"),
    (_State.WAITING, _Event.TIMEOUT): (_State.CLOSED, "_timed_out"),
    (_State.WAITING, _Event.TOO_LARGE): (_State.CLOSED, "_too_large"),
    (_State.WAITING, _Event.CANCEL): (_State.CLOSED, "_cancelled"),
    (_State.WAITING, _Event.LOST): (_State.CLOSED, "_lost_in_flight"),
    (_State.IDLE, _Event.ANSWER): (_State.CLOSED, "_unsolicited"),
    (_State.IDLE, _Event.TOO_LARGE): (_State.CLOSED, "_unsolicited"),
    (_State.IDLE, _Event.DROP): (_State.CLOSED, "_drop"),
    (_State.IDLE, _Event.LOST): (_State.CLOSED, "_ignore"),
    (_State.CLOSED, _Event.ANSWER): (_State.CLOSED, "_ignore"),
    (_State.CLOSED, _Event.TOO_LARGE): (_State.CLOSED, "_ignore"),
    (_State.CLOSED, _Event.TIMEOUT): (_State.CLOSED, "_ignore"),
    (_State.CLOSED, _Event.CANCEL): (_State.CLOSED, "_ignore"),
    (_State.CLOSED, _Event.DROP): (_State.CLOSED, "_ignore"),
    (_State.CLOSED, _Event.LOST): (_State.CLOSED, "_ignore"),
}
"""The ACK wait. A pair missing here (SEND or DROP while WAITING, SEND while CLOSED) is a
bug in the sender, which only sends or drops on an IDLE link."""


class _Link(Protocol):
    """One connection: one frame out, the next frame in is its answer."""

    def __init__(self, sender: MLLPSender) -> None:
        self._sender = sender
        self._decoder = Decoder(sender.max_frame_bytes)
        self.state = _State.IDLE
        self._waiter: Deferred[bytes] | None = None
        self._answer: bytes | None = None
        self._timer: IDelayedCall | None = None

    def connectionMade(self) -> None:
        with suppress(AttributeError, NotImplementedError):
            self.transport.setTcpNoDelay(True)
        self._sender._link_up(self)

    def dataReceived(self, data: bytes) -> None:
        # The answer is handed on only after the whole chunk is read: a second frame in
        # the same chunk was sent before the peer could see our next message, so it must
        # close the connection rather than be taken as that message's answer.
        for event in self._decoder.feed(data):
            if isinstance(event, Frame):
                self._handle(_Event.ANSWER, event.payload)
            elif isinstance(event, FrameTooLarge):
                self._handle(_Event.TOO_LARGE, event.limit)
        answer, self._answer = self._answer, None
        if answer is not None:
            self._settle(answer)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self._decoder.close()
        self._handle(_Event.LOST, reason)
        self._sender._link_down(self)

    def send(self, payload: bytes) -> Deferred[bytes]:
        """Write one frame; the result fires with its answer or a SenderError."""
        self._waiter = Deferred()
        waiter = self._waiter
        self._handle(_Event.SEND, payload)
        return waiter

    def cancel(self) -> None:
        """Give up on the frame in flight; the connection goes, its answer can't stray."""
        self._handle(_Event.CANCEL, None)

    def drop(self) -> None:
        """Close at once: the peer's answers can no longer be trusted to pair up."""
        self._handle(_Event.DROP, None)

    def _handle(self, event: _Event, value: Any) -> None:
        transition = _TRANSITIONS.get((self.state, event))
        if transition is None:
            raise RuntimeError(f"MLLP sender: {event.name} while {self.state.name}")
        self.state, action = transition
        getattr(self, action)(value)

    def _write(self, payload: bytes) -> None:
        write_now(self.transport, encode(payload))
        self._timer = self._sender.clock.callLater(
            self._sender.ack_timeout, self._handle, _Event.TIMEOUT, None
        )

    def _answered(self, answer: bytes) -> None:
        self._answer = answer
        self._stop_timer()

    def _timed_out(self, _: None) -> None:
        self._timer = None
        self.transport.abortConnection()
        self._settle(Failure(ACKTimeout(f"no ACK within {self._sender.ack_timeout:g} s")))

    def _too_large(self, limit: int) -> None:
        self.transport.abortConnection()
        self._settle(Failure(ACKTooLarge(f"ACK larger than {limit} bytes")))

    def _cancelled(self, _: None) -> None:
        self.transport.abortConnection()
        self._settle(Failure(CancelledError()))

    def _lost_in_flight(self, reason: Failure) -> None:
        self._settle(
            Failure(ConnectionLostBeforeACK(f"connection closed before ACK ({_kind(reason)})"))
        )

    def _unsolicited(self, _: object) -> None:
        log.warn("MLLP peer {peer} answered when nothing was asked; reconnecting",
                 peer=self._sender.peer)
        self.transport.abortConnection()

    def _drop(self, _: None) -> None:
        self.transport.abortConnection()

    def _ignore(self, _: object) -> None:
        pass

    def _stop_timer(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None

    def _settle(self, outcome: bytes | Failure) -> None:
        self._stop_timer()
        waiter, self._waiter = self._waiter, None
        if waiter is not None:
            _fire(waiter, outcome)


class _LinkFactory(Factory):
    """Builds the sender's connection protocol for ClientService."""

    def __init__(self, sender: MLLPSender) -> None:
        self._sender = sender

    def buildProtocol(self, addr: Any) -> _Link:
        return _Link(self._sender)


@implementer(IStreamClientEndpoint)
class _Watched:
    """An endpoint that remembers why the last attempt failed (the error type only)."""

    def __init__(self, inner: IStreamClientEndpoint) -> None:
        self._inner = inner
        self.last_failure = ""

    def connect(self, factory: Any) -> Deferred[Any]:
        def failed(reason: Failure) -> Failure:
            self.last_failure = _kind(reason)
            return reason

        return self._inner.connect(factory).addErrback(failed)


@dataclass(slots=True, eq=False)
class _Pending:
    payload: bytes
    result: Deferred[bytes]
    link: _Link | None = None


def _fire(result: Deferred[bytes], outcome: bytes | Failure) -> None:
    if isinstance(outcome, Failure):
        result.errback(outcome)
    else:
        result.callback(outcome)


def _kind(reason: Failure) -> str:
    """The exception type's name: enough to diagnose, never message content."""
    if reason.type is None:
        return "unknown"
    return "TLSError" if issubclass(reason.type, SSL.Error) else reason.type.__name__


class MLLPSender:
    """Keeps one connection to one peer and sends payloads over it in order.

    ``send`` queues; the head is written when a connection is idle. A send fails with
    :class:`NotConnected` when no connection comes up within ``connect_timeout`` (every
    queued send fails then, in order), :class:`ACKTimeout`, :class:`ConnectionLostBeforeACK`
    or :class:`ACKTooLarge`. Failures never stop the sender: the next send reconnects.
    """

    def __init__(
        self,
        reactor: Any,
        target: str | tuple[str, int],
        *,
        tls: ClientTLSSettings | None = None,
        ack_timeout: float = 30.0,
        connect_timeout: float = 30.0,
        clock: Any = None,
        retry_policy: Callable[[int], float] = DEFAULT_RETRY_POLICY,
        max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    ) -> None:
        self.clock = clock if clock is not None else reactor
        self.ack_timeout = ack_timeout
        self.connect_timeout = connect_timeout
        self.max_frame_bytes = max_frame_bytes
        self.peer = target if isinstance(target, str) else f"{target[0]}:{target[1]}"
        self._endpoint = _Watched(client_endpoint(reactor, target, tls))
        self._service = ClientService(
            self._endpoint, _LinkFactory(self), retryPolicy=retry_policy, clock=self.clock
        )
        self._queue: deque[_Pending] = deque()
        self._in_flight: _Pending | None = None
        self._link: _Link | None = None
        self._connect_timer: IDelayedCall | None = None
        self._idle_waiters: list[Deferred[None]] = []
        self._stopping: Deferred[None] | None = None
        self._running = False

    @property
    def connected(self) -> bool:
        """True while a connection is up and usable."""
        return self._link is not None and self._link.state is not _State.CLOSED

    def start(self) -> None:
        """Begin connecting; reconnects with the retry policy until stopped."""
        self._running = True
        self._service.startService()

    def stop(self) -> Deferred[None]:
        """Refuse new sends, fail queued ones, let the one in flight finish, disconnect.

        Calling it again returns another Deferred for the same stop.
        """
        if self._stopping is None:
            self._running = False
            self._cancel_connect_timer()
            self._fail_queue("sender stopped")
            idle: Deferred[None] = Deferred()
            if self._in_flight is None:
                idle.callback(None)
            else:
                self._idle_waiters.append(idle)
            self._stopping = idle.addCallback(lambda _: self._service.stopService())
        done: Deferred[None] = Deferred()

        def stopped(result: object) -> object:
            done.callback(None)
            return result

        self._stopping.addBoth(stopped)
        return done

    def reset(self) -> None:
        """Drop the current connection (it reconnects): use when answers stop pairing up.

        Called between sends, e.g. after an ACK that names another message, so the answer
        that was really ours cannot arrive as the answer to the next message.
        """
        if self._link is not None and self._link.state is _State.IDLE:
            self._link.drop()

    def send(self, payload: bytes) -> Deferred[bytes]:
        """Queue one payload; fires with the answer's payload (unframed), in send order."""
        if not self._running:
            return defer.fail(NotConnected("sender is not running"))
        pending = _Pending(payload, Deferred(lambda _: self._cancel(pending)))
        self._queue.append(pending)
        self._pump()
        return pending.result

    def _pump(self) -> None:
        if self._in_flight is not None or not self._queue:
            return
        link = self._link
        if link is None or link.state is not _State.IDLE:
            if self._connect_timer is None:
                self._connect_timer = self.clock.callLater(
                    self.connect_timeout, self._not_connected
                )
            return
        pending = self._in_flight = self._queue.popleft()
        pending.link = link
        link.send(pending.payload).addBoth(self._done, pending)

    def _done(self, outcome: bytes | Failure, pending: _Pending) -> None:
        self._in_flight = None
        if not pending.result.called:
            _fire(pending.result, outcome)
        waiters, self._idle_waiters = self._idle_waiters, []
        for waiter in waiters:
            waiter.callback(None)
        self._pump()

    def _cancel(self, pending: _Pending) -> None:
        if pending is self._in_flight and pending.link is not None:
            pending.link.cancel()
        elif pending in self._queue:
            self._queue.remove(pending)
            pending.result.errback(CancelledError())

    def _not_connected(self) -> None:
        self._connect_timer = None
        why = self._endpoint.last_failure or "no connection yet"
        self._fail_queue(f"not connected to {self.peer} within {self.connect_timeout:g} s ({why})")

    def _fail_queue(self, reason: str) -> None:
        queue, self._queue = self._queue, deque()
        for pending in queue:
            pending.result.errback(NotConnected(reason))

    def _cancel_connect_timer(self) -> None:
        if self._connect_timer is not None and self._connect_timer.active():
            self._connect_timer.cancel()
        self._connect_timer = None

    def _link_up(self, link: _Link) -> None:
        log.info("MLLP connection to {peer} up", peer=self.peer)
        self._link = link
        self._endpoint.last_failure = ""
        self._cancel_connect_timer()
        self._pump()

    def _link_down(self, link: _Link) -> None:
        if self._link is link:
            self._link = None
            log.info("MLLP connection to {peer} down", peer=self.peer)
        self._pump()
