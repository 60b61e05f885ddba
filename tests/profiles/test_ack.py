"""ACK building: codes, structure per version, round trips through python-hl7 and hl7apy."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import hl7
import pytest
from hl7apy.consts import VALIDATION_LEVEL
from hl7apy.parser import parse_message

from profiles.hl7.ack import (
    AckOutcome,
    ErrorDetail,
    ack_code,
    build_ack,
    build_reject_for_unreadable,
)
from profiles.hl7.header import HeaderError, read_header
from tests.profiles.corpus import corpus_files, file_id, read

NOW = datetime(2024, 5, 6, 7, 8, 9, tzinfo=UTC)
PHILIPS = "pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7"
ERROR_101 = ErrorDetail(101, segment="MSH", field=9, component=2, text="trigger missing")


def _segments(ack: bytes) -> list[str]:
    text = ack.decode("latin-1")
    assert text.endswith("\r")
    return text[:-1].split("\r")


@pytest.mark.parametrize(
    ("name", "outcome", "code"),
    [
        ("general/pythonhl7-oru-r01-v24-ghh-lab-glucose.hl7", AckOutcome.ACCEPT, "AA"),
        ("general/pythonhl7-oru-r01-v24-ghh-lab-glucose.hl7", AckOutcome.ERROR, "AE"),
        ("general/pythonhl7-oru-r01-v24-ghh-lab-glucose.hl7", AckOutcome.REJECT, "AR"),
        (PHILIPS, AckOutcome.ACCEPT, "CA"),
        (PHILIPS, AckOutcome.ERROR, "CE"),
        (PHILIPS, AckOutcome.REJECT, "CR"),
    ],
)
def test_ack_code_follows_mode(name: str, outcome: AckOutcome, code: str) -> None:
    """Original mode answers A*, enhanced mode (MSH-15/16 set) answers C*."""
    assert ack_code(read_header(read(name)), outcome) == code


def test_philips_ack_fields() -> None:
    """MSH swaps sender and receiver, echoes MSH-11/12/18; MSA-2 echoes MSH-10."""
    h = read_header(read(PHILIPS))
    ack = build_ack(h, outcome=AckOutcome.ACCEPT, now=NOW, control_id="ACK-1", sender=("IL", "ICU"))
    msh, msa = _segments(ack)
    assert msh == (
        "MSH|^~\\&|IL|ICU|PAT_DEVICE_PHILIPS_C|Philips|20240506070809+0000||ACK^R01^ACK|ACK-1"
        "|P|2.6||||||8859/1"
    )
    assert msa == "MSA|CA|HP0122182658686QQ000CND119C0WS61"


def test_ack_is_a_pure_function() -> None:
    """Same inputs give the same bytes; only MSH-7 follows ``now``."""
    h = read_header(read(PHILIPS))
    one = build_ack(h, outcome=AckOutcome.ERROR, now=NOW, control_id="A", errors=[ERROR_101])
    two = build_ack(h, outcome=AckOutcome.ERROR, now=NOW, control_id="A", errors=[ERROR_101])
    later = build_ack(
        h,
        outcome=AckOutcome.ERROR,
        now=NOW.astimezone(timezone(timedelta(hours=2))),
        control_id="A",
        errors=[ERROR_101],
    )
    assert one == two
    assert one.replace(b"20240506070809+0000", b"20240506090809+0200") == later


def test_err_v25_layout_parsed_by_hl7apy() -> None:
    """v2.5+ ERR carries ERR-2 location, ERR-3 code^text^HL70357, ERR-4 severity, ERR-7."""
    h = read_header(read("general/ipf-adt-a01-v25.hl7"))
    ack = build_ack(
        h, outcome=AckOutcome.ERROR, now=NOW, control_id="A1", errors=[ERROR_101], text="bad"
    )
    assert _segments(ack)[2] == (
        "ERR||MSH^1^9^^2|101^Required field missing^HL70357|E|||trigger missing"
    )
    parsed = parse_message(ack.decode("ascii"), validation_level=VALIDATION_LEVEL.STRICT)
    assert parsed.msa.msa_1.value == "CE"  # MSH-15 is ER: enhanced mode
    assert parsed.msa.msa_2.value == "123456"
    assert parsed.msa.msa_3.value == "bad"
    assert parsed.err.err_3.cwe_1.value == "101"
    assert parsed.err.err_2.erl_1.value == "MSH"
    assert parsed.err.err_4.value == "E"


def test_err_before_v25_uses_err1() -> None:
    """Before v2.5 each error is an ERR-1 repetition SEG^seq^field^code&text&HL70357."""
    h = read_header(read("general/pythonhl7-adt-a01-v23-insurance-nulls.hl7"))
    missing = ErrorDetail(100, segment="EVN", text="required segment EVN is missing")
    ack = build_ack(
        h, outcome=AckOutcome.ERROR, now=NOW, control_id="A1", errors=[missing, ERROR_101]
    )
    err = _segments(ack)[2]
    assert err == (
        "ERR|EVN^1^^100&Segment sequence error&HL70357~MSH^1^9^101&Required field missing&HL70357"
    )
    parsed = hl7.parse(ack.decode("ascii"))
    assert parsed.extract_field("ERR", 1, 1, 2, 4, 1) == "101"
    assert parsed.extract_field("MSH", 1, 9, 1, 1, 1) == "ACK"
    assert parsed.extract_field("MSH", 1, 9, 1, 2, 1) == "A01"


def test_msa3_only_where_it_exists() -> None:
    """MSA-3 carries the text before v2.7 and is left out from v2.7 on."""
    v27 = read_header(read("edge/hl7apy-rsp-k22-v27-truncation-char-no-trailing-cr.hl7"))
    ack = build_ack(v27, outcome=AckOutcome.ACCEPT, now=NOW, control_id="A", text="ok")
    assert _segments(ack)[1] == "MSA|AA|1234"


def test_received_delimiters_and_charset_are_used() -> None:
    """The ACK is written in the sender's delimiters and MSH-18 character set."""
    raw = "MSH|^~\\}|Gerät^1.2}x|F|||20240101||ADT^A01|ID\\F\\7|P|2.4||||||8859/1\rPID|||1\r"
    h = read_header(raw.encode("latin-1"))
    ack = build_ack(h, outcome=AckOutcome.ACCEPT, now=NOW, control_id="C|1")
    assert ack.startswith(b"MSH|^~\\}|INTERLINK||Ger\xe4t^1.2}x|F|")
    assert b"|C\\F\\1|" in ack
    assert b"MSA|AA|ID\\F\\7\r" in ack
    assert ack.decode("latin-1").split("\r")[0].endswith("|8859/1")


def test_truncation_character_is_echoed() -> None:
    """A v2.7 sender's 5-character MSH-2 comes back unchanged."""
    h = read_header(read("pcd04-alarm/draeger-acm-pcd04-watchdog-heartbeat.hl7"))
    v27 = read_header(read("pcd04-alarm/draeger-acm-ack-r40-v27-truncation-char.hl7"))
    assert build_ack(v27, outcome=AckOutcome.ACCEPT, now=NOW, control_id="Z").startswith(
        b"MSH|^~\\&#|"
    )
    assert build_ack(h, outcome=AckOutcome.ACCEPT, now=NOW, control_id="Z").startswith(
        b"MSH|^~\\&|"
    )


def test_error_detail_rejects_codes_outside_table_0357() -> None:
    """Only HL7 table 0357 codes and table 0516 severities are accepted."""
    with pytest.raises(ValueError):
        ErrorDetail(999)
    with pytest.raises(ValueError):
        ErrorDetail(100, severity="X")


def _readable() -> list[Path]:
    found = []
    for path in corpus_files():
        try:
            read_header(path.read_bytes())
        except HeaderError:
            continue
        found.append(path)
    return found


def _unreadable() -> list[Path]:
    return [p for p in corpus_files() if p not in set(_readable())]


@pytest.mark.parametrize("path", _readable(), ids=file_id)
def test_corpus_acks_round_trip(path: Path) -> None:
    """Every readable corpus message gets an ACK both parsers read, MSA-2 == MSH-10."""
    h = read_header(path.read_bytes())
    ack = build_ack(
        h,
        outcome=AckOutcome.ERROR,
        now=NOW,
        control_id="ACK-9",
        errors=[ERROR_101],
        text="see ERR",
    )
    text = ack.decode(h.codec)
    parsed = hl7.parse(text)
    assert parsed.extract_field("MSA", 1, 2) == h.control_id
    assert parsed.extract_field("MSA", 1, 1) == ack_code(h, AckOutcome.ERROR)
    assert parsed.extract_field("MSH", 1, 10) == "ACK-9"
    assert str(parsed.segment("MSH")(5)) == h.sending_application.text
    assert str(parsed.segment("MSH")(6)) == h.sending_facility.text
    tolerant = parse_message(text, validation_level=VALIDATION_LEVEL.TOLERANT)
    assert tolerant.msa.msa_2.value == parsed.segment("MSA")(2)[0]
    assert tolerant.msh.msh_10.value == "ACK-9"


@pytest.mark.parametrize("path", _unreadable(), ids=file_id)
def test_unreadable_corpus_gets_strict_valid_reject(path: Path) -> None:
    """A message whose MSH cannot be read gets an AR that hl7apy validates strictly."""
    raw = path.read_bytes()
    with pytest.raises(HeaderError) as caught:
        read_header(raw)
    ack = build_reject_for_unreadable(raw, caught.value, now=NOW, control_id="R-1")
    parsed = parse_message(ack.decode("ascii"), validation_level=VALIDATION_LEVEL.STRICT)
    assert parsed.msh.msh_12.value == "2.5"
    assert parsed.msa.msa_1.value == "AR"
    assert parsed.msa.msa_2.value == caught.value.salvaged_control_id
    assert parsed.err.err_3.cwe_1.value in ("100", "102")
    assert parsed.err.err_7.value == caught.value.reason
    assert b"SEND APP" not in ack and b"ABCHS" not in ack


def test_reject_names_the_rule_not_the_content() -> None:
    """The reject for a 3-character MSH-2 names MSH-2 and quotes nothing of the message."""
    raw = read("edge/hapi-bar-p01-msh2-three-chars.hl7")
    with pytest.raises(HeaderError) as caught:
        read_header(raw)
    ack = build_reject_for_unreadable(raw, caught.value, now=NOW, control_id="R-2")
    segments = _segments(ack)
    assert segments[1].startswith("MSA|AR|908594ADT30502185327|")
    assert segments[2].startswith("ERR||MSH^1^2|102^Data type error^HL70357|E|||MSH-2 has 3")
    assert b"CRESWELL" not in ack and b"ADMISSION" not in ack
