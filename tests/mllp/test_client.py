"""send_messages against a fake reactor: timeouts and odd receivers, no real time."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionLost
from twisted.internet.testing import MemoryReactorClock, StringTransport
from twisted.python.failure import Failure

from mllp.client import (
    MLLPConnectionClosed,
    MLLPProtocolError,
    MLLPTimeout,
    send_messages,
)
from mllp.codec import encode
from mllp.endpoints import ClientTLSSettings, TLSSettings, client_endpoint

TARGET = "tcp:host=10.0.0.5:port=2575"


class Conversation:
    """One send_messages call whose connection the test plays the receiver for."""

    def __init__(self, payloads: list[bytes], timeout: float = 30, **options: Any) -> None:
        self.reactor = MemoryReactorClock()
        self.result = send_messages(self.reactor, TARGET, payloads, timeout=timeout, **options)
        self.outcome: list[Any] = []
        self.result.addBoth(self.outcome.append)
        self.transport = StringTransport()
        self.protocol: Any = None

    def accept(self) -> None:
        """Complete the TCP connection the sender asked for."""
        host, port, factory, _, _ = self.reactor.tcpClients[0]
        assert (host, port) == ("10.0.0.5", 2575)
        self.protocol = factory.buildProtocol(IPv4Address("TCP", host, port))
        self.protocol.makeConnection(self.transport)

    def sent(self) -> bytes:
        """Bytes written by the sender so far (and forget them)."""
        data = self.transport.value()
        self.transport.clear()
        return data

    def answer(self, data: bytes) -> None:
        self.protocol.dataReceived(data)

    def close(self, reason: Exception | None = None) -> None:
        """The connection ends, as the reactor would report it."""
        self.protocol.connectionLost(Failure(reason or ConnectionDone()))

    def error(self) -> BaseException:
        """The exception the result failed with."""
        (failure,) = self.outcome
        assert isinstance(failure, Failure), failure
        failure.trap(Exception)
        return failure.value


def test_messages_are_sent_one_at_a_time_and_answers_returned_in_order() -> None:
    """The next message is written only after the previous answer arrives."""
    talk = Conversation([b"m1", b"m2"])
    talk.accept()
    assert talk.sent() == encode(b"m1")
    talk.answer(b"\n" + encode(b"a1")[:3])
    assert talk.sent() == b""
    talk.answer(encode(b"a1")[3:])
    assert talk.sent() == encode(b"m2")
    talk.answer(encode(b"a2"))
    assert talk.transport.disconnecting
    assert talk.outcome == []
    talk.close()
    assert talk.outcome == [[b"a1", b"a2"]]


def test_no_answer_within_timeout_is_mllp_timeout() -> None:
    """A receiver that never answers gives MLLPTimeout naming the message."""
    talk = Conversation([b"m1", b"m2"], timeout=5)
    talk.accept()
    talk.answer(encode(b"a1"))
    talk.reactor.advance(4.9)
    assert not talk.transport.disconnecting
    talk.reactor.advance(0.1)
    assert talk.transport.disconnected
    talk.close(ConnectionLost())
    error = talk.error()
    assert isinstance(error, MLLPTimeout)
    assert str(error) == "no answer to message 2 of 2 within 5 s"


def test_connect_that_never_completes_is_mllp_timeout() -> None:
    """A connect attempt that hangs is abandoned after the timeout."""
    talk = Conversation([b"m1"], timeout=3)
    talk.reactor.advance(3)
    error = talk.error()
    assert isinstance(error, MLLPTimeout)
    assert "could not connect" in str(error)
    assert talk.reactor.connectors[0].stoppedConnecting


def test_close_before_all_answers_is_connection_closed() -> None:
    """A receiver hanging up early gives MLLPConnectionClosed with the count."""
    talk = Conversation([b"m1", b"m2", b"m3"])
    talk.accept()
    talk.answer(encode(b"a1"))
    talk.close()
    error = talk.error()
    assert isinstance(error, MLLPConnectionClosed)
    assert str(error) == "connection closed after 1 of 3 answers"


def test_oversize_answer_is_a_protocol_error() -> None:
    """An answer beyond max_frame_bytes aborts the connection with MLLPProtocolError."""
    talk = Conversation([b"m1"], max_frame_bytes=8)
    talk.accept()
    talk.answer(encode(b"x" * 9))
    assert talk.transport.disconnected
    talk.close(ConnectionLost())
    assert isinstance(talk.error(), MLLPProtocolError)


def test_no_timer_is_left_behind_after_success() -> None:
    """A finished conversation leaves no delayed calls on the reactor."""
    talk = Conversation([b"m1"])
    talk.accept()
    talk.answer(encode(b"a1"))
    talk.close()
    assert talk.reactor.getDelayedCalls() == []


def test_empty_payload_list_needs_no_connection() -> None:
    """Sending nothing succeeds at once without connecting."""
    reactor = MemoryReactorClock()
    outcome: list[Any] = []
    d: Deferred[list[bytes]] = send_messages(reactor, TARGET, [])
    d.addBoth(outcome.append)
    assert outcome == [[]]
    assert reactor.tcpClients == []


def test_tls_to_an_endpoint_string_needs_a_hostname() -> None:
    """Without a host in the target, TLS must be told which name to verify."""
    with pytest.raises(ValueError, match="hostname"):
        client_endpoint(MemoryReactorClock(), TARGET, ClientTLSSettings())


def test_tls_settings_reject_inconsistent_combinations(tmp_path: Any) -> None:
    """Requiring client certificates without CAs, or a cert without its key, is refused."""
    with pytest.raises(ValueError, match="ca_certificates"):
        TLSSettings(tmp_path / "c.pem", tmp_path / "k.pem", require_client_certificate=True)
    with pytest.raises(ValueError, match="private key"):
        ClientTLSSettings(certificate=tmp_path / "c.pem")
