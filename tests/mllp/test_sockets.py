"""The MLLP listener and sender over real loopback sockets (plain and TLS)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path
from typing import Any

import hl7
from hl7.client import MLLPClient
from twisted.internet import reactor as _reactor
from twisted.internet import threads
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, connectProtocol
from twisted.internet.protocol import Protocol, connectionDone
from twisted.internet.task import Clock
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from mllp.client import MLLPConnectFailed, MLLPConnectionClosed, send_messages
from mllp.codec import Decoder, Frame, encode
from mllp.endpoints import ClientTLSSettings, TLSSettings, server_endpoint
from mllp.server import HTTP_400, FrameHandler, MLLPServerFactory, MLLPServerProtocol
from tests.mllp import certs
from tests.mllp.fakes import Answer, RecordingHandler, ack_for

reactor: Any = _reactor

ORU = (
    b"MSH|^~\\&|PUMP|ICU|EHR|HOSP|20240101120000||ORU^R01^ORU_R01|PUMP0001|P|2.6\r"
    b"PID|||12345^^^HOSP||DOE^JANE\r"
    b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||98|262688^MDC_DIM_PERCENT^MDC|||||F\r"
)


class TrackedProtocol(MLLPServerProtocol):
    """A server protocol that lets the test wait for its data and its end."""

    factory: TrackedFactory

    def __init__(self, factory: TrackedFactory) -> None:
        super().__init__(factory)
        self.got_data: Deferred[None] = Deferred()
        self.gone: Deferred[None] = Deferred()
        factory.connections.append(self)

    def dataReceived(self, data: bytes) -> None:
        super().dataReceived(data)
        if not self.got_data.called:
            self.got_data.callback(None)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        super().connectionLost(reason)
        self.gone.callback(None)


class TrackedFactory(MLLPServerFactory):
    """A server factory that remembers its connections."""

    protocol = TrackedProtocol

    def __init__(self, handler: FrameHandler, **options: Any) -> None:
        super().__init__(handler, **options)
        self.connections: list[TrackedProtocol] = []


class RawClient(Protocol):
    """A bare client: writes what it is told, collects frames, reports the close."""

    def __init__(self) -> None:
        self.received = b""
        self.frames: list[bytes] = []
        self.closed: Deferred[bytes] = Deferred()
        self._decoder = Decoder()
        self._waiting: list[tuple[int, Deferred[list[bytes]]]] = []

    def dataReceived(self, data: bytes) -> None:
        self.received += data
        self.frames += [e.payload for e in self._decoder.feed(data) if isinstance(e, Frame)]
        for count, d in list(self._waiting):
            if len(self.frames) >= count:
                self._waiting.remove((count, d))
                d.callback(self.frames[:count])

    def wait_frames(self, count: int) -> Deferred[list[bytes]]:
        """Fires with the first ``count`` frames once they have arrived."""
        d: Deferred[list[bytes]] = Deferred()
        self._waiting.append((count, d))
        self.dataReceived(b"")
        return d

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed.callback(self.received)


class ReversingHandler(RecordingHandler):
    """Holds answers until ``batch`` frames are in, then completes them last to first."""

    def __init__(self, batch: int) -> None:
        self._batch = batch
        self._held: list[tuple[Deferred[bytes | None], bytes]] = []
        super().__init__(self._hold)

    def _hold(self, payload: bytes) -> Answer:
        d: Deferred[bytes | None] = Deferred()
        self._held.append((d, payload))
        if len(self._held) == self._batch:
            for held, held_payload in reversed(self._held):
                held.callback(ack_for(held_payload))
            self._held.clear()
        return d


class HL7AckHandler(RecordingHandler):
    """Answers each message with a python-hl7 ACK carrying its control id."""

    def __init__(self) -> None:
        super().__init__(self._ack)

    def _ack(self, payload: bytes) -> bytes:
        message = hl7.parse(payload.decode())
        ack = message.create_ack(ack_code="AA", message_id="ACK0001")
        return str(ack).encode()


class SocketTest(TestCase):
    """Shared setup: listeners and connections that are torn down cleanly."""

    def listen(
        self, handler: FrameHandler, tls: TLSSettings | None = None, **options: Any
    ) -> Deferred[tuple[int, TrackedFactory]]:
        """Start a listener on a free loopback port; fires with (port number, factory)."""
        factory = TrackedFactory(handler, **options)
        endpoint = server_endpoint(reactor, "tcp:0:interface=127.0.0.1", tls)

        def started(port: Any) -> tuple[int, TrackedFactory]:
            self.addCleanup(self._wait_gone, factory)
            self.addCleanup(port.stopListening)
            return port.getHost().port, factory

        return endpoint.listen(factory).addCallback(started)

    def _wait_gone(self, factory: TrackedFactory) -> Deferred[list[None]]:
        return gatherResults([c.gone for c in factory.connections])

    @inlineCallbacks
    def connect(self, port: int) -> Any:
        """Open a raw client connection; it is closed at the end of the test."""
        client = RawClient()
        yield connectProtocol(TCP4ClientEndpoint(reactor, "127.0.0.1", port), client)
        self.addCleanup(lambda: client.closed)
        self.addCleanup(client.transport.loseConnection)
        return client


class ServerOverSocketTest(SocketTest):
    """The listener's behaviour as a real peer sees it."""

    @inlineCallbacks
    def test_pipelined_frames_are_answered_in_order(self) -> Any:
        """Three pipelined frames completed last-to-first are answered first-to-last."""
        port, _ = yield self.listen(ReversingHandler(batch=3))
        client = yield self.connect(port)
        client.transport.write(encode(b"m1") + encode(b"m2") + encode(b"m3"))
        frames = yield client.wait_frames(3)
        self.assertEqual(frames, [b"ACK:m1", b"ACK:m2", b"ACK:m3"])

    @inlineCallbacks
    def test_oversize_frame_is_refused_while_another_connection_keeps_working(self) -> Any:
        """One peer's oversize frame gets a NAK and a close; another peer is still served."""
        handler = RecordingHandler(refusal=b"MSA|AR|C9")
        port, _ = yield self.listen(handler, max_frame_bytes=1000)
        healthy = yield self.connect(port)
        greedy = yield self.connect(port)
        greedy.transport.write(b"\x0bMSH|^~\\&|A|B|||1||ADT^A01|C9|P|2.5\r" + b"x" * 2000)
        received = yield greedy.closed
        self.assertEqual(received, encode(b"MSA|AR|C9"))
        self.assertEqual(len(handler.refused), 1)
        self.assertTrue(handler.refused[0][0].startswith(b"MSH|^~\\&|A|B|||1||ADT^A01|C9|"))
        healthy.transport.write(encode(b"m1"))
        frames = yield healthy.wait_frames(1)
        self.assertEqual(frames, [b"ACK:m1"])

    @inlineCallbacks
    def test_junk_before_start_block_is_skipped(self) -> Any:
        """Line noise before the first frame does not stop the frame being served."""
        port, _ = yield self.listen(RecordingHandler())
        client = yield self.connect(port)
        client.transport.write(b"\r\n\x00\xffnoise\n" + encode(b"m1"))
        frames = yield client.wait_frames(1)
        self.assertEqual(frames, [b"ACK:m1"])

    @inlineCallbacks
    def test_http_request_gets_400_and_close(self) -> Any:
        """A browser or health check hitting the port gets a 400 and a closed connection."""
        handler = RecordingHandler()
        port, _ = yield self.listen(handler)
        client = yield self.connect(port)
        client.transport.write(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        received = yield client.closed
        self.assertEqual(received, HTTP_400)
        self.assertEqual(handler.frames, [])

    @inlineCallbacks
    def test_stalled_half_frame_is_closed_by_idle_timeout(self) -> Any:
        """A peer that stops mid-frame is disconnected when the (fake) clock passes 300 s."""
        clock = Clock()
        port, factory = yield self.listen(RecordingHandler(), clock=clock, idle_timeout=300)
        client = yield self.connect(port)
        client.transport.write(b"\x0bMSH|^~\\&|half")
        yield factory.connections[0].got_data
        clock.advance(299)
        self.assertFalse(client.closed.called)
        clock.advance(1)
        received = yield client.closed
        self.assertEqual(received, b"")

    @inlineCallbacks
    def test_connections_beyond_the_limit_are_closed_at_once(self) -> Any:
        """With max_connections=1 a second peer is closed; the first is still served."""
        port, factory = yield self.listen(RecordingHandler(), max_connections=1)
        first = yield self.connect(port)
        first.transport.write(encode(b"m1"))
        yield first.wait_frames(1)
        second = yield self.connect(port)
        received = yield second.closed
        self.assertEqual(received, b"")
        self.assertEqual(factory.open_connections, 1)
        first.transport.write(encode(b"m2"))
        frames = yield first.wait_frames(2)
        self.assertEqual(frames, [b"ACK:m1", b"ACK:m2"])

    @inlineCallbacks
    def test_python_hl7_client_gets_an_ack(self) -> Any:
        """python-hl7's blocking MLLPClient, written by others, reads our framed ACK."""
        port, factory = yield self.listen(HL7AckHandler())

        def send() -> bytes:
            with MLLPClient("127.0.0.1", port) as client:
                return client.send_message(ORU.decode())

        raw = yield threads.deferToThread(send)
        self.assertTrue(raw.startswith(b"\x0b") and raw.endswith(b"\x1c\r"))
        ack = hl7.parse(raw[1:-2].decode())
        self.assertEqual(str(ack.segment("MSA")), "MSA|AA|PUMP0001")
        self.assertEqual(str(ack.segment("MSH")[9]), "ACK^R01^ACK")
        yield factory.connections[0].gone


class ClientOverSocketTest(SocketTest):
    """send_messages against our own listener."""

    @inlineCallbacks
    def test_answers_come_back_in_order(self) -> Any:
        """Each payload's answer is returned in the order sent."""
        port, _ = yield self.listen(RecordingHandler())
        answers = yield send_messages(reactor, ("127.0.0.1", port), [b"a", b"b", b"c"])
        self.assertEqual(answers, [b"ACK:a", b"ACK:b", b"ACK:c"])

    @inlineCallbacks
    def test_endpoint_string_target_works(self) -> Any:
        """A client endpoint string is accepted as the target."""
        port, _ = yield self.listen(RecordingHandler())
        answers = yield send_messages(reactor, f"tcp:host=127.0.0.1:port={port}", [b"x"])
        self.assertEqual(answers, [b"ACK:x"])

    @inlineCallbacks
    def test_connection_refused_is_a_connect_failure(self) -> Any:
        """Nobody listening gives MLLPConnectFailed naming the target."""
        closed_port = yield self._closed_port()
        error = yield self.assertFailure(
            send_messages(reactor, ("127.0.0.1", closed_port), [b"x"]), MLLPConnectFailed
        )
        self.assertIn(str(closed_port), str(error))

    @inlineCallbacks
    def _closed_port(self) -> Any:
        """A loopback port that was just listening and no longer is."""
        port = yield server_endpoint(reactor, "tcp:0:interface=127.0.0.1", None).listen(
            MLLPServerFactory(RecordingHandler())
        )
        number = port.getHost().port
        yield port.stopListening()
        return number

    @inlineCallbacks
    def test_server_closing_before_answer_is_reported(self) -> Any:
        """A receiver that drops the connection mid-conversation gives MLLPConnectionClosed."""

        def explode(payload: bytes) -> bytes:
            raise RuntimeError("handler bug")

        port, _ = yield self.listen(RecordingHandler(explode))
        error = yield self.assertFailure(
            send_messages(reactor, ("127.0.0.1", port), [b"a", b"b"]), MLLPConnectionClosed
        )
        self.assertIn("after 0 of 2 answers", str(error))


class TLSTest(SocketTest):
    """TLS listeners with and without client certificates, against a throwaway CA."""

    def setUp(self) -> None:
        directory = Path(tempfile.mkdtemp(prefix="mllp-tls-"))
        self.addCleanup(shutil.rmtree, directory)
        self.ca = certs.make_ca(directory, "interlink-test-ca")
        self.rogue_ca = certs.make_ca(directory, "rogue-ca")
        self.server = certs.issue(directory, self.ca, "mllp-server", server=True)
        self.device = certs.issue(directory, self.ca, "icu-pump-7", server=False)
        self.intruder = certs.issue(directory, self.rogue_ca, "intruder", server=False)

    def server_tls(self, *, require: bool) -> TLSSettings:
        return TLSSettings(
            certificate=self.server.certificate,
            private_key=self.server.private_key,
            ca_certificates=self.ca.certificate,
            require_client_certificate=require,
        )

    def client_tls(self, identity: certs.Issued | None) -> ClientTLSSettings:
        return ClientTLSSettings(
            ca_certificates=self.ca.certificate,
            certificate=identity.certificate if identity else None,
            private_key=identity.private_key if identity else None,
        )

    @inlineCallbacks
    def test_client_with_ca_signed_certificate_is_served(self) -> Any:
        """A device presenting a certificate from the trusted CA gets its answers."""
        handler = RecordingHandler()
        port, _ = yield self.listen(handler, self.server_tls(require=True))
        answers = yield send_messages(
            reactor, ("localhost", port), [ORU, b"second"], tls=self.client_tls(self.device)
        )
        self.assertEqual(answers, [ack_for(ORU), b"ACK:second"])
        self.assertEqual([p for p, _ in handler.frames], [ORU, b"second"])

    @inlineCallbacks
    def test_client_without_certificate_is_refused_when_one_is_required(self) -> Any:
        """No client certificate, no service: the handshake fails and nothing is delivered."""
        handler = RecordingHandler()
        port, _ = yield self.listen(handler, self.server_tls(require=True))
        yield self.assertFailure(
            send_messages(reactor, ("127.0.0.1", port), [ORU], tls=self.client_tls(None)),
            MLLPConnectionClosed,
        )
        self.assertEqual(handler.frames, [])

    @inlineCallbacks
    def test_client_with_certificate_from_another_ca_is_refused(self) -> Any:
        """A certificate the listener's CA did not sign is rejected."""
        handler = RecordingHandler()
        port, _ = yield self.listen(handler, self.server_tls(require=True))
        yield self.assertFailure(
            send_messages(reactor, ("127.0.0.1", port), [ORU], tls=self.client_tls(self.intruder)),
            MLLPConnectionClosed,
        )
        self.assertEqual(handler.frames, [])

    @inlineCallbacks
    def test_client_certificate_is_optional_when_not_required(self) -> Any:
        """Without require_client_certificate an anonymous TLS client is served."""
        port, _ = yield self.listen(RecordingHandler(), self.server_tls(require=False))
        answers = yield send_messages(
            reactor, ("127.0.0.1", port), [b"m"], tls=self.client_tls(None)
        )
        self.assertEqual(answers, [b"ACK:m"])

    @inlineCallbacks
    def test_client_refuses_a_server_its_ca_did_not_sign(self) -> Any:
        """The sender verifies the listener too: the wrong trust root fails the send."""
        handler = RecordingHandler()
        port, _ = yield self.listen(handler, self.server_tls(require=False))
        wrong_trust = ClientTLSSettings(ca_certificates=self.rogue_ca.certificate)
        yield self.assertFailure(
            send_messages(reactor, ("127.0.0.1", port), [b"m"], tls=wrong_trust),
            MLLPConnectionClosed,
        )
        self.assertEqual(handler.frames, [])
