"""The MLLP source's promises, with an honest fake store commit and a fake clock."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from channels.ids import ControlIdSource
from channels.mllp_source import MLLPSource, Received
from tests.support import msa

ADT = (b"MSH|^~\\&|HIS|WARD|||20261125120000||ADT^A08^ADT_A01|C-1|P|2.5\r"
       b"EVN|A08\rPID|||MRN1\rPV1||I\r")


class FakeCommit:
    """Records what was handed to the store; the test decides when and how commits end."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.pending: list[defer.Deferred[Any]] = []

    def __call__(self, received: Received) -> defer.Deferred[Any]:
        self.received.append(received)
        d: defer.Deferred[Any] = defer.Deferred()
        self.pending.append(d)
        return d


def make_source() -> tuple[MLLPSource, FakeCommit]:
    commit = FakeCommit()
    clock = task.Clock()
    clock.advance(1_764_072_000)
    return MLLPSource("inbound", commit, clock=clock,
                      control_ids=ControlIdSource(clock.seconds())), commit


def answer_of(d: defer.Deferred[bytes | None]) -> bytes | None:
    """The answer if the Deferred has fired, else None (leaving its result in place)."""
    out: list[bytes | None] = []

    def keep(result: bytes | None) -> bytes | None:
        out.append(result)
        return result

    d.addCallback(keep)
    return out[0] if out else None


def test_no_answer_before_the_commit_returns() -> None:
    """Promise 1: the ACK exists only once the store's commit has fired."""
    source, commit = make_source()
    d = source.frame_received(ADT, "127.0.0.1:1")
    assert answer_of(d) is None
    commit.pending[0].callback(None)
    fields = msa(answer_of(d) or b"")
    assert fields[1:3] == [b"AA", b"C-1"]
    assert commit.received[0].ack_code == "AA" and commit.received[0].raw == ADT


def test_store_failure_answers_ae_207_never_aa() -> None:
    """If the commit fails the sender gets AE with ERR 207 (application internal error)."""
    source, commit = make_source()
    d = source.frame_received(ADT, "127.0.0.1:1")
    commit.pending[0].errback(OSError("disk full"))
    answer = answer_of(d) or b""
    assert msa(answer)[1] == b"AE"
    assert b"ERR|" in answer and b"207" in answer


def test_enhanced_mode_store_failure_answers_ce() -> None:
    """An enhanced-mode sender gets CE, not AE, when the store fails."""
    source, commit = make_source()
    enhanced = ADT.replace(b"|P|2.5\r", b"|P|2.5|||AL|NE\r")
    d = source.frame_received(enhanced, "127.0.0.1:1")
    commit.pending[0].errback(OSError("disk full"))
    assert msa(answer_of(d) or b"")[1] == b"CE"


def test_unreadable_header_is_stored_and_rejected() -> None:
    """A frame without a readable MSH is kept (with the reason) and answered AR."""
    source, commit = make_source()
    d = source.frame_received(b"not hl7 at all", "127.0.0.1:2")
    [received] = commit.received
    assert received.ack_code == "AR" and received.raw == b"not hl7 at all"
    assert received.error and received.error.startswith("unreadable header")
    commit.pending[0].callback(None)
    assert msa(answer_of(d) or b"")[1] == b"AR"


def test_unsupported_message_type_is_rejected_but_stored() -> None:
    """ABC^XYZ is answered AR with ERR 200 and still handed to the store."""
    source, commit = make_source()
    d = source.frame_received(ADT.replace(b"ADT^A08^ADT_A01", b"ABC^XYZ"), "p")
    commit.pending[0].callback(None)
    answer = answer_of(d) or b""
    assert msa(answer)[1] == b"AR" and b"200" in answer
    assert commit.received[0].ack_code == "AR"


def test_batch_is_split_and_each_message_answered() -> None:
    """A BHS/BTS batch yields one stored message and one ACK per message, in order."""
    source, commit = make_source()
    second = ADT.replace(b"C-1", b"C-2")
    batch = b"BHS|^~\\&|HIS\r" + ADT + second + b"BTS|2\r"
    d = source.frame_received(batch, "p")
    assert [r.raw for r in commit.received] == [ADT, second]
    for pending in commit.pending:
        pending.callback(None)
    answer = answer_of(d) or b""
    assert [line.split(b"|")[2] for line in answer.split(b"\r") if line.startswith(b"MSA")] \
        == [b"C-1", b"C-2"]


def test_oversize_frame_is_kept_and_refused() -> None:
    """An oversize frame's head is handed to the store and answered AR naming MSH-10."""
    source, commit = make_source()
    answer = source.frame_refused(ADT, "p", "frame exceeds 10 bytes")
    assert answer is not None and msa(answer)[1:3] == [b"AR", b"C-1"]
    assert commit.received[0].error == "refused: frame exceeds 10 bytes"
