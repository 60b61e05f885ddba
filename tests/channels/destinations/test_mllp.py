"""The MLLP destination: config, ACK judgement, and delivery to real loopback peers.

Peers are ``../shared/tools/mllp_sink.py`` run as a subprocess (an independent receiver)
and small Twisted receivers answering with ACKs built by python-hl7.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import hl7
import pytest
from pydantic import ValidationError
from twisted.internet import reactor as _reactor
from twisted.internet.defer import Deferred, gatherResults, inlineCallbacks
from twisted.internet.endpoints import TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.internet.task import Clock, deferLater
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from channels.destinations import DeliveryResult, Envelope, Verdict
from channels.destinations.mllp import MLLPDestination, MLLPDestinationConfig, judge_ack
from mllp.codec import Decoder, Frame, encode
from tests.mllp import certs
from tests.profiles.corpus import read

reactor: Any = _reactor

SINK = Path(__file__).resolve().parents[4] / "shared" / "tools" / "mllp_sink.py"

ORU = (
    b"MSH|^~\\&|PUMP|ICU|EHR|HOSP|20240101120000||ORU^R01^ORU_R01|PUMP0001|P|2.6\r"
    b"PID|||12345^^^HOSP||DOE^JANE\r"
    b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||98|262688^MDC_DIM_PERCENT^MDC|||||F\r"
)


def config(**overrides: Any) -> MLLPDestinationConfig:
    return MLLPDestinationConfig.model_validate({"type": "mllp", "host": "127.0.0.1",
                                                 "port": 2575, **overrides})


def envelope(control_id: str = "PUMP0001", attempt: int = 1) -> Envelope:
    return Envelope(
        message_id=7,
        channel="icu",
        destination="ehr",
        control_id=control_id,
        message_type="ORU^R01",
        attempt=attempt,
        received_at=1_700_000_000.0,
    )


def with_id(control_id: str) -> bytes:
    return ORU.replace(b"PUMP0001", control_id.encode())


def ack(code: str, for_message: bytes = ORU, err: str = "", control_id: str | None = None) -> bytes:
    """An ACK as python-hl7 builds it, optionally with an ERR segment."""
    message = hl7.parse(for_message.decode())
    built = str(message.create_ack(code, message_id="ACK1"))
    if control_id is not None:
        built = built.replace(f"MSA|{code}|{message.extract_field('MSH', 1, 10)}",
                              f"MSA|{code}|{control_id}")
    if err:
        built += "\r" + err
    return built.encode()


# --- configuration ---------------------------------------------------------------------


def test_config_defaults_follow_the_usual_ehr_expectations() -> None:
    """AE retries, AR dead-letters, ACK and connect wait 30 s, MSA-2 is checked."""
    c = config()
    assert (c.on_ae, c.on_ar, c.check_control_id) == ("retry", "fail", True)
    assert (c.ack_timeout_seconds, c.connect_timeout_seconds) == (30.0, 30.0)
    assert c.tls is None


def test_config_rejects_unknown_keys_and_half_a_client_identity() -> None:
    """A typo or a certificate without its key is an error, not ignored."""
    with pytest.raises(ValidationError, match="ack_timeout"):
        config(ack_timeout=5)
    with pytest.raises(ValidationError, match="private_key go together"):
        config(tls={"certificate": "client.crt"})
    with pytest.raises(ValidationError):
        config(on_ae="ignore")
    with pytest.raises(ValidationError):
        config(port=0)


# --- judging an ACK --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "overrides", "verdict"),
    [
        ("AA", {}, Verdict.SENT),
        ("CA", {}, Verdict.SENT),
        ("AE", {}, Verdict.RETRY),
        ("CE", {"on_ae": "fail"}, Verdict.FAIL),
        ("AR", {}, Verdict.FAIL),
        ("CR", {"on_ar": "retry"}, Verdict.RETRY),
    ],
)
def test_msa1_decides_the_verdict(code: str, overrides: dict[str, Any], verdict: Verdict) -> None:
    """Accept codes are SENT; error and reject codes follow on_ae / on_ar."""
    answer = ack(code)
    result = judge_ack(answer, "PUMP0001", config(**overrides))
    assert result == DeliveryResult(verdict, answer, code)


def test_err_code_is_named_in_the_detail_without_its_text() -> None:
    """ERR-3.1 (v2.5+) is shown; the error text, which may quote content, is not."""
    answer = ack("AE", err="ERR|||207^Application internal error: DOE JANE^HL70357|E")
    result = judge_ack(answer, "PUMP0001", config())
    assert (result.verdict, result.detail) == (Verdict.RETRY, "AE (ERR 207)")


def test_pre_v25_err_code_is_read_from_err1() -> None:
    """Before v2.5 the code sits in ERR-1.4.1."""
    old = ORU.replace(b"|P|2.6", b"|P|2.4")
    answer = ack("AR", old, err="ERR|PID^1^3^101&Required field missing&HL70357")
    assert judge_ack(answer, "PUMP0001", config()).detail == "AR (ERR 101)"


def test_ack_for_another_message_is_retried_unless_the_check_is_off() -> None:
    """MSA-2 must equal the sent MSH-10; peers that echo nothing can switch the check off."""
    answer = ack("AA", control_id="OTHER9")
    assert judge_ack(answer, "PUMP0001", config()) == DeliveryResult(
        Verdict.RETRY, answer, "ACK for another message"
    )
    assert judge_ack(answer, "PUMP0001", config(check_control_id=False)).verdict is Verdict.SENT


@pytest.mark.parametrize(
    ("answer", "detail"),
    [
        (b"not hl7 at all", "unreadable ACK (no usable MSH)"),
        (b"MSH|^~\\&|EHR|HOSP|||20240101||ACK|1|P|2.5\r", "ACK without MSA"),
        (b"MSH|^~\\&|EHR|HOSP|||20240101||ACK|1|P|2.5\rMSA|DOE JANE|PUMP0001\r",
         "ACK with unreadable MSA-1"),
        (b"MSH|^~\\&|EHR|HOSP|||20240101||ACK|1|P|2.5\rMSA|ZZ|PUMP0001\r",
         "unknown ACK code ZZ"),
    ],
)
def test_unusable_answers_are_retried_with_a_content_free_detail(
    answer: bytes, detail: str
) -> None:
    """Garbage never counts as delivered, and the detail never quotes it."""
    assert judge_ack(answer, "PUMP0001", config()) == DeliveryResult(Verdict.RETRY, answer, detail)


# --- delivery over sockets -------------------------------------------------------------


def one_turn() -> Deferred[None]:
    """One turn of the real reactor, to let socket events through."""
    return deferLater(reactor, 0, lambda: None)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class Receiver(Protocol):
    """A receiver answering each frame with ``answer(payload)`` (None: stay silent)."""

    def __init__(self, answer: Callable[[bytes], bytes | None], gone: list[Deferred[None]]) -> None:
        self._answer = answer
        self._decoder = Decoder()
        self.gone: Deferred[None] = Deferred()
        gone.append(self.gone)

    def dataReceived(self, data: bytes) -> None:
        for event in self._decoder.feed(data):
            if isinstance(event, Frame):
                reply = self._answer(event.payload)
                if reply is not None:
                    self.transport.write(encode(reply))

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.gone.callback(None)


class DestinationTest(TestCase):
    """Builds destinations on the real reactor with a task.Clock for every timer."""

    timeout = 30

    def setUp(self) -> None:
        self.clock = Clock()
        self.connections: list[Deferred[None]] = []

    def destination(self, port: int, **overrides: Any) -> MLLPDestination:
        dest = MLLPDestination(
            "ehr",
            config(port=port, **overrides),
            reactor,
            clock=self.clock,
            retry_policy=lambda attempt: 1.0,
        )
        dest.start()
        self.addCleanup(dest.stop)
        return dest

    @inlineCallbacks
    def receiver(self, answer: Callable[[bytes], bytes | None]) -> Any:
        """A Twisted receiver on 127.0.0.1 port 0; fires with its port number."""
        factory = Factory.forProtocol(lambda: Receiver(answer, self.connections))
        port = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(self._all_gone)
        self.addCleanup(port.stopListening)
        return port.getHost().port

    def _all_gone(self) -> Deferred[Any]:
        return gatherResults(self.connections)

    def sink(self, *extra: str) -> int:
        """Start mllp_sink.py on a free loopback port; returns the port once it listens."""
        if not SINK.exists():
            raise self.skipTest(f"{SINK} not found")
        port = free_port()
        process = subprocess.Popen(
            [sys.executable, str(SINK), "--host", "127.0.0.1", "--port", str(port),
             "--max-seconds", "60", *extra],
            stderr=subprocess.PIPE,
        )
        self.addCleanup(process.wait, 10)
        self.addCleanup(process.terminate)
        assert process.stderr is not None
        line = process.stderr.readline()
        self.assertIn(b'"listening"', line)
        return port


class MLLPDestinationToSinkTest(DestinationTest):
    """An independent receiver (the shared mllp_sink.py) accepts what we send."""

    @inlineCallbacks
    def test_corpus_message_is_sent_and_stored_by_the_sink(self) -> Any:
        """A PCD-01 message from the corpus gets AA with MSA-2 = its MSH-10: SENT."""
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        store = directory / "sink.mllp"
        port = self.sink("--store", str(store), "--fsync", "message")
        payload = read("pcd01-monitor/ipf-acme-bp-pcd01-minimal.hl7").replace(b"\n", b"\r")
        control_id = payload.split(b"\r", 1)[0].split(b"|")[9].decode()
        dest = self.destination(port)
        result = yield dest.send(payload, envelope(control_id))
        self.assertEqual((result.verdict, result.detail), (Verdict.SENT, "AA"))
        self.assertIn(b"MSA|AA|" + control_id.encode(), result.response)
        self.assertEqual(store.read_bytes(), encode(payload))

    @inlineCallbacks
    def test_many_messages_in_order_over_tls(self) -> Any:
        """Over TLS, verified against our test CA, every message is acknowledged as its own."""
        directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, directory)
        ca = certs.make_ca(directory, "test-ca")
        server = certs.issue(directory, ca, "sink", server=True)
        port = self.sink("--tls-cert", str(server.certificate), "--tls-key",
                         str(server.private_key))
        dest = self.destination(port, tls={"ca_certificates": str(ca.certificate)})
        for n in range(20):
            result = yield dest.send(with_id(f"C{n}"), envelope(f"C{n}"))
            self.assertEqual(result.verdict, Verdict.SENT, result.detail)


class MLLPDestinationAnswersTest(DestinationTest):
    """Negative, wrong and missing answers become RETRY or FAIL, never an errback."""

    @inlineCallbacks
    def test_ae_is_retried_and_ar_fails(self) -> Any:
        """The peer's AE (ERR 207) asks for a retry; its AR dead-letters."""
        codes = iter(["AE", "AR"])
        port = yield self.receiver(
            lambda payload: ack(next(codes), payload, err="ERR|||207^x^HL70357|E")
        )
        dest = self.destination(port)
        first = yield dest.send(ORU, envelope())
        second = yield dest.send(ORU, envelope(attempt=2))
        self.assertEqual((first.verdict, first.detail), (Verdict.RETRY, "AE (ERR 207)"))
        self.assertEqual((second.verdict, second.detail), (Verdict.FAIL, "AR (ERR 207)"))

    @inlineCallbacks
    def test_the_sent_msh10_is_checked_not_the_stored_one(self) -> Any:
        """A transformer may rewrite MSH-10; the ACK must name what went on the wire."""
        port = yield self.receiver(lambda payload: ack("AA", payload))
        dest = self.destination(port)
        result = yield dest.send(with_id("REWRITTEN"), envelope("PUMP0001"))
        self.assertEqual(result.verdict, Verdict.SENT)

    @inlineCallbacks
    def test_ack_for_another_message_resets_the_connection(self) -> Any:
        """After an ACK naming another message, the next message goes on a new connection."""
        answers = iter([ack("AA", control_id="STALE1"), None])

        def answer(payload: bytes) -> bytes | None:
            return next(answers, None) or ack("AA", payload)

        port = yield self.receiver(answer)
        dest = self.destination(port)
        first = yield dest.send(ORU, envelope())
        self.assertEqual((first.verdict, first.detail), (Verdict.RETRY, "ACK for another message"))
        yield self.connections[0]
        second = dest.send(with_id("NEXT2"), envelope("NEXT2"))
        while not self.clock.getDelayedCalls():
            yield one_turn()
        self.clock.advance(1)
        result = yield second
        self.assertEqual(result.verdict, Verdict.SENT)
        self.assertEqual(len(self.connections), 2)

    @inlineCallbacks
    def test_silent_peer_is_an_ack_timeout_retry(self) -> Any:
        """No answer within ack_timeout_seconds (on the clock) is RETRY, not an error."""
        got: list[bytes] = []
        port = yield self.receiver(lambda payload: got.append(payload))
        dest = self.destination(port, ack_timeout_seconds=5)
        result = dest.send(ORU, envelope())
        while not got:
            yield one_turn()
        self.clock.advance(5)
        timed_out = DeliveryResult(Verdict.RETRY, None, "ACK timeout after 5s")
        self.assertEqual((yield result), timed_out)

    @inlineCallbacks
    def test_peer_that_is_down_is_a_retry_naming_the_refusal(self) -> Any:
        """Connection refused until the connect timeout is RETRY with the error type only."""
        dest = self.destination(free_port(), connect_timeout_seconds=10)
        result = dest.send(ORU, envelope())
        while not [c for c in self.clock.getDelayedCalls() if c.getTime() == 1.0]:
            yield one_turn()
        self.clock.advance(10)
        outcome = yield result
        self.assertEqual(outcome.verdict, Verdict.RETRY)
        self.assertIn("ConnectionRefusedError", outcome.detail)
        self.assertNotIn("PUMP0001", outcome.detail)


class MLLPDestinationConnectionsTest(DestinationTest):
    """With several connections, each lane keeps to one of them and keeps its order."""

    @inlineCallbacks
    def test_lanes_spread_over_connections_and_keep_their_order(self) -> Any:
        """Sends of six lanes in flight at once: each lane on one connection, in order."""
        seen: list[tuple[int, str]] = []

        class Tagging(Receiver):
            def dataReceived(self, data: bytes) -> None:
                for event in self._decoder.feed(data):
                    if isinstance(event, Frame):
                        control_id = event.payload.split(b"\r")[0].split(b"|")[9].decode()
                        seen.append((id(self), control_id))
                        self.transport.write(encode(ack("AA", event.payload)))

        factory = Factory.forProtocol(lambda: Tagging(lambda _: None, self.connections))
        listening = yield TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1").listen(factory)
        self.addCleanup(self._all_gone)
        self.addCleanup(listening.stopListening)
        dest = self.destination(listening.getHost().port, connections=3)
        lanes = [f"MRN{n}" for n in range(6)]
        sends = []
        for n in range(5):
            for lane in lanes:
                control_id = f"{lane}-{n}"
                sends.append(dest.send(with_id(control_id), replace(
                    envelope(control_id), lane=lane)))
        results = yield gatherResults(sends)
        self.assertEqual({r.verdict for r in results}, {Verdict.SENT})
        for lane in lanes:
            mine = [(conn, cid) for conn, cid in seen if cid.startswith(lane + "-")]
            self.assertEqual([cid for _, cid in mine], [f"{lane}-{n}" for n in range(5)])
            self.assertEqual(len({conn for conn, _ in mine}), 1)
        self.assertGreater(len({conn for conn, _ in seen}), 1)
