"""read_header over a stream from one sender: what is decoded once never leaks across messages."""

from __future__ import annotations

import dataclasses

import pytest

from profiles.hl7.header import Header, read_header

MSH = b"MSH|^~\\&|PUMP^0011^EUI-64|ICU|EHR|HOSP|%s||ORU^R01^ORU_R01|%s|P|2.6|||NE|AL\r"


def message(control_id: bytes, stamp: bytes = b"20260101120000", *, pid: bytes = b"MRN1",
            body: bytes = b"") -> bytes:
    """One device message; only the arguments differ between messages of the stream."""
    return MSH % (stamp, control_id) + b"PID|||" + pid + b"^^^HOSP^MR\r" + body


def test_per_message_fields_follow_each_message() -> None:
    """MSH-7, MSH-10 and PID-3.1 are each message's own; the rest repeats unchanged."""
    first = read_header(message(b"C1", b"20260101120000", pid=b"MRN1"))
    second = read_header(message(b"C2", b"20260101120001", pid=b"MRN2"))
    assert (first.control_id, first.timestamp, first.patient_id) == \
        ("C1", "20260101120000", "MRN1")
    assert (second.control_id, second.timestamp, second.patient_id) == \
        ("C2", "20260101120001", "MRN2")
    assert dataclasses.replace(first, control_id="C2", timestamp="20260101120001",
                               patient_id="MRN2") == second
    assert first.sending_application.universal_id == "0011"


def test_codec_follows_the_bytes_beyond_msh() -> None:
    """Equal MSH text, different bodies: ASCII for one, UTF-8 detected for the other."""
    plain = read_header(message(b"C1"))
    accented = read_header(message(b"C1", body="NTE|1||Müller\r".encode()))
    latin = read_header(message(b"C1", body="NTE|1||Müller\r".encode("latin-1")))
    assert (plain.codec, accented.codec, latin.codec) == ("ascii", "utf-8", "cp1252")


def test_escape_in_control_id_only_is_decoded_there() -> None:
    """An escape sequence in MSH-10 is decoded; the repeated fields stay as they were."""
    h = read_header(message(b"C\\F\\1"))
    assert h.control_id == "C|1"
    assert h.sending_application.text == "PUMP^0011^EUI-64"
    assert h.message_type == "ORU" and h.trigger_event == "R01"


def test_header_equals_one_built_field_by_field_and_stays_frozen() -> None:
    """A header read from the stream is an ordinary, frozen Header value."""
    h = read_header(message(b"C9"))
    rebuilt = Header(**{f.name: getattr(h, f.name) for f in dataclasses.fields(Header)})
    assert rebuilt == h and repr(rebuilt) == repr(h)
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.version = "2.5"  # type: ignore[misc]
    again = read_header(message(b"C9"))
    assert again == h and again is not h
