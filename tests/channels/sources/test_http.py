"""The HTTP source on a real loopback twisted.web server, with a real MLLP source behind it.

Clients are treq (plain and TLS) and, where the test needs to misbehave on the wire
(chunked bodies, hanging up early), a raw TCP protocol.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import treq
from pydantic import ValidationError
from twisted.internet import defer
from twisted.internet import reactor as _reactor
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase
from twisted.web.client import Agent, HTTPConnectionPool
from twisted.web.iweb import IPolicyForHTTPS
from zope.interface import implementer

from channels.ids import ControlIdSource
from channels.mllp_source import MLLPSource, Received
from channels.sources.http import HTTPSourceConfig, HTTPTLSConfig, listen_http
from mllp.endpoints import ClientTLSSettings, client_options
from tests.mllp import certs
from tests.support import msa

reactor: Any = _reactor
NOW = 1_764_072_000.0

ADT = (b"MSH|^~\\&|HIS|WARD|||20261125120000||ADT^A08^ADT_A01|C-1|P|2.5\r"
       b"EVN|A08\rPID|||MRN1\rPV1||I\r")
HL7 = {b"Content-Type": [b"application/hl7-v2"]}


class Commits:
    """The store's commit: records each message and fires at once, or holds it."""

    def __init__(self, hold: bool = False) -> None:
        self.hold = hold
        self.received: list[Received] = []
        self.pending: list[defer.Deferred[Any]] = []
        self.arrived: defer.Deferred[None] = defer.Deferred()

    def __call__(self, received: Received) -> defer.Deferred[Any]:
        self.received.append(received)
        d: defer.Deferred[Any] = defer.Deferred()
        if self.hold:
            self.pending.append(d)
        else:
            d.callback(None)
        if not self.arrived.called:
            self.arrived.callback(None)
        return d


class RawHTTP(Protocol):
    """Writes a request as given and collects whatever comes back until the close."""

    def __init__(self, request: bytes) -> None:
        self.request = request
        self.received = b""
        self.closed: defer.Deferred[bytes] = defer.Deferred()

    def connectionMade(self) -> None:
        self.transport.write(self.request)  # type: ignore[union-attr]

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.received)


def chunked(*parts: bytes) -> bytes:
    """A chunked transfer-encoding body made of ``parts``."""
    return b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"


@implementer(IPolicyForHTTPS)
class TrustOnly:
    """An HTTPS policy trusting one test CA for every host."""

    def __init__(self, ca: Path) -> None:
        self.ca = ca

    def creatorForNetloc(self, hostname: bytes, port: int) -> Any:
        return client_options(ClientTLSSettings(ca_certificates=self.ca), hostname.decode())


def test_config_defaults_and_checks() -> None:
    """Defaults match the documentation; typos, bad paths and ports are errors."""
    config = HTTPSourceConfig.model_validate({"type": "http", "port": 8080})
    assert (config.interface, config.path, config.tls) == ("127.0.0.1", "/hl7", None)
    assert config.max_body_bytes == 16 * 1024 * 1024
    assert config.endpoint_description() == "tcp:8080:interface=127.0.0.1"
    v6 = HTTPSourceConfig(type="http", port=1, interface="::1")
    assert v6.endpoint_description() == "tcp:1:interface=\\:\\:1"
    for bad in ({"type": "http", "port": 8080, "pth": "/x"},
                {"type": "http", "port": 70000},
                {"type": "http", "port": 1, "path": "hl7"},
                {"type": "http", "port": 1, "tls": {"certificate": "c.pem"}}):
        with pytest.raises(ValidationError):
            HTTPSourceConfig.model_validate(bad)


class HTTPSourceTests(TestCase):
    """POSTs to a listening site on 127.0.0.1, port 0."""

    timeout = 30

    def setUp(self) -> defer.Deferred[None]:
        return self.serve()

    @defer.inlineCallbacks
    def serve(self, hold: bool = False, tls: HTTPTLSConfig | None = None, **options: Any
              ) -> Any:
        if getattr(self, "port", None) is not None:
            yield self.port.stopListening()
        self.commits = Commits(hold)
        mllp = MLLPSource("http-in", self.commits, clock=reactor,
                          control_ids=ControlIdSource(NOW))
        config = HTTPSourceConfig(type="http", port=0, tls=tls, **options)
        self.port = yield listen_http(reactor, config, mllp.frame_received)
        self.addCleanup(self.port.stopListening)
        scheme = "https" if tls else "http"
        self.base = f"{scheme}://127.0.0.1:{self.port.getHost().port}"
        self.url = self.base + config.path

    def client(self, policy: Any = None) -> treq.client.HTTPClient:
        pool = HTTPConnectionPool(reactor)
        self.addCleanup(pool.closeCachedConnections)
        agent = Agent(reactor, pool=pool, **({"contextFactory": policy} if policy else {}))
        return treq.client.HTTPClient(agent)

    @defer.inlineCallbacks
    def post(self, body: bytes, headers: Any = None, url: str | None = None,
             method: str = "POST") -> Any:
        response = yield self.client().request(method, url or self.url, data=body,
                                               headers=HL7 if headers is None else headers)
        content = yield treq.content(response)
        return response, content

    @defer.inlineCallbacks
    def raw(self, request: bytes) -> Any:
        endpoint = TCP4ClientEndpoint(reactor, "127.0.0.1", self.port.getHost().port)
        client = RawHTTP(request)
        yield connectProtocol(endpoint, client)
        return client

    @defer.inlineCallbacks
    def test_post_is_stored_and_answered_with_its_ack(self) -> Any:
        """200, application/hl7-v2, MSA AA; the store got the exact bytes and the peer."""
        response, body = yield self.post(ADT)
        assert response.code == 200
        assert response.headers.getRawHeaders(b"content-type") == [b"application/hl7-v2"]
        assert msa(body)[1:3] == [b"AA", b"C-1"]
        [received] = self.commits.received
        assert received.raw == ADT and received.channel == "http-in"
        assert received.peer.startswith("http:127.0.0.1:")

    @defer.inlineCallbacks
    def test_every_hl7_content_type_is_accepted(self) -> Any:
        """The ER7 media types and text/plain (with parameters) are all taken."""
        for media_type in (b"x-application/hl7-v2+er7", b"text/plain; charset=utf-8",
                           b"Application/HL7-v2"):
            response, body = yield self.post(ADT, {b"Content-Type": [media_type]})
            assert response.code == 200 and msa(body)[1] == b"AA"
        assert len(self.commits.received) == 3

    @defer.inlineCallbacks
    def test_no_answer_before_the_commit(self) -> Any:
        """Promise 1: the response is written only after the commit fired."""
        yield self.serve(hold=True)
        answer = self.post(ADT)
        yield self.commits.arrived
        assert not answer.called
        self.commits.pending[0].callback(None)
        response, body = yield answer
        assert response.code == 200 and msa(body)[1] == b"AA"

    @defer.inlineCallbacks
    def test_store_failure_is_ae_inside_a_200(self) -> Any:
        """The HTTP exchange succeeded; the ACK (AE, ERR 207) carries the verdict."""
        yield self.serve(hold=True)
        answer = self.post(ADT)
        yield self.commits.arrived
        self.commits.pending[0].errback(OSError("disk full"))
        response, body = yield answer
        assert response.code == 200 and msa(body)[1] == b"AE" and b"207" in body
        self.flushLoggedErrors()

    @defer.inlineCallbacks
    def test_unreadable_message_is_stored_and_rejected(self) -> Any:
        """Junk is stored as received and answered AR, still with 200."""
        response, body = yield self.post(b"garbage, not HL7", {b"Content-Type": [b"text/plain"]})
        assert response.code == 200 and msa(body)[1] == b"AR"
        assert self.commits.received[0].raw == b"garbage, not HL7"

    @defer.inlineCallbacks
    def test_batch_gets_one_ack_per_message(self) -> Any:
        """A BHS/BTS body is split by the source; both ACKs come back in one body."""
        batch = b"BHS|^~\\&|HIS\r" + ADT + ADT.replace(b"C-1", b"C-2") + b"BTS|2\r"
        response, body = yield self.post(batch)
        assert response.code == 200
        assert [line.split(b"|")[2] for line in body.split(b"\r") if line.startswith(b"MSA")] \
            == [b"C-1", b"C-2"]

    @defer.inlineCallbacks
    def test_other_methods_are_405(self) -> Any:
        """GET, PUT and friends are refused with Allow: POST; nothing is stored."""
        for method in ("GET", "PUT", "DELETE"):
            response, _ = yield self.post(b"", method=method)
            assert response.code == 405
            assert response.headers.getRawHeaders(b"allow") == [b"POST"]
        assert self.commits.received == []

    @defer.inlineCallbacks
    def test_empty_body_is_400_and_other_types_415(self) -> Any:
        """An empty POST and a form post are refused; nothing is stored."""
        response, _ = yield self.post(b"")
        assert response.code == 400
        response, _ = yield self.post(b"  \r\n")
        assert response.code == 400
        response, _ = yield self.post(ADT, {b"Content-Type": [b"application/json"]})
        assert response.code == 415
        assert self.commits.received == []

    @defer.inlineCallbacks
    def test_other_paths_are_404(self) -> Any:
        """Only the configured path receives; elsewhere, and below it, is 404."""
        for url in (self.base + "/", self.base + "/other", self.url + "/deeper"):
            response, _ = yield self.post(ADT, url=url)
            assert response.code == 404
        assert self.commits.received == []

    @defer.inlineCallbacks
    def test_nested_path(self) -> Any:
        """A path of several segments is served where configured."""
        yield self.serve(path="/api/v1/hl7")
        response, body = yield self.post(ADT, url=self.base + "/api/v1/hl7")
        assert response.code == 200 and msa(body)[1] == b"AA"

    @defer.inlineCallbacks
    def test_oversize_body_is_413(self) -> Any:
        """A body over max_body_bytes (declared by Content-Length) is refused unstored."""
        yield self.serve(max_body_bytes=64)
        response, body = yield self.post(ADT)
        assert response.code == 413 and b"64" in body
        assert self.commits.received == []

    @defer.inlineCallbacks
    def test_oversize_chunked_body_is_413(self) -> Any:
        """A chunked body is counted as it arrives; past the limit it is dropped, 413."""
        yield self.serve(max_body_bytes=64)
        chunks = chunked(ADT[:50], ADT[50:])
        client = yield self.raw(
            b"POST /hl7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/hl7-v2\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
        answer = yield client.closed
        assert answer.startswith(b"HTTP/1.1 413 ")
        assert self.commits.received == []

    @defer.inlineCallbacks
    def test_chunked_body_within_the_limit_is_received(self) -> Any:
        """Chunked transfer works like Content-Length when under the limit."""
        chunks = chunked(ADT[:50], ADT[50:])
        client = yield self.raw(
            b"POST /hl7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/hl7-v2\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n" + chunks)
        answer = yield client.closed
        assert answer.startswith(b"HTTP/1.1 200 ")
        assert self.commits.received[0].raw == ADT

    @defer.inlineCallbacks
    def test_client_leaving_early_still_stores_and_nothing_breaks(self) -> Any:
        """A client that hangs up before its answer: the message is committed, no error."""
        yield self.serve(hold=True)
        noticed: defer.Deferred[None] = defer.Deferred()

        def observe(event: dict[str, Any]) -> None:
            if "left before its answer" in event.get("log_format", "") and not noticed.called:
                noticed.callback(None)

        globalLogPublisher.addObserver(observe)
        self.addCleanup(globalLogPublisher.removeObserver, observe)
        client = yield self.raw(
            b"POST /hl7 HTTP/1.1\r\nHost: x\r\nContent-Type: application/hl7-v2\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (len(ADT), ADT))
        yield self.commits.arrived
        client.transport.loseConnection()
        yield noticed
        self.commits.pending[0].callback(None)
        assert (yield client.closed) == b""
        assert self.commits.received[0].raw == ADT

    @defer.inlineCallbacks
    def test_tls_listener(self) -> Any:
        """With tls set the source speaks HTTPS; a client trusting the CA gets its ACK."""
        directory = Path(tempfile.mkdtemp(prefix="interlink-http-source-"))
        self.addCleanup(shutil.rmtree, directory, True)
        ca = certs.make_ca(directory, "http-test-ca")
        server = certs.issue(directory, ca, "http-server", server=True)
        yield self.serve(tls=HTTPTLSConfig(certificate=server.certificate,
                                           private_key=server.private_key))
        response = yield self.client(TrustOnly(ca.certificate)).post(
            self.url, data=ADT, headers=HL7)
        body = yield treq.content(response)
        assert response.code == 200 and msa(body)[1] == b"AA"
