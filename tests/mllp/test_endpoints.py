"""Endpoint construction: TLS settings loading and connection refusal under TLS."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.protocols.tls import TLSMemoryBIOProtocol

from mllp.endpoints import TLSServerEndpoint, TLSSettings, server_endpoint
from mllp.server import MLLPServerFactory, MLLPServerProtocol
from tests.mllp import certs
from tests.mllp.fakes import RecordingHandler


@pytest.fixture
def server_tls(tmp_path: Path) -> TLSSettings:
    """Listener TLS settings from a throwaway CA."""
    ca = certs.make_ca(tmp_path, "ca")
    leaf = certs.issue(tmp_path, ca, "server", server=True)
    return TLSSettings(leaf.certificate, leaf.private_key, ca.certificate, True)


def test_plain_description_gives_the_described_endpoint() -> None:
    """Without TLS the endpoint string is used as is."""
    endpoint = server_endpoint(MemoryReactorClock(), "tcp:2575:interface=127.0.0.1", None)
    assert isinstance(endpoint, TCP4ServerEndpoint)


def test_refused_connection_stays_refused_under_tls(server_tls: TLSSettings) -> None:
    """A factory at its connection limit refuses before any TLS handshake is built."""
    reactor = MemoryReactorClock()
    endpoint = server_endpoint(reactor, "tcp:0:interface=127.0.0.1", server_tls)
    assert isinstance(endpoint, TLSServerEndpoint)
    factory = MLLPServerFactory(RecordingHandler(), clock=Clock(), max_connections=0)
    endpoint.listen(factory)
    (_, tls_factory, _, _) = reactor.tcpServers[0]
    assert tls_factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1)) is None


def test_accepted_connection_is_wrapped_in_tls(server_tls: TLSSettings) -> None:
    """Under the limit, the listener's protocol sits inside a TLS protocol."""
    reactor = MemoryReactorClock()
    server_endpoint(reactor, "tcp:0", server_tls).listen(
        MLLPServerFactory(RecordingHandler(), clock=Clock())
    )
    (_, tls_factory, _, _) = reactor.tcpServers[0]
    protocol = tls_factory.buildProtocol(IPv4Address("TCP", "10.0.0.1", 1))
    assert isinstance(protocol, TLSMemoryBIOProtocol)
    assert isinstance(protocol.wrappedProtocol, MLLPServerProtocol)


def test_unreadable_certificate_file_names_the_path(tmp_path: Path) -> None:
    """A certificate file without PEM certificates is a configuration error naming it."""
    bogus = tmp_path / "server.crt"
    bogus.write_text("not a certificate")
    settings = TLSSettings(bogus, tmp_path / "server.key")
    with pytest.raises(ValueError, match=r"server\.crt"):
        server_endpoint(MemoryReactorClock(), "tcp:0", settings)


def test_unreadable_key_file_names_the_path(tmp_path: Path, server_tls: TLSSettings) -> None:
    """A private key file that is not a PEM key is a configuration error naming it."""
    bogus = tmp_path / "server.key"
    bogus.write_text("not a key")
    settings = TLSSettings(server_tls.certificate, bogus)
    with pytest.raises(ValueError, match=r"server\.key"):
        server_endpoint(MemoryReactorClock(), "tcp:0", settings)
