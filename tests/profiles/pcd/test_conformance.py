"""PCD-01 / PCD-04 conformance: each rule on a message of our own, then the corpus quirks."""

from __future__ import annotations

from datetime import UTC, datetime

import hl7
import pytest

from profiles.hl7.ack import AckOutcome, build_ack
from profiles.hl7.header import read_header
from profiles.pcd.conformance import check, has_errors
from tests.profiles.corpus import read

# A conforming PCD-01 written for these tests (not from the corpus).
GOOD = "\r".join(
    [
        "MSH|^~\\&|GW^0A0B0C0D0E0F1011^EUI-64|WARD|||20240102030405+0100||ORU^R01^ORU_R01|"
        "C1|P|2.6|||AL|NE||UNICODE UTF-8|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO",
        "PID|||MRN42^^^HOSP^MR",
        "OBR|1|X1^GW^0A0B0C0D0E0F1011^EUI-64||182777000^monitoring of patient^SCT|||"
        "20240102030400+0100",
        "OBX|1||69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS^MDC|1.0.0.0|||||||X|||||||"
        "0102030405060708^^0102030405060708^EUI-64",
        "OBX|2||69642^MDC_DEV_ANALY_SAT_O2_VMD^MDC|1.1.0.0|||||||X",
        "OBX|3||70771^MDC_DEV_ANALY_PERF_REL_CHAN^MDC|1.1.1.0|||||||X",
        "OBX|4|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.1.1.1|97|262688^MDC_DIM_PERCENT^MDC|||||R|||"
        "20240102030400+0100",
    ]
)


def _with(old: str, new: str) -> str:
    assert old in GOOD
    return GOOD.replace(old, new, 1)


def _found(text: str) -> list[tuple[str, str, int]]:
    return [(f.severity, f.location, f.code) for f in check(text)]


def test_a_conforming_message_has_no_findings() -> None:
    """The reference message passes every rule."""
    assert check(GOOD) == []
    assert check(GOOD.encode()) == []


@pytest.mark.parametrize(
    ("old", "new", "expected"),
    [
        ("ORU^R01^ORU_R01", "ADT^A01^ADT_A01", ("error", "MSH-9.1", 200)),
        ("ORU^R01^ORU_R01", "ORU^R30^ORU_R30", ("error", "MSH-9.2", 201)),
        ("ORU^R01^ORU_R01", "ORU^R01", ("warning", "MSH-9.3", 101)),
        ("ORU^R01^ORU_R01", "ORU^R01^ORU_R40", ("warning", "MSH-9.3", 103)),
        ("|P|2.6|", "|P|2.5|", ("error", "MSH-12", 203)),
        ("|P|2.6|", "|P|2.7|", ("warning", "MSH-12", 203)),
        ("|P|2.6|", "|P||", ("error", "MSH-12", 101)),
        ("|||IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO", "|||", ("error", "MSH-21", 101)),
        ("IHE_PCD_001^IHE PCD", "IHE PCD ORU-R01 2006^HL7", ("warning", "MSH-21.1", 103)),
        (
            "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1",
            "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4",
            ("warning", "MSH-21.1", 103),
        ),
        ("1.6.1.1.1^ISO", "1.6.9.9.9^ISO", ("warning", "MSH-21.3", 103)),
        ("IHE_PCD_001^IHE PCD", "MY_PROFILE^X", ("warning", "MSH-21", 103)),
        ("PID|||MRN42^^^HOSP^MR\r", "", ("error", "PID", 100)),
        ("PID|||MRN42^^^HOSP^MR", "PID|||", ("warning", "PID-3", 101)),
        ("|97|", "|9 7|", ("error", "OBX[4]-5", 102)),
        ("|4|NM|", "|4||", ("error", "OBX[4]-2", 101)),
        ("|4|NM|", "|4|XX|", ("error", "OBX[4]-2", 103)),
        ("150456^MDC_PULS_OXIM_SAT_O2^MDC", "", ("error", "OBX[4]-3", 101)),
        (
            "150456^MDC_PULS_OXIM_SAT_O2^MDC",
            "SPO2^MDC_PULS_OXIM_SAT_O2^MDC",
            ("error", "OBX[4]-3.1", 102),
        ),
        ("150456^MDC_PULS_OXIM_SAT_O2^MDC", "150456^SpO2^LN", ("warning", "OBX[4]-3.3", 103)),
        (
            "150456^MDC_PULS_OXIM_SAT_O2^MDC",
            "150465^MDC_PULS_OXIM_SAT_O2^MDC",
            ("warning", "OBX[4]-3.1", 103),
        ),
        ("150456^MDC_PULS_OXIM_SAT_O2^MDC", "150456^SpO2^MDC", ("warning", "OBX[4]-3.2", 102)),
        ("|1.1.1.1|", "||", ("error", "OBX[4]-4", 101)),
        ("|1.1.1.1|", "|1.a.1.1|", ("error", "OBX[4]-4", 102)),
        ("|1.1.1.1|", "|1.1.1|", ("warning", "OBX[4]-4", 102)),
        ("|1.1.0.0|", "|1.0.0.0|", ("warning", "OBX[2]-4", 102)),
        ("|262688^MDC_DIM_PERCENT^MDC|", "||", ("warning", "OBX[4]-6", 101)),
        ("|262688^MDC_DIM_PERCENT^MDC|", "|pct^percent^L|", ("warning", "OBX[4]-6.3", 103)),
        ("|262688^MDC_DIM_PERCENT^MDC|", "|999999^MDC_DIM_NEW^MDC|", ("info", "OBX[4]-6", 103)),
        (
            "|262688^MDC_DIM_PERCENT^MDC|",
            "|266016^MDC_DIM_PERCENT^MDC|",
            ("warning", "OBX[4]-6.1", 103),
        ),
        ("|||||R|||", "||||||||", ("error", "OBX[4]-11", 101)),
        ("|||||R|||", "|||||Q|||", ("error", "OBX[4]-11", 103)),
        ("R|||20240102030400+0100", "R|||2024-01-02", ("error", "OBX[4]-14", 102)),
        ("|||20240102030400+0100\r", "|||yesterday\r", ("error", "OBR-7", 102)),
        (
            "0102030405060708^^0102030405060708^EUI-64",
            "0102030405060708^EUI-64",
            ("warning", "OBX[1]-18.2", 102),
        ),
        (
            "0102030405060708^^0102030405060708^EUI-64",
            "ABC^^DEF^EUI-64",
            ("warning", "OBX[1]-18", 102),
        ),
        ("0102030405060708^^0102030405060708^EUI-64", "bed-7", ("warning", "OBX[1]-18.4", 101)),
        ("0102030405060708^^0102030405060708^EUI-64", "", ("warning", "OBX[1]-18", 101)),
    ],
)
def test_each_rule_names_its_field_and_code(
    old: str, new: str, expected: tuple[str, str, int]
) -> None:
    """One departure from the reference message gives exactly the finding for its field."""
    assert _found(_with(old, new)) == [expected]


def test_an_unreadable_header_is_one_finding() -> None:
    """No MSH at all: one error, no exception."""
    (finding,) = check(b"PID|||1\r")
    assert finding.severity == "error" and finding.segment == "MSH"


def test_findings_become_err_segments_of_a_real_ack() -> None:
    """Findings turn into ErrorDetails; the ACK builder writes one ERR each (v2.6 layout)."""
    text = _with("|97|", "|9 7|")
    findings = check(text)
    assert has_errors(findings)
    raw = text.encode()
    ack = build_ack(
        read_header(raw),
        outcome=AckOutcome.ERROR,
        now=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC),
        control_id="A1",
        errors=[f.to_error_detail() for f in findings],
    )
    parsed = hl7.parse(ack.decode())
    assert str(parsed.segment("MSA")[1]) == "CE"
    err = parsed.segment("ERR")
    assert str(err[2]) == "OBX^4^5"
    assert str(err[3][0][0]) == "102"
    assert str(err[4]) == "E"


def test_pcd04_alarm_without_priority_or_type() -> None:
    """An ORU^R40 whose alarm lacks the ACM attributes gets one warning per missing one."""
    text = "\r".join(
        [
            "MSH|^~\\&|AR^0A0B0C0D0E0F1011^EUI-64|WARD|||20240102030405+0100||ORU^R40^ORU_R40|"
            "A1|P|2.6|||AL|NE||UNICODE UTF-8|||"
            "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4^ISO",
            "PID|||MRN42^^^HOSP^MR",
            "OBR|1|X1^AR^0A0B0C0D0E0F1011^EUI-64||196616^MDC_EVT_ALARM^MDC|||20240102030400+0100",
            "OBX|1|ST|196670^MDC_EVT_LO^MDC|1.3.1.150456.1|Low SpO2||||||F|||||||"
            "0102030405060708^^0102030405060708^EUI-64",
        ]
    )
    assert _found(text) == [
        ("warning", "OBX[1]", 101),
        ("warning", "OBX[1]", 101),
        ("warning", "OBX[1]", 101),
        ("warning", "OBX[1]", 101),
    ]
    with_facets = (
        text
        + "\r"
        + "\r".join(
            [
                "OBX|2|ST|68481^MDC_ATTR_EVENT_PHASE^MDC|1.3.1.150456.3|start||||||F",
                "OBX|3|ST|68482^MDC_ATTR_ALARM_STATE^MDC|1.3.1.150456.4|active||||||F",
            ]
        )
    )
    with_facets = with_facets.replace("|Low SpO2||||||F|", "|Low SpO2|||L~PH~SP|||F|")
    assert check(with_facets) == []
    assert _found(with_facets.replace("L~PH~SP", "L~PX~SP")) == [
        ("warning", "OBX[1]", 101),
        ("warning", "OBX[1]-8", 103),
    ]


# -- the corpus: precise findings for known quirks ---------------------------------------


def _corpus(relative: str) -> list[tuple[str, str, int]]:
    return [(f.severity, f.location, f.code) for f in check(read(relative))]


def test_edge_msh10_broken_across_lines() -> None:
    """The newline in MSH-10 leaves MSH without MSH-12/21 and a line with no segment name."""
    found = _corpus("edge/bbraun-infusomat-pcd01-msh10-wrapped-across-lines.hl7")
    assert ("error", "MSH-12", 101) in found
    assert ("error", "MSH-21", 101) in found
    assert ("error", "MSH", 100) in found
    texts = [
        f.text for f in check(read("edge/bbraun-infusomat-pcd01-msh10-wrapped-across-lines.hl7"))
    ]
    assert any("broken across lines" in t for t in texts)


def test_edge_pid_glued_to_msh() -> None:
    """PID run into MSH-21: MSH too long, PID missing, MSH-21.4 not ISO."""
    found = _corpus("edge/bbraun-perfusor-pcd01-pid-glued-to-msh.hl7")
    assert found[:3] == [
        ("warning", "MSH-21.4", 103),
        ("error", "MSH", 100),
        ("error", "PID", 100),
    ]


def test_tf_quirk_obx11_shifted_into_obx10() -> None:
    """The TF's INACTIVATION_STATE row is one pipe short: OBX-11 empty, status in OBX-10."""
    found = check(read("pcd04-alarm/ihe-tf-mindray-low-spo2-alarm-start.hl7"))
    assert [(f.location, f.code) for f in found] == [("OBX[5]-3.3", 101), ("OBX[5]-11", 101)]
    assert "OBX-10 holds one" in found[1].text


def test_tf_quirk_livedata_codes_and_obx13_times() -> None:
    """Six-digit attribute codes and OBX-14 printed in OBX-13 are named precisely."""
    found = _corpus("pcd04-alarm/ihe-tf-livedata-advisory-undocumented-timeout.hl7")
    assert ("warning", "OBX[2]-3.1", 103) in found
    assert ("warning", "OBX[3]-3.1", 103) in found
    assert ("warning", "OBX[4]-3.1", 103) in found
    assert ("warning", "OBX[1]-13", 102) in found
    assert ("warning", "OBX[1]-3.1", 103) in found  # code 0, pending


def test_bbraun_pump_and_alarm_messages_conform() -> None:
    """The real B. Braun SpacePlus PCD-01/10/04 captures pass every rule."""
    for name in (
        "pcd01-pump/bbraun-spaceplus-perfusor-pcd01-infusing-dobutamine.hl7",
        "pcd01-pump/bbraun-spaceplus-perfusor-pcd10-delivery-start.hl7",
        "pcd04-alarm/bbraun-syringe-holder-open-1-start.hl7",
        "pcd04-alarm/bbraun-syringe-holder-open-4-cleared.hl7",
    ):
        assert check(read(name)) == [], name


def test_old_profile_text_and_ipf_misprinted_codes() -> None:
    """IPF's pre-2008 MSH-21 text, short OBX-4 paths and 7-digit misprints are flagged."""
    found = _corpus("pcd01-monitor/ipf-acme-bp-maximum-all-fields.hl7")
    assert found[0] == ("warning", "MSH-21.1", 103)
    assert ("warning", "OBX[1]-4", 102) in found
    assert ("warning", "OBX[8]-3.1", 103) in found
    assert ("warning", "OBX[1]-18.2", 102) in found
    assert not has_errors(check(read("pcd01-monitor/ipf-acme-bp-maximum-all-fields.hl7")))


def test_continua_coded_values_without_value_type() -> None:
    """The invalid glucose sample: three OBX with a value and no OBX-2."""
    found = _corpus("phd-glucose/continua-wan-glucose-meter-invalid.hl7")
    assert [f for f in found if f[0] == "error"] == [
        ("error", "OBX[8]-2", 101),
        ("error", "OBX[9]-2", 101),
        ("error", "OBX[10]-2", 101),
    ]


def test_acknowledgements_are_not_pcd_reports() -> None:
    """An ACK^R40 is not a report: wrong message type, no PID/OBR/OBX."""
    found = _corpus("pcd04-alarm/draeger-acm-ack-r40-v27-truncation-char.hl7")
    assert found[0] == ("error", "MSH-9.1", 200)
    assert ("error", "OBX", 100) in found
