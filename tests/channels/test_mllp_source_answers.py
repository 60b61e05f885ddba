"""How the MLLP source answers once the commit ends, and how it times each answer."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task
from twisted.logger import capturedLogs

from channels.ids import ControlIdSource
from channels.mllp_source import DELIVERY_UNCONFIRMED, MLLPSource, Received
from tests.support import msa

ADT = (b"MSH|^~\\&|HIS|WARD|||20261125120000||ADT^A08^ADT_A01|C-1|P|2.5\r"
       b"EVN|A08\rPID|||MRN1\rPV1||I\r")
ENHANCED = ADT.replace(b"|P|2.5\r", b"|P|2.5|||AL|NE\r")


class Harness:
    """A source over a fake clock whose commits the test ends, with the latencies it reports."""

    def __init__(self) -> None:
        self.clock = task.Clock()
        self.clock.advance(1_764_072_000)
        self.received: list[Received] = []
        self.pending: list[defer.Deferred[Any]] = []
        self.latencies: list[float] = []
        self.source = MLLPSource("inbound", self.commit, clock=self.clock,
                                 control_ids=ControlIdSource(self.clock.seconds()),
                                 on_answer=self.latencies.append)

    def commit(self, received: Received) -> defer.Deferred[Any]:
        self.received.append(received)
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d


def answer_of(d: defer.Deferred[bytes | None]) -> bytes:
    """The answer of a fired Deferred (b'' when it has not fired)."""
    out: list[bytes] = []

    def keep(answer: bytes | None) -> bytes | None:
        out.append(answer or b"")
        return answer

    d.addCallback(keep)
    return out[0] if out else b""


def test_answer_is_timed_once_from_arrival_to_commit() -> None:
    """The latency hook hears once per frame: the time from arrival to the answer."""
    h = Harness()
    d = h.source.frame_received(ADT, "p")
    h.clock.advance(0.25)
    assert h.latencies == []
    h.pending[0].callback(None)
    assert msa(answer_of(d))[1] == b"AA"
    assert h.latencies == [0.25]


def test_store_failure_is_timed_and_answered_ae_with_a_fresh_control_id() -> None:
    """A failed commit still reports its latency; the AE has its own MSH-10, not the AA's."""
    h = Harness()
    d = h.source.frame_received(ADT, "p")
    planned = h.received[0].ack
    h.clock.advance(1.5)
    with capturedLogs() as events:
        h.pending[0].errback(OSError("disk full of PHI"))
    answer = answer_of(d)
    assert msa(answer)[1] == b"AE" and b"|207^" in answer
    assert answer.split(b"|")[9] != planned.split(b"|")[9]
    assert h.latencies == [1.5]
    assert [e["kind"] for e in events] == ["OSError"]
    assert "PHI" not in repr(events)


def test_unconfirmed_delivery_is_answered_ae_or_ce_with_207() -> None:
    """A channel answering after delivery says AE (CE when enhanced) if delivery failed."""
    for raw, code in ((ADT, b"AE"), (ENHANCED, b"CE")):
        h = Harness()
        d = h.source.frame_received(raw, "p")
        h.pending[0].callback(DELIVERY_UNCONFIRMED)
        answer = answer_of(d)
        assert msa(answer)[1] == code
        assert b"delivery was not confirmed" in answer
        assert h.received[0].ack_code == code[:1].decode() + "A"
        assert len(h.latencies) == 1


def test_unreadable_message_keeps_its_ar_whatever_the_store_does() -> None:
    """AR goes back for an unreadable frame after the commit, failed or unconfirmed alike."""
    for outcome in ("stored", "failed", "unconfirmed"):
        h = Harness()
        d = h.source.frame_received(b"not hl7", "p")
        planned = h.received[0].ack
        assert answer_of(d) == b""
        if outcome == "failed":
            with capturedLogs():
                h.pending[0].errback(OSError("disk full"))
        else:
            h.pending[0].callback(DELIVERY_UNCONFIRMED if outcome == "unconfirmed" else None)
        assert answer_of(d) == planned and msa(planned)[1] == b"AR"
        assert len(h.latencies) == 1


def test_batch_is_timed_once_and_answers_in_order_after_every_commit() -> None:
    """A batch frame is one latency; its answer waits for every message's commit."""
    h = Harness()
    batch = b"BHS|^~\\&|HIS\r" + ADT + ADT.replace(b"C-1", b"C-2") + b"BTS|2\r"
    d = h.source.frame_received(batch, "p")
    h.clock.advance(2)
    h.pending[1].callback(None)
    assert answer_of(d) == b"" and h.latencies == []
    with capturedLogs():
        h.pending[0].errback(OSError("disk full"))
    lines = [line.split(b"|") for line in answer_of(d).split(b"\r") if line.startswith(b"MSA")]
    assert [(f[1], f[2]) for f in lines] == [(b"AE", b"C-1"), (b"AA", b"C-2")]
    assert h.latencies == [2]


def test_stored_record_carries_the_answer_and_the_findings() -> None:
    """What is stored names the E findings and holds the ACK written before the commit."""
    h = Harness()
    h.source.frame_received(ADT.replace(b"EVN|A08\r", b""), "p")
    [received] = h.received
    assert received.ack_code == "AE"
    assert received.error == "100 required segment EVN is missing"
    assert msa(received.ack)[1:3] == [b"AE", b"C-1"]
    assert received.header is not None and received.header.control_id == "C-1"
