"""read_header against the whole corpus and the standard's delimiter rules."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from profiles.hl7.header import HeaderError, read_header
from tests.profiles.corpus import corpus_files, file_id, naive_control_id, read

# Edge files whose MSH cannot be read, with the MSH field at fault and the salvaged MSH-10.
UNREADABLE = {
    "edge/hapi-bar-p01-msh2-three-chars.hl7": (2, "908594ADT30502185327"),
    "edge/hl7apy-msh-duplicate-encoding-chars.hl7": (2, "0123456789"),
    "edge/hl7apy-msh-no-encoding-chars.hl7": (2, ""),
    "edge/hl7apy-msh-seven-custom-encoding-chars.hl7": (2, ""),
    "edge/hl7apy-msh-six-encoding-chars.hl7": (2, ""),
    "edge/hl7apy-msh-three-encoding-chars-v27.hl7": (2, ""),
    "edge/pythonhl7-bad-batch-bhs-without-msh.hl7": (None, ""),
    "edge/pythonhl7-bad-batch-nested-bhs.hl7": (None, ""),
    "edge/pythonhl7-bad-file-nested-fhs.hl7": (None, ""),
    "edge/pythonhl7-batch-bhs-two-msgs-bts.hl7": (None, ""),
    "edge/pythonhl7-file-fhs-two-batches-fts.hl7": (None, ""),
}

# Edge files that are readable, with the control id a receiver must echo.
READABLE_EDGE = {
    "edge/bbraun-infusomat-pcd01-msh10-wrapped-across-lines.hl7": "6390708",
    "edge/bbraun-perfusor-pcd01-pid-glued-to-msh.hl7": "63903934748935663668521",
    "edge/hapi-ack-empty-trigger-brace-encoding.hl7": "589888ADT30502184808",
    "edge/hapi-adt-a03-lf-separators.hl7": "263206",
    "edge/hapi-bar-p01-custom-subcomponent-brace.hl7": "589888ADT30502184808",
    "edge/hapi-olis-erp-z99-zsegments-lf.hl7": "bf3dd577-2108-47ad-abd2-4f06284f3b55",
    "edge/hapi-oru-r01-v22-radiology-with-msa.hl7": "1994050216163360",
    "edge/hl7apy-missing-control-id-and-version.hl7": "",
    "edge/hl7apy-missing-msh9-message-type.hl7": "0123456789",
    "edge/hl7apy-msh9-trigger-missing-no-control-id.hl7": "",
    "edge/hl7apy-rsp-k22-v27-truncation-char-no-trailing-cr.hl7": "1234",  # no final CR
    "edge/ipf-adt-a01-missing-pid.hl7": "123456",
    "edge/ipf-adt-a01-utf8-umlauts-no-msh18.hl7": "123456",
    "edge/ipf-adt-a40-latin1-bytes-in-msh.hl7": "_mpi_1dd16f73-c85c-4540-857d-8b922f1732de",
    "edge/ipf-mdm-t02-zbe-zsegment-ed-obx.hl7": "123456",
    "edge/ipf-pcd01-ack-wrong-version-v25.hl7": "AMSGID1234",
    "edge/ipf-unknown-message-type-abc-xyz.hl7": "11350110",
    "edge/pythonhl7-batch-no-header-trailer.hl7": "12334456778890",
    "edge/pythonhl7-repetition-subcomponent-probe.hl7": "CNTRL-3456",
}

PHILIPS = "pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7"


def test_every_edge_file_is_classified() -> None:
    """Each edge file has a stated expectation, so a new one cannot slip by untested."""
    edge = {file_id(p) for p in corpus_files() if p.parent.name == "edge"}
    assert edge == set(UNREADABLE) | set(READABLE_EDGE)


@pytest.mark.parametrize("name", sorted(UNREADABLE))
def test_unreadable_edge_files_raise_header_error(name: str) -> None:
    """Broken MSH-1/MSH-2 or a missing MSH raise HeaderError with field and salvaged id."""
    field, salvaged = UNREADABLE[name]
    with pytest.raises(HeaderError) as caught:
        read_header(read(name))
    assert caught.value.field == field
    assert caught.value.salvaged_control_id == salvaged
    assert caught.value.code in (100, 102)


@pytest.mark.parametrize("name", sorted(READABLE_EDGE))
def test_readable_edge_files_give_the_control_id(name: str) -> None:
    """Odd but readable headers yield exactly the MSH-10 a sender expects back."""
    assert read_header(read(name)).control_id == READABLE_EDGE[name]


@pytest.mark.parametrize(
    "path", [p for p in corpus_files() if p.parent.name != "edge"], ids=file_id
)
def test_regular_corpus_control_id_matches_naive_split(path: Path) -> None:
    """Outside edge/, every header reads and MSH-10 equals a naive split of line one."""
    raw = path.read_bytes()
    assert read_header(raw).control_id == naive_control_id(raw)


def test_philips_monitor_header_fields() -> None:
    """A PCD-01 header from the IHE TF decodes to the values printed there."""
    h = read_header(read(PHILIPS))
    assert h.sending_application.text == "PAT_DEVICE_PHILIPS_C"
    assert h.sending_facility.namespace == "Philips"
    assert h.receiving_application.text == ""
    assert h.timestamp == "20150122182658+0000"
    assert (h.message_type, h.trigger_event, h.message_structure) == ("ORU", "R01", "ORU_R01")
    assert h.control_id == "HP0122182658686QQ000CND119C0WS61"
    assert (h.processing_id, h.version) == ("P", "2.6")
    assert (h.accept_ack_type, h.application_ack_type) == ("AL", "NE")
    assert h.enhanced_mode is True
    assert h.character_sets == ("8859/1",)
    assert h.codec == "iso8859-1"
    assert h.profiles == ("IHE_PCD_001",)
    assert h.patient_id == "HO2009001"


def test_hd_fields_keep_text_and_split_components() -> None:
    """MSH-3 keeps the whole HD as written and exposes namespace, universal id and type."""
    h = read_header(read("pcd01-pump/bbraun-spaceplus-perfusor-pcd01-infusing-dobutamine.hl7"))
    assert h.sending_application.text == "PAT_DEVICE_BBRAUN^0012211839000001^EUI-64"
    assert str(h.sending_application) == "PAT_DEVICE_BBRAUN^0012211839000001^EUI-64"
    assert h.sending_application.namespace == "PAT_DEVICE_BBRAUN"
    assert h.sending_application.universal_id == "0012211839000001"
    assert h.sending_application.universal_id_type == "EUI-64"


def test_original_mode_without_msh15_msh16() -> None:
    """Empty MSH-15 and MSH-16 mean original acknowledgment mode."""
    h = read_header(read("general/pythonhl7-oru-r01-v24-ghh-lab-glucose.hl7"))
    assert h.enhanced_mode is False
    assert h.message_structure == ""


def test_truncation_character_in_v27() -> None:
    """A 5th MSH-2 character is the v2.7 truncation character."""
    h = read_header(read("pcd04-alarm/draeger-acm-ack-r40-v27-truncation-char.hl7"))
    assert h.delimiters.truncation == "#"
    assert h.delimiters.encoding_characters == "^~\\&#"
    assert (h.message_type, h.trigger_event, h.version) == ("ACK", "R40", "2.7")


def test_truncation_character_before_v27_is_rejected() -> None:
    """A 5th MSH-2 character in a v2.6 message breaks the standard."""
    with pytest.raises(HeaderError) as caught:
        read_header(b"MSH|^~\\&#|A|B|C|D|20200101||ADT^A01|X1|P|2.6\rPID|||1\r")
    assert caught.value.salvaged_control_id == "X1"


def test_custom_subcomponent_separator() -> None:
    """Non-default MSH-2 ('}' as sub-component separator) is honoured."""
    h = read_header(read("edge/hapi-bar-p01-custom-subcomponent-brace.hl7"))
    assert h.delimiters.subcomponent == "}"
    assert h.patient_id == "429314294"


def test_utf8_without_msh18_is_detected() -> None:
    """UTF-8 umlauts with an empty MSH-18 are read as UTF-8."""
    h = read_header(read("edge/ipf-adt-a01-utf8-umlauts-no-msh18.hl7"))
    assert h.codec == "utf-8"
    assert h.character_sets == ()


def test_latin1_without_msh18_is_not_decoded_as_utf8() -> None:
    """ISO-8859-1 bytes in MSH-5/6 with no MSH-18 come out as the letters they are."""
    h = read_header(read("edge/ipf-adt-a40-latin1-bytes-in-msh.hl7"))
    assert h.codec == "cp1252"
    assert h.receiving_application.text == "BLÄH"
    assert h.receiving_facility.text == "BLÖÖÖH-1"


@pytest.mark.parametrize("terminator", [b"\r", b"\n", b"\r\n"])
@pytest.mark.parametrize("lead", [b"", b"\xef\xbb\xbf", b"\r\n  "])
@pytest.mark.parametrize("final", [True, False])
def test_terminators_and_leading_junk(terminator: bytes, lead: bytes, final: bool) -> None:
    """CR, LF, CRLF, leading BOM/whitespace and a missing last terminator read the same."""
    segments = [b"MSH|^~\\&|APP|FAC|||20240101||ADT^A01^ADT_A01|C42|P|2.5", b"PID|1||77^^^H"]
    raw = lead + terminator.join(segments) + (terminator if final else b"")
    h = read_header(raw)
    assert (h.control_id, h.patient_id, h.version) == ("C42", "77", "2.5")


def test_escape_sequences_in_msh_values_are_decoded() -> None:
    """Escaped delimiters inside MSH values decode after splitting, not before."""
    raw = b"MSH|^~\\&|A\\T\\B^X|F|||20240101||ADT^A01|ID\\F\\1\\S\\2|P|2.5\rPID|||P\\S\\1^x\r"
    h = read_header(raw)
    assert h.control_id == "ID|1^2"
    assert h.sending_application.namespace == "A&B"
    assert h.sending_application.text == "A\\T\\B^X"
    assert h.patient_id == "P^1"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"   ",
        b"PID|1",
        b"MSH",
        b"MSHA^~\\&|x",
        b"MSH|^~\\|A",
        b"MSH|^~\\&a|A||||||||2.7",
        b"MSH|^~^&|A",
        b"MSH|^|\\&|A",
        b"MSH|^~\\& |A",
        b"MSH|^~\\&#$|A",
    ],
)
def test_bad_headers_raise(raw: bytes) -> None:
    """Absent MSH, alphanumeric, blank, duplicated or too few/many delimiters are refused."""
    with pytest.raises(HeaderError):
        read_header(raw)


def test_header_is_frozen() -> None:
    """Header values cannot be changed after reading."""
    h = read_header(read(PHILIPS))
    with pytest.raises(dataclasses.FrozenInstanceError):
        h.control_id = "other"  # type: ignore[misc]


def test_pid_found_in_crlf_message_and_absent_gives_empty() -> None:
    """PID-3.1 is found after CRLF; a message without PID yields ''."""
    assert read_header(read("pcd01-monitor/ipf-acme-bp-pcd01-minimal.hl7")).patient_id == "789567"
    assert read_header(read("general/ipf-pcd01-ack-aa.hl7")).patient_id == ""


def test_msh18_repetitions_and_unknown_charset_fall_back() -> None:
    """MSH-18 repetitions are kept; an unknown value falls back to detection."""
    h = read_header(read("general/ipf-oru-r01-v24-repeating-obx5.hl7"))
    assert h.character_sets == ("code1", "code2")
    assert h.codec == "ascii"
