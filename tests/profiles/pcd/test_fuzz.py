"""Mutated corpus device messages: extract and check answer with findings, never by failing.

``extract`` guards itself with a last-resort catch that reports code 207; reaching it
means a bug, so these tests also fail when that finding appears.
"""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.pcd.conformance import check
from profiles.pcd.extract import extract
from profiles.pcd.records import DeviceReport, Finding
from tests.profiles.corpus import CORPUS

FOLDERS = ("pcd01-monitor", "pcd01-pump", "pcd04-alarm", "phd-glucose")
SAMPLES = [p.read_bytes() for f in FOLDERS for p in sorted((CORPUS / f).glob("*.hl7"))]
SAMPLES += [p.read_bytes() for p in sorted((CORPUS / "edge").glob("bbraun-*.hl7"))]
INTERESTING = b"|^~\\&\r\n.0123456789+-ENMSTCWXOBRPIDMDC_\xc3\xa4\xff\x00 "
FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _exercise(raw: bytes) -> None:
    report = extract(raw)
    assert isinstance(report, DeviceReport)
    assert not [f for f in report.findings if f.code == 207], "extraction hit an internal error"
    findings = check(raw)
    assert all(isinstance(f, Finding) for f in findings)
    for finding in findings:
        finding.to_error_detail()  # every finding can become an ERR segment


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A corpus message with a few bytes replaced, inserted or deleted, or cut short."""
    data = bytearray(draw(st.sampled_from(SAMPLES)))
    for _ in range(draw(st.integers(1, 8))):
        position = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["replace", "insert", "delete", "cut"]))
        byte = draw(st.sampled_from(list(INTERESTING)))
        if action == "replace" and data:
            data[position] = byte
        elif action == "insert":
            data.insert(position, byte)
        elif action == "delete" and data:
            del data[position]
        elif action == "cut":
            del data[position:]
    return bytes(data)


@FUZZ
@given(mutated())
def test_mutated_corpus_messages(raw: bytes) -> None:
    """Byte-level damage to real device messages never breaks extract or check."""
    _exercise(raw)


@st.composite
def field_swapped(draw: st.DrawFn) -> bytes:
    """A corpus message with one OBX/OBR/MSH field replaced by hostile text."""
    text = draw(st.sampled_from(SAMPLES)).decode("utf-8", "replace")
    lines = text.replace("\r\n", "\r").replace("\n", "\r").split("\r")
    index = draw(st.integers(0, len(lines) - 1))
    fields = lines[index].split("|")
    slot = draw(st.integers(1, max(len(fields) - 1, 1)))
    hostile = draw(
        st.one_of(
            st.text(alphabet="0123456789.^~&\\+-:EUI MDC_", max_size=30),
            st.sampled_from(["1.2.3.4.5.6", "99999999999999999999", "^^^^^", "~~~", "\\X00\\"]),
        )
    )
    if slot < len(fields):
        fields[slot] = hostile
    else:
        fields.append(hostile)
    lines[index] = "|".join(fields)
    return "\r".join(lines).encode("utf-8")


@FUZZ
@given(field_swapped())
def test_field_level_damage(raw: bytes) -> None:
    """Any single field replaced by odd text: a report and findings, no exception."""
    _exercise(raw)


def test_every_sample_is_exercised_unchanged() -> None:
    """The unmutated samples pass the same checks (and there are some)."""
    assert len(SAMPLES) >= 30
    for raw in SAMPLES:
        _exercise(raw)
