"""The MLLP server protocol over fake transports and a fake clock."""

from __future__ import annotations

from twisted.internet.address import IPv4Address, IPv6Address
from twisted.internet.defer import Deferred, fail
from twisted.internet.error import ConnectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import LogEvent, capturedLogs, formatEvent
from twisted.python.failure import Failure

from mllp.codec import encode
from mllp.server import (
    HTTP_400,
    MAX_JUNK_RUN,
    MAX_PENDING,
    FrameHandler,
    MLLPServerFactory,
    MLLPServerProtocol,
    format_peer,
)
from tests.mllp.fakes import DeferringHandler, RecordingHandler, ack_for

PHI = b"MSH|^~\\&|PUMP|ICU|||20240101||ORU^R01|C42|P|2.6\rPID|||777^^^H||DOE^JANE\r"
PEER = IPv4Address("TCP", "10.1.2.3", 40000)


class NoDelayTransport(StringTransport):
    """A StringTransport that records setTcpNoDelay like a TCP transport."""

    no_delay: bool | None = None

    def setTcpNoDelay(self, enabled: bool) -> None:
        self.no_delay = enabled


def connect(
    handler: FrameHandler,
    clock: Clock | None = None,
    transport: StringTransport | None = None,
    **options: object,
) -> tuple[MLLPServerProtocol, StringTransport, MLLPServerFactory]:
    """Build a server protocol for ``handler`` connected to a StringTransport."""
    factory = MLLPServerFactory(handler, clock=clock or Clock(), **options)  # type: ignore[arg-type]
    protocol = factory.buildProtocol(PEER)
    assert protocol is not None
    transport = transport or StringTransport(peerAddress=PEER)
    protocol.makeConnection(transport)
    return protocol, transport, factory


def lose(protocol: MLLPServerProtocol) -> None:
    """Tell the protocol its connection is gone, as the reactor would."""
    protocol.connectionLost(Failure(ConnectionDone()))


def text_of(events: list[LogEvent]) -> str:
    """All captured log events rendered to one string."""
    return "\n".join(formatEvent(e) or "" for e in events)


def test_synchronous_answer_is_written_framed() -> None:
    """A handler that returns bytes at once gets them framed on the wire."""
    handler = RecordingHandler(lambda payload: ack_for(payload))
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(encode(b"m1"))
    assert transport.value() == encode(b"ACK:m1")
    assert handler.frames == [(b"m1", "10.1.2.3:40000")]


def test_pipelined_answers_are_written_in_arrival_order() -> None:
    """Answers completing out of order are still written in the order frames arrived."""
    handler = DeferringHandler()
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(encode(b"m1") + encode(b"m2") + encode(b"m3"))
    first, second, third = handler.pending
    third.callback(b"a3")
    assert transport.value() == b""
    first.callback(b"a1")
    assert transport.value() == encode(b"a1")
    second.callback(b"a2")
    assert transport.value() == encode(b"a1") + encode(b"a2") + encode(b"a3")
    assert not transport.disconnecting


def test_none_answer_writes_nothing_and_keeps_order() -> None:
    """A None answer is skipped without blocking the answers after it."""
    handler = DeferringHandler()
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(encode(b"m1") + encode(b"m2"))
    handler.pending[1].callback(b"a2")
    handler.pending[0].callback(None)
    assert transport.value() == encode(b"a2")


def test_synchronous_answer_waits_behind_pending_ones() -> None:
    """An immediate answer queued behind a pending one is not written ahead of it."""
    answers: list[Deferred[bytes | None] | bytes] = [Deferred(), b"a2"]
    handler = RecordingHandler(lambda payload: answers.pop(0))
    protocol, transport, _ = connect(handler)
    first = answers[0]
    protocol.dataReceived(encode(b"m1") + encode(b"m2"))
    assert transport.value() == b""
    assert isinstance(first, Deferred)
    first.callback(b"a1")
    assert transport.value() == encode(b"a1") + encode(b"a2")


def test_failed_answer_closes_after_earlier_answers_and_logs_no_content() -> None:
    """A failing Deferred is logged by type only and closes the connection in order."""
    handler = DeferringHandler()
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(encode(b"m1") + encode(PHI) + encode(b"m3"))
    with capturedLogs() as events:
        handler.pending[1].errback(ValueError("bad PID DOE^JANE"))
        assert not transport.disconnecting
        handler.pending[0].callback(b"a1")
    assert transport.value() == encode(b"a1")
    assert transport.disconnecting
    handler.pending[2].callback(b"a3")
    assert transport.value() == encode(b"a1")
    logged = text_of(list(events))
    assert "ValueError" in logged
    assert "DOE" not in logged


def test_synchronous_exception_closes_the_connection() -> None:
    """A handler raising instead of answering closes the connection, skipping later frames."""

    def explode(payload: bytes) -> bytes:
        raise RuntimeError("boom")

    handler = RecordingHandler(explode)
    protocol, transport, _ = connect(handler)
    with capturedLogs() as events:
        protocol.dataReceived(encode(b"m1") + encode(b"m2"))
    assert transport.disconnecting
    assert [payload for payload, _ in handler.frames] == [b"m1"]
    assert "RuntimeError" in text_of(list(events))


def test_answer_of_wrong_type_is_a_failure() -> None:
    """A str answer is treated as a handler bug and closes the connection."""
    handler = DeferringHandler()
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(encode(b"m1"))
    with capturedLogs() as events:
        handler.pending[0].callback("ACK")  # type: ignore[arg-type]
    assert transport.value() == b""
    assert transport.disconnecting
    assert "TypeError" in text_of(list(events))


def test_oversize_frame_is_refused_with_nak_and_closed() -> None:
    """An oversize frame calls frame_refused, writes its NAK after earlier answers, closes."""
    handler = DeferringHandler()
    protocol, transport, _ = connect(handler, max_frame_bytes=50)
    protocol.dataReceived(encode(b"m1") + b"\x0bMSH|^~\\&|A|B|||1||ADT^A01|C9|P|2.5\r" + b"x" * 40)
    assert handler.refused == [
        (
            b"MSH|^~\\&|A|B|||1||ADT^A01|C9|P|2.5\rxxxxxxxxxxxxxxx",
            "10.1.2.3:40000",
            "frame larger than 50 bytes",
        )
    ]
    assert transport.value() == b""
    handler.pending[0].callback(b"a1")
    assert transport.value() == encode(b"a1") + encode(b"NAK")
    assert transport.disconnecting


def test_oversize_frame_without_refusal_answer_just_closes() -> None:
    """A None refusal writes nothing and still closes."""
    handler = RecordingHandler(refusal=None)
    protocol, transport, _ = connect(handler, max_frame_bytes=4)
    protocol.dataReceived(encode(b"12345"))
    assert transport.value() == b""
    assert transport.disconnecting


def test_refusal_hook_raising_still_closes() -> None:
    """A frame_refused bug is logged and the oversize connection is still closed."""

    class Broken(RecordingHandler):
        def frame_refused(self, head: bytes, peer: str, reason: str) -> bytes | None:
            raise KeyError("x")

    protocol, transport, _ = connect(Broken(), max_frame_bytes=4)
    with capturedLogs() as events:
        protocol.dataReceived(encode(b"12345"))
    assert transport.disconnecting
    assert "KeyError" in text_of(list(events))


def test_junk_before_start_block_is_skipped() -> None:
    """Bytes before the first start block are dropped and the frame is served."""
    handler = RecordingHandler()
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(b"\r\nnoise" + encode(b"m1"))
    assert transport.value() == encode(b"ACK:m1")
    assert not transport.disconnecting


def test_junk_flood_without_start_block_closes() -> None:
    """More than 64 KiB without a start block closes the connection."""
    protocol, transport, _ = connect(RecordingHandler())
    protocol.dataReceived(b"z" * MAX_JUNK_RUN)
    assert not transport.disconnecting
    protocol.dataReceived(b"z")
    assert transport.disconnecting
    assert transport.value() == b""


def test_http_request_gets_400_and_close() -> None:
    """An HTTP request line at the start of a connection is answered 400 and closed."""
    handler = RecordingHandler()
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    assert transport.value() == HTTP_400
    assert transport.value().startswith(b"HTTP/1.1 400 Bad Request\r\n")
    assert b"MLLP" in transport.value()
    assert transport.disconnecting
    assert handler.frames == []


def test_http_request_split_into_bytes_is_recognised() -> None:
    """The HTTP check works when the method arrives a byte at a time."""
    protocol, transport, _ = connect(RecordingHandler())
    for byte in b"OPTIONS * HTTP/1.1\r\n":
        protocol.dataReceived(bytes([byte]))
    assert transport.value() == HTTP_400


def test_http_like_text_that_is_not_a_method_is_plain_junk() -> None:
    """``GETX`` is not HTTP: it is skipped as junk and the frame after it is served."""
    protocol, transport, _ = connect(RecordingHandler())
    protocol.dataReceived(b"GETX" + encode(b"m1"))
    assert transport.value() == encode(b"ACK:m1")


def test_http_after_a_frame_is_not_sniffed() -> None:
    """Only the start of a connection is checked for HTTP."""
    protocol, transport, _ = connect(RecordingHandler())
    protocol.dataReceived(encode(b"m1") + b"GET / HTTP/1.1\r\n")
    assert transport.value() == encode(b"ACK:m1")
    assert not transport.disconnecting


def test_idle_connection_with_half_a_frame_is_closed_by_the_timeout() -> None:
    """A peer that sends half a frame and stalls is aborted after idle_timeout."""
    clock = Clock()
    protocol, transport, _ = connect(RecordingHandler(), clock, idle_timeout=300)
    protocol.dataReceived(b"\x0bMSH|half")
    clock.advance(299)
    assert not transport.disconnecting
    protocol.dataReceived(b" more")
    clock.advance(299)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting
    assert transport.disconnected


def test_idle_timeout_does_not_run_while_answers_are_pending() -> None:
    """Time spent waiting for the engine's answer is not idle time."""
    clock = Clock()
    handler = DeferringHandler()
    protocol, transport, _ = connect(handler, clock, idle_timeout=300)
    protocol.dataReceived(encode(b"m1"))
    clock.advance(10_000)
    assert not transport.disconnecting
    handler.pending[0].callback(b"a1")
    clock.advance(299)
    assert not transport.disconnecting
    clock.advance(1)
    assert transport.disconnecting


def test_no_idle_timeout_when_disabled() -> None:
    """idle_timeout=None leaves quiet connections open and schedules nothing."""
    clock = Clock()
    _, transport, _ = connect(RecordingHandler(), clock, idle_timeout=None)
    assert clock.getDelayedCalls() == []
    clock.advance(10**9)
    assert not transport.disconnecting


def test_nothing_is_delivered_or_written_after_connection_lost() -> None:
    """After connectionLost, answers are dropped and data is not decoded."""
    clock = Clock()
    handler = DeferringHandler()
    protocol, transport, factory = connect(handler, clock)
    protocol.dataReceived(encode(b"m1"))
    lose(protocol)
    handler.pending[0].callback(b"a1")
    protocol.dataReceived(encode(b"m2"))
    assert transport.value() == b""
    assert len(handler.frames) == 1
    assert clock.getDelayedCalls() == []
    assert factory.open_connections == 0


def test_close_mid_frame_is_logged_with_size_only() -> None:
    """A connection lost inside a frame logs peer and size, not the partial content."""
    protocol, _, _ = connect(RecordingHandler())
    protocol.dataReceived(b"\x0b" + PHI)
    with capturedLogs() as events:
        lose(protocol)
    logged = text_of(list(events))
    assert f"after {len(PHI)} bytes" in logged
    assert "DOE" not in logged


def test_connections_beyond_the_limit_are_refused_and_counted() -> None:
    """buildProtocol returns None past max_connections; open_connections tracks the rest."""
    factory = MLLPServerFactory(RecordingHandler(), clock=Clock(), max_connections=2)
    address = IPv4Address("TCP", "10.0.0.9", 1)
    protocols = [factory.buildProtocol(address) for _ in range(2)]
    for protocol in protocols:
        assert protocol is not None
        protocol.makeConnection(StringTransport())
    assert factory.open_connections == 2
    with capturedLogs() as events:
        assert factory.buildProtocol(address) is None
    assert "10.0.0.9:1" in text_of(list(events))
    assert protocols[0] is not None
    lose(protocols[0])
    assert factory.open_connections == 1
    assert factory.buildProtocol(address) is not None


def test_tcp_no_delay_is_enabled_when_the_transport_supports_it() -> None:
    """Nagle is switched off so small ACKs leave at once."""
    _, transport, _ = connect(RecordingHandler(), transport=NoDelayTransport())
    assert isinstance(transport, NoDelayTransport)
    assert transport.no_delay is True


def test_reading_pauses_when_too_many_answers_are_pending() -> None:
    """A sender far ahead of the engine is paused, and resumed as answers drain."""
    handler = DeferringHandler()
    protocol, transport, _ = connect(handler)
    protocol.dataReceived(encode(b"m") * (MAX_PENDING - 1))
    assert transport.producerState == "producing"
    protocol.dataReceived(encode(b"m"))
    assert transport.producerState == "paused"
    for d in handler.pending[: MAX_PENDING // 2]:
        d.callback(b"a")
    assert transport.producerState == "producing"


def test_peer_formatting_covers_ipv6() -> None:
    """IPv6 peers are bracketed so the port stays unambiguous."""
    assert format_peer(IPv6Address("TCP", "::1", 2575)) == "[::1]:2575"
    assert format_peer(IPv4Address("TCP", "127.0.0.1", 2575)) == "127.0.0.1:2575"


def test_failed_deferred_that_fired_already_is_handled() -> None:
    """An already-failed Deferred from the handler closes the connection cleanly."""
    handler = RecordingHandler(lambda payload: fail(OSError("disk")))
    protocol, transport, _ = connect(handler)
    with capturedLogs():
        protocol.dataReceived(encode(b"m1"))
    assert transport.disconnecting
    assert transport.value() == b""


def test_synchronous_answer_of_wrong_type_is_a_failure() -> None:
    """A str returned directly is a handler bug: nothing is written and the peer is closed."""
    handler = RecordingHandler(lambda payload: "ACK")  # type: ignore[arg-type,return-value]
    protocol, transport, _ = connect(handler)
    with capturedLogs() as events:
        protocol.dataReceived(encode(b"m1"))
    assert transport.value() == b""
    assert transport.disconnecting
    assert "TypeError" in text_of(list(events))
