"""`write_now` over real loopback TCP: sent at once when it can be, in order always."""

from __future__ import annotations

from typing import Any

from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint, connectProtocol
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.testing import StringTransport
from twisted.trial.unittest import TestCase

from mllp.send_now import write_now

reactor: Any = _reactor


class Collector(Protocol):
    """The peer: keeps every byte and fires when it holds `expected` of them."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.data = bytearray()
        self.complete: Deferred[bytes] = Deferred()

    def dataReceived(self, data: bytes) -> None:
        self.data += data
        if len(self.data) >= self.expected and not self.complete.called:
            self.complete.callback(bytes(self.data))


class Sender(Protocol):
    """The side under test: its transport is a plain `tcp.Client`."""

    def __init__(self) -> None:
        self.up: Deferred[None] = Deferred()

    def connectionMade(self) -> None:
        self.up.callback(None)


class WriteNowTests(TestCase):
    @inlineCallbacks
    def connect(self, expected: int) -> Any:
        peer = Collector(expected)
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(
            Factory.forProtocol(lambda: peer))
        self.addCleanup(port.stopListening)
        sender = Sender()
        yield connectProtocol(
            TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port), sender)
        yield sender.up
        self.addCleanup(sender.transport.loseConnection)
        return sender, peer

    @inlineCallbacks
    def test_an_idle_socket_sends_without_waiting_for_the_reactor(self) -> Any:
        """Nothing is left in Twisted's buffer and the socket is not registered for writing."""
        sender, peer = yield self.connect(len(b"\x0bACK\x1c\r"))
        write_now(sender.transport, b"\x0bACK\x1c\r")
        self.assertEqual(sender.transport._tempDataBuffer, [])
        self.assertEqual(sender.transport.dataBuffer, b"")
        self.assertNotIn(sender.transport, reactor.getWriters())
        received = yield peer.complete
        self.assertEqual(received, b"\x0bACK\x1c\r")

    @inlineCallbacks
    def test_buffered_data_is_never_overtaken(self) -> Any:
        """Behind bytes Twisted still holds, the answer queues after them."""
        bulk = bytes(range(256)) * 40_000  # ~10 MB: more than the socket takes at once
        tail = b"\x0bLAST\x1c\r"
        sender, peer = yield self.connect(len(bulk) + len(tail))
        sender.transport.write(bulk)
        write_now(sender.transport, tail)
        received = yield peer.complete
        self.assertEqual(received, bulk + tail)

    def test_other_transports_take_the_usual_path(self) -> None:
        """A transport that is not plain TCP (TLS, a test double) gets a normal write."""
        transport = StringTransport()
        write_now(transport, b"answer")
        self.assertEqual(transport.value(), b"answer")
