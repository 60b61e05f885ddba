"""What must be checked before AA: MSH basics, tables 0076/0003, required segments."""

from __future__ import annotations

from pathlib import Path

import pytest

from profiles.hl7.acceptance import check_acceptance, required_segments, suggested_outcome
from profiles.hl7.ack import AckOutcome, ErrorDetail
from profiles.hl7.header import read_header
from tests.profiles.corpus import CORPUS, file_id, read


def _check(raw: bytes) -> list[tuple[int, str, int | None, int | None]]:
    return [
        (e.code, e.segment, e.field, e.component) for e in check_acceptance(read_header(raw), raw)
    ]


def _msg(msh9: str, version: str = "2.5", body: str = "", control: str = "C1") -> bytes:
    return f"MSH|^~\\&|A|B|||20240101||{msh9}|{control}|P|{version}\r{body}".encode()


CLEAN = sorted(
    [*CORPUS.glob("pcd01-*/*.hl7"), *CORPUS.glob("phd-glucose/*.hl7")]
    + [p for p in CORPUS.glob("pcd04-alarm/*.hl7") if "draeger-acm-" not in p.name]
    + [p for p in CORPUS.glob("general/*.hl7") if "insurance-nulls" not in p.name]
)


@pytest.mark.parametrize("path", CLEAN, ids=file_id)
def test_device_and_regular_messages_pass_clean(path: Path) -> None:
    """PCD-01/04/10, Continua and the regular lab/ADT samples raise no findings."""
    assert _check(path.read_bytes()) == []


def test_adt_a01_missing_pid() -> None:
    """ADT^A01 without PID is a segment sequence error naming PID."""
    errors = check_acceptance(*_pair("edge/ipf-adt-a01-missing-pid.hl7"))
    assert [(e.code, e.segment, e.severity) for e in errors] == [(100, "PID", "E")]
    assert "PID" in errors[0].text


def _pair(name: str) -> tuple:
    raw = read(name)
    return read_header(raw), raw


def test_unknown_message_type_and_event() -> None:
    """ABC^XYZ is reported as unsupported type (200) and event (201) at MSH-9."""
    assert _check(read("edge/ipf-unknown-message-type-abc-xyz.hl7")) == [
        (200, "MSH", 9, 1),
        (201, "MSH", 9, 2),
    ]


def test_empty_msh9_control_id_and_version() -> None:
    """Empty MSH-9.1, MSH-10 and MSH-12 each give a 101 at their field."""
    assert _check(read("edge/hl7apy-missing-msh9-message-type.hl7")) == [(101, "MSH", 9, 1)]
    found = _check(read("edge/hl7apy-missing-control-id-and-version.hl7"))
    assert (101, "MSH", 12, None) in found
    assert (101, "MSH", 10, None) in found
    assert (100, "PID", None, None) in found


def test_missing_trigger_event() -> None:
    """ADT^ with an empty trigger is a 101 at MSH-9.2; an ACK may omit it."""
    assert (101, "MSH", 9, 2) in _check(read("edge/hl7apy-msh9-trigger-missing-no-control-id.hl7"))
    assert _check(read("edge/hapi-ack-empty-trigger-brace-encoding.hl7")) == []


@pytest.mark.parametrize("version", ["3.0", "2.3.2", "x"])
def test_unsupported_version(version: str) -> None:
    """A version outside HL7 table 0104 is a 203 at MSH-12."""
    raw = _msg("ADT^A01^ADT_A01", version, "EVN|A01\rPID|||1\rPV1||I\r")
    assert _check(raw) == [(203, "MSH", 12, None)]


@pytest.mark.parametrize("version", ["2.1", "2.2", "2.7.1", "2.9"])
def test_versions_hl7apy_lacks_fall_back_to_nearest(version: str) -> None:
    """Versions without their own tables use the nearest known definitions."""
    assert _check(_msg("ADT^A01", version, "EVN|A01\rPID|||1\rPV1||I\r")) == []
    assert _check(_msg("ADT^A01", version, "EVN|A01\rPV1||I\r")) == [(100, "PID", None, None)]


def test_event_structure_table_when_msh93_absent() -> None:
    """ADT^A04 without MSH-9.3 is checked as ADT_A01 (table 0354)."""
    assert _check(_msg("ADT^A04", "2.5", "EVN|A04\rPV1||I\r")) == [(100, "PID", None, None)]


def test_z_types_events_and_segments_are_allowed() -> None:
    """Z message types, Z trigger events and Z segments are never findings."""
    assert _check(_msg("ZXX^Z01")) == []
    assert _check(_msg("ORU^Z99", "2.5", "ZAB|1\rOBR|1\r")) == []
    assert _check(read("edge/hapi-olis-erp-z99-zsegments-lf.hl7")) == []


def test_unknown_structure_is_lenient() -> None:
    """A structure hl7apy does not define imposes no segment requirement."""
    assert _check(_msg("ORU^R01^ORU_R99", "2.5", "OBR|1\r")) == []
    assert _check(_msg("ORA^R41^ORA_R41", "2.7")) == []


def test_unsupported_processing_id() -> None:
    """MSH-11 outside table 0103 is a 202."""
    raw = b"MSH|^~\\&|A|B|||20240101||ACK^A01^ACK|C|X|2.5\rMSA|AA|1\r"
    assert _check(raw) == [(202, "MSH", 11, None)]


def test_required_segments_cached_per_version_and_structure() -> None:
    """Required segments are computed once per key and include required groups' segments."""
    before = required_segments.cache_info().hits
    assert required_segments((2, 5), ("ADT_A01",)) == ("EVN", "PID", "PV1")
    assert required_segments((2, 5), ("ADT_A01",)) == ("EVN", "PID", "PV1")
    assert required_segments.cache_info().hits > before
    assert required_segments((2, 6), ("ORU_R01",)) == ("OBR",)


def test_suggested_outcome() -> None:
    """Unsupported type/event/processing/version reject; other errors AE; warnings accept."""
    assert suggested_outcome(
        check_acceptance(*_pair("edge/ipf-unknown-message-type-abc-xyz.hl7"))
    ) is (AckOutcome.REJECT)
    assert suggested_outcome(check_acceptance(*_pair("edge/ipf-adt-a01-missing-pid.hl7"))) is (
        AckOutcome.ERROR
    )
    assert suggested_outcome([ErrorDetail(207, "W")]) is AckOutcome.ACCEPT
    assert suggested_outcome([]) is AckOutcome.ACCEPT
