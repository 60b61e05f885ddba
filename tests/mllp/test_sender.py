"""MLLPSender against real loopback peers; time (ACK waits, reconnects) on a task.Clock."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.address import IPv4Address
from twisted.internet.defer import CancelledError, Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mllp.codec import Decoder, Frame, encode
from mllp.endpoints import ClientTLSSettings, TLSSettings, server_endpoint
from mllp.sender import (
    ACKTimeout,
    ACKTooLarge,
    ConnectionLostBeforeACK,
    MLLPSender,
    NotConnected,
)
from tests.mllp import certs

reactor: Any = _reactor

Behaviour = Callable[["Peer", bytes], None]


def ack_for(payload: bytes) -> bytes:
    return b"ACK:" + payload


def answer_at_once(peer: Peer, payload: bytes) -> None:
    peer.answer(payload)


def never_answer(peer: Peer, payload: bytes) -> None:
    pass


class Peer(Protocol):
    """A stand-in receiver: decodes frames and lets the server's behaviour answer them."""

    def __init__(self, server: PeerServer) -> None:
        self.server = server
        self.decoder = Decoder()
        self.outstanding = 0
        self.gone: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.server.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        for event in self.decoder.feed(data):
            if isinstance(event, Frame):
                self.outstanding += 1
                self.server.most_outstanding = max(self.server.most_outstanding, self.outstanding)
                self.server.frame(self, event.payload)

    def answer(self, payload: bytes) -> None:
        self.outstanding -= 1
        self.transport.write(encode(ack_for(payload)))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone.callback(None)


class PeerServer(Factory):
    """Counts frames across connections; ``wait_frames(n)`` fires once n have arrived."""

    def __init__(self, behaviour: Behaviour = answer_at_once) -> None:
        self.behaviour = behaviour
        self.frames: list[bytes] = []
        self.connections: list[Peer] = []
        self.most_outstanding = 0
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def buildProtocol(self, addr: Any) -> Peer:
        return Peer(self)

    def frame(self, peer: Peer, payload: bytes) -> None:
        self.frames.append(payload)
        self.behaviour(peer, payload)
        still = []
        for count, waiter in self._waiting:
            if len(self.frames) >= count:
                waiter.callback(None)
            else:
                still.append((count, waiter))
        self._waiting = still

    def wait_frames(self, count: int) -> Deferred[None]:
        waiter: Deferred[None] = Deferred()
        if len(self.frames) >= count:
            waiter.callback(None)
        else:
            self._waiting.append((count, waiter))
        return waiter


class Attempts:
    """A retry policy of a fixed delay that tells the test when a connect attempt failed."""

    def __init__(self, delay: float = 1.0) -> None:
        self.delay = delay
        self.calls: list[int] = []
        self._waiting: list[tuple[int, Deferred[None]]] = []

    def __call__(self, attempt: int) -> float:
        self.calls.append(attempt)
        still = []
        for count, waiter in self._waiting:
            if len(self.calls) >= count:
                # ClientService schedules the retry after asking: tell the test a turn later.
                reactor.callLater(0, waiter.callback, None)
            else:
                still.append((count, waiter))
        self._waiting = still
        return self.delay

    def wait_calls(self, count: int) -> Deferred[None]:
        """Fires once ``count`` attempts have failed and the last retry is on the clock."""
        waiter: Deferred[None] = Deferred()
        if len(self.calls) >= count:
            waiter.callback(None)
        else:
            self._waiting.append((count, waiter))
        return waiter


class SenderTest(TestCase):
    """A peer on 127.0.0.1 port 0 and a sender to it, both torn down after each test."""

    timeout = 20

    def setUp(self) -> None:
        self.clock = Clock()
        self.attempts = Attempts()

    @inlineCallbacks
    def listen(self, server: PeerServer, port: int = 0, endpoint: Any = None) -> Any:
        endpoint = endpoint or TCP4ServerEndpoint(reactor, port, interface="127.0.0.1")
        listening = yield endpoint.listen(server)
        self.addCleanup(self._gone, server)
        self.addCleanup(listening.stopListening)
        return listening

    def _gone(self, server: PeerServer) -> Deferred[Any]:
        for peer in server.connections:
            peer.transport.loseConnection()
        return gatherResults([peer.gone for peer in server.connections])

    def sender(self, port: int, **options: Any) -> MLLPSender:
        options.setdefault("ack_timeout", 30)
        options.setdefault("connect_timeout", 10)
        sender = MLLPSender(
            reactor, ("127.0.0.1", port), clock=self.clock, retry_policy=self.attempts, **options
        )
        sender.start()
        self.addCleanup(sender.stop)
        return sender

    @inlineCallbacks
    def failure_of(self, result: Deferred[Any]) -> Any:
        """The exception ``result`` fails with (the test fails if it succeeds)."""
        try:
            value = yield result
        except Exception as error:
            return error
        self.fail(f"expected a failure, got {value!r}")


class SenderOverSocketTest(SenderTest):
    """What the sender does with peers that answer, dawdle, stay silent or hang up."""

    @inlineCallbacks
    def test_peer_that_acks_gets_each_answer(self) -> Any:
        """A send fires with the unframed answer of the peer."""
        server = PeerServer()
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port)
        answer = yield sender.send(b"MSH|1")
        self.assertEqual(answer, ack_for(b"MSH|1"))
        self.assertEqual(server.frames, [b"MSH|1"])

    @inlineCallbacks
    def test_answer_after_a_delay_within_the_timeout_is_delivered(self) -> Any:
        """An answer 29 s after the write (on the clock) still belongs to its message."""
        server = PeerServer(never_answer)
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port, ack_timeout=30)
        result = sender.send(b"m1")
        yield server.wait_frames(1)
        self.clock.advance(29)
        server.connections[0].answer(b"m1")
        self.assertEqual((yield result), ack_for(b"m1"))
        self.clock.advance(5)
        self.assertTrue(sender.connected)

    @inlineCallbacks
    def test_silent_peer_times_out_and_its_late_ack_is_never_matched(self) -> Any:
        """After ACKTimeout the connection is dropped; the next message gets its own answer."""
        server = PeerServer(never_answer)
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port, ack_timeout=30)
        first = sender.send(b"m1")
        yield server.wait_frames(1)
        self.clock.advance(30)
        error = yield self.failure_of(first)
        self.assertIsInstance(error, ACKTimeout)
        self.assertEqual(str(error), "no ACK within 30 s")
        old = server.connections[0]
        yield old.gone
        server.behaviour = answer_at_once
        second = sender.send(b"m2")
        old.answer(b"m1")
        yield self.attempts.wait_calls(1)
        self.clock.advance(self.attempts.delay)
        self.assertEqual((yield second), ack_for(b"m2"))
        self.assertEqual(len(server.connections), 2)

    @inlineCallbacks
    def test_peer_closing_mid_ack_is_connection_lost_and_next_send_reconnects(self) -> Any:
        """Half an ACK then a close fails that send; the sender reconnects for the next."""

        def half_then_close(peer: Peer, payload: bytes) -> None:
            frame = encode(ack_for(payload))
            peer.transport.write(frame[: len(frame) // 2])
            peer.transport.loseConnection()

        server = PeerServer(half_then_close)
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port)
        error = yield self.failure_of(sender.send(b"m1"))
        self.assertIsInstance(error, ConnectionLostBeforeACK)
        self.assertIn("ConnectionDone", str(error))
        server.behaviour = answer_at_once
        second = sender.send(b"m2")
        yield self.attempts.wait_calls(1)
        self.clock.advance(self.attempts.delay)
        self.assertEqual((yield second), ack_for(b"m2"))

    @inlineCallbacks
    def test_peer_down_at_first_then_up_gets_the_message(self) -> Any:
        """A refused connect is retried on the backoff clock; the queued send goes through."""
        probe = yield self.listen(PeerServer())
        number = probe.getHost().port
        yield probe.stopListening()
        sender = self.sender(number, connect_timeout=60)
        result = sender.send(b"m1")
        yield self.attempts.wait_calls(1)
        self.assertFalse(result.called)
        server = PeerServer()
        yield self.listen(server, port=number)
        self.clock.advance(self.attempts.delay)
        self.assertEqual((yield result), ack_for(b"m1"))
        self.assertEqual(self.attempts.calls, [1])

    @inlineCallbacks
    def test_peer_that_stays_down_is_not_connected_after_the_connect_timeout(self) -> Any:
        """Queued sends fail in order with NotConnected naming the refusal, not the content."""
        probe = yield self.listen(PeerServer())
        number = probe.getHost().port
        yield probe.stopListening()
        sender = self.sender(number, connect_timeout=10)
        results = [sender.send(b"m1"), sender.send(b"m2")]
        yield self.attempts.wait_calls(1)
        self.clock.advance(10)
        for result in results:
            error = yield self.failure_of(result)
            self.assertIsInstance(error, NotConnected)
            self.assertIn("within 10 s (ConnectionRefusedError)", str(error))
            self.assertNotIn("m1", str(error))

    @inlineCallbacks
    def test_many_sends_are_written_in_order_one_at_a_time(self) -> Any:
        """Fifty queued sends reach the peer in order, never two awaiting answers at once."""
        def answer_next_turn(peer: Peer, payload: bytes) -> None:
            reactor.callLater(0, peer.answer, payload)

        server = PeerServer(answer_next_turn)
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port)
        payloads = [b"m%d" % n for n in range(50)]
        answers = yield gatherResults([sender.send(p) for p in payloads])
        self.assertEqual(answers, [ack_for(p) for p in payloads])
        self.assertEqual(server.frames, payloads)
        self.assertEqual(server.most_outstanding, 1)

    @inlineCallbacks
    def test_two_answers_in_one_chunk_drop_the_connection(self) -> Any:
        """An extra answer can't pair with the next message: the connection is replaced."""

        def answer_twice(peer: Peer, payload: bytes) -> None:
            peer.transport.write(encode(ack_for(payload)) + encode(b"stray"))

        server = PeerServer(answer_twice)
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port)
        first = sender.send(b"m1")
        second = sender.send(b"m2")
        self.assertEqual((yield first), ack_for(b"m1"))
        yield server.connections[0].gone
        server.behaviour = answer_at_once
        yield self.attempts.wait_calls(1)
        self.clock.advance(self.attempts.delay)
        self.assertEqual((yield second), ack_for(b"m2"))
        self.assertEqual(server.frames, [b"m1", b"m2"])

    @inlineCallbacks
    def test_cancelling_the_send_in_flight_drops_the_connection(self) -> Any:
        """A cancelled send's answer could arrive late, so its connection goes too."""
        server = PeerServer(never_answer)
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port)
        result = sender.send(b"m1")
        yield server.wait_frames(1)
        result.cancel()
        error = yield self.failure_of(result)
        self.assertIsInstance(error, CancelledError)
        yield server.connections[0].gone

    @inlineCallbacks
    def test_stop_waits_for_the_answer_in_flight_and_refuses_the_rest(self) -> Any:
        """Stopping lets the written message finish; queued and later sends fail at once."""
        server = PeerServer(never_answer)
        port = yield self.listen(server)
        sender = self.sender(port.getHost().port)
        first = sender.send(b"m1")
        queued = sender.send(b"m2")
        yield server.wait_frames(1)
        stopped = sender.stop()
        self.assertIsInstance((yield self.failure_of(queued)), NotConnected)
        self.assertFalse(stopped.called)
        server.connections[0].answer(b"m1")
        self.assertEqual((yield first), ack_for(b"m1"))
        yield stopped
        self.assertIsInstance((yield self.failure_of(sender.send(b"m3"))), NotConnected)


class SenderOverTLSTest(SenderTest):
    """The sender verifies the peer with the configured CA."""

    def setUp(self) -> None:
        super().setUp()
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        self.ca = certs.make_ca(directory, "interlink-test-ca")
        self.rogue = certs.make_ca(directory, "rogue-ca")
        self.server_cert = certs.issue(directory, self.ca, "ehr", server=True)

    def tls_listener(self) -> Any:
        settings = TLSSettings(self.server_cert.certificate, self.server_cert.private_key)
        return server_endpoint(reactor, "tcp:0:interface=127.0.0.1", settings)

    @inlineCallbacks
    def test_trusted_peer_over_tls_acks(self) -> Any:
        """With the right CA the message goes over TLS and the answer comes back."""
        server = PeerServer()
        port = yield self.listen(server, endpoint=self.tls_listener())
        tls = ClientTLSSettings(ca_certificates=self.ca.certificate)
        sender = self.sender(port.getHost().port, tls=tls)
        self.assertEqual((yield sender.send(b"m1")), ack_for(b"m1"))

    @inlineCallbacks
    def test_untrusted_peer_gets_nothing(self) -> Any:
        """A peer whose certificate the CA did not sign never sees the message."""
        server = PeerServer()
        port = yield self.listen(server, endpoint=self.tls_listener())
        tls = ClientTLSSettings(ca_certificates=self.rogue.certificate)
        sender = self.sender(port.getHost().port, tls=tls)
        error = yield self.failure_of(sender.send(b"m1"))
        self.assertIsInstance(error, ConnectionLostBeforeACK)
        self.assertEqual(str(error), "connection closed before ACK (TLSError)")
        self.assertEqual(server.frames, [])


class FakePeer:
    """One sender on a MemoryReactorClock whose single connection the test plays."""

    def __init__(self, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.sender = MLLPSender(
            self.reactor, "tcp:host=10.0.0.5:port=2575", retry_policy=lambda n: 1.0, **options
        )
        self.sender.start()
        _, _, factory, _, _ = self.reactor.tcpClients[0]
        self.protocol = factory.buildProtocol(IPv4Address("TCP", "10.0.0.5", 2575))
        self.transport = StringTransport()
        self.protocol.makeConnection(self.transport)

    def sent(self) -> bytes:
        data = self.transport.value()
        self.transport.clear()
        return data


def outcome(result: Deferred[bytes]) -> Any:
    """The value or the exception a fired Deferred holds."""
    box: list[Any] = []
    result.addBoth(box.append)
    (value,) = box
    return value.value if isinstance(value, Failure) else value


def test_second_send_waits_for_the_first_answer() -> None:
    """Only one frame is on the wire until its answer arrives, even split in pieces."""
    peer = FakePeer()
    first, second = peer.sender.send(b"m1"), peer.sender.send(b"m2")
    assert peer.sent() == encode(b"m1")
    frame = encode(b"a1")
    peer.protocol.dataReceived(frame[:2])
    assert peer.sent() == b""
    peer.protocol.dataReceived(frame[2:])
    assert outcome(first) == b"a1"
    assert peer.sent() == encode(b"m2")
    assert not second.called


def test_answer_while_nothing_is_asked_drops_the_connection() -> None:
    """An unsolicited frame on an idle connection is never kept for the next message."""
    peer = FakePeer()
    peer.protocol.dataReceived(encode(b"stray"))
    assert peer.transport.disconnecting
    assert not peer.sender.connected


def test_oversize_answer_fails_the_send_and_drops_the_connection() -> None:
    """An answer past max_frame_bytes is ACKTooLarge, and the connection goes."""
    peer = FakePeer(max_frame_bytes=8)
    result = peer.sender.send(b"m1")
    peer.protocol.dataReceived(encode(b"x" * 20))
    error = outcome(result)
    assert isinstance(error, ACKTooLarge)
    assert str(error) == "ACK larger than 8 bytes"
    assert peer.transport.disconnecting


def test_ack_timer_runs_on_the_injected_clock() -> None:
    """The ACK wait is measured on the clock given, not the reactor's."""
    clock = Clock()
    peer = FakePeer(clock=clock, ack_timeout=5)
    result = peer.sender.send(b"m1")
    peer.reactor.advance(60)
    assert not result.called
    clock.advance(5)
    assert isinstance(outcome(result), ACKTimeout)
