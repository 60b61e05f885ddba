"""Hostile input: random bytes and mutated corpus messages only ever raise our own errors."""

from __future__ import annotations

from datetime import UTC, datetime

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.hl7.acceptance import check_acceptance
from profiles.hl7.ack import AckOutcome, ErrorDetail, build_ack, build_reject_for_unreadable
from profiles.hl7.batch import BatchError, split_batch
from profiles.hl7.header import HeaderError, read_header
from profiles.hl7.message import Message
from profiles.hl7.path import PathError
from tests.profiles.corpus import corpus_files

NOW = datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)
SAMPLES = [p.read_bytes() for p in corpus_files()]
PATHS = ["MSH-9.2", "PID-3[2].1", "OBX[3]-5.1.2", "MSH-2", "MSH-1", "PV1-3.4.2", "ZZZ-1"]
INTERESTING = b"|^~\\&#\r\n MSHPIDBHSBTSFHSFTS0123\xc3\xa4\xff\x00"
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _exercise(raw: bytes) -> None:
    """Run every public entry point over ``raw`` the way the engine would."""
    try:
        header = read_header(raw)
    except HeaderError as error:
        reject = build_reject_for_unreadable(raw, error, now=NOW, control_id="F1")
        assert reject.startswith(b"MSH|^~\\&|")
    else:
        errors = check_acceptance(header, raw)
        outcome = AckOutcome.ERROR if errors else AckOutcome.ACCEPT
        ack = build_ack(
            header,
            outcome=outcome,
            now=NOW,
            control_id="F2",
            errors=errors or [ErrorDetail(207, "W", text="fuzz")],
        )
        assert ack.endswith(b"\r")
        message = Message.parse(raw)
        for path in PATHS:
            message.get(path)
            message.get_all(path)
        written = message.segments("MSH")[0].field(10)
        d = header.delimiters
        if not set(written) & {d.component, d.repetition, d.subcomponent, d.escape}:
            assert message.get("MSH-10") == header.control_id
    try:
        for part in split_batch(raw):
            assert part in raw
    except BatchError:
        pass


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus message with a few bytes replaced, inserted or deleted."""
    raw = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 6))):
        if not raw:
            break
        at = draw(st.integers(0, len(raw) - 1))
        byte = draw(st.sampled_from(INTERESTING))
        action = draw(st.sampled_from(["replace", "insert", "delete", "truncate"]))
        if action == "replace":
            raw[at] = byte
        elif action == "insert":
            raw.insert(at, byte)
        elif action == "delete":
            del raw[at]
        else:
            del raw[at:]
    return bytes(raw)


@FUZZ
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    """Arbitrary bytes never raise anything but HeaderError/BatchError, handled in _exercise."""
    _exercise(raw)


@FUZZ
@given(st.binary(max_size=200).map(lambda tail: b"MSH" + tail))
def test_random_bytes_after_msh(raw: bytes) -> None:
    """Garbage after an MSH tag reaches deeper code and still fails only with our errors."""
    _exercise(raw)


@FUZZ
@given(mutated())
def test_mutated_corpus(raw: bytes) -> None:
    """Corpus messages with damaged delimiters, terminators and bytes fail only cleanly."""
    _exercise(raw)


@FUZZ
@given(st.sampled_from(SAMPLES), st.text(max_size=16))
def test_random_paths_on_real_messages(raw: bytes, path: str) -> None:
    """Any path text on any readable message returns a str or raises PathError."""
    try:
        message = Message.parse(raw)
    except HeaderError:
        return
    try:
        assert isinstance(message.get(path), str)
        assert all(isinstance(v, str) for v in message.get_all(path))
    except PathError:
        pass
