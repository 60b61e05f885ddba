"""The records contract: paths, codes, identities, findings and the report's helpers."""

from __future__ import annotations

from profiles.hl7.ack import ErrorDetail
from profiles.pcd.records import (
    Alarm,
    Code,
    ContainmentPath,
    DeviceIdentity,
    DeviceNode,
    DeviceReport,
    Finding,
    Metric,
)

SPO2 = Code("150456", "MDC_PULS_OXIM_SAT_O2", "MDC")


def test_containment_path_levels_and_dotted_form() -> None:
    """Trailing zeros name the containing node; a fifth level is a facet."""
    assert ContainmentPath.parse("1.0.0.0").level == "MDS"
    assert ContainmentPath.parse("1.1.0.0").level == "VMD"
    assert ContainmentPath.parse("1.1.1.0").level == "CHAN"
    assert ContainmentPath.parse("1.1.0.1").level == "METRIC"
    alarm = ContainmentPath.parse("1.3.1.150456.1")
    assert alarm is not None and alarm.level == "FACET" and alarm.metric == 150456
    assert alarm.dotted() == "1.3.1.150456.1"
    short = ContainmentPath.parse("1.0.1")
    assert short is not None and short.dotted() == "1.0.1.0" and short.depth == 3
    assert [str(p) for p in alarm.ancestors()] == ["1.0.0.0", "1.3.0.0", "1.3.1.0"]


def test_containment_path_rejects_what_is_not_a_path() -> None:
    """Letters, empty levels and more than five levels are not containment paths."""
    for text in ("", "1..2", "a.b", "1.2.3.4.5.6", "-1", "1.2.x"):
        assert ContainmentPath.parse(text) is None


def test_code_matches_number_or_refid_but_not_a_pending_zero() -> None:
    """A rule can name a metric by number or reference id; '0' means 'code pending'."""
    assert SPO2.matches("150456") and SPO2.matches(150456)
    assert SPO2.matches("MDC_PULS_OXIM_SAT_O2")
    assert not SPO2.matches("150457")
    assert not Code("0", "MDC_FLOW_FLUID_PUMP_CURRENT", "MDC").matches("0")


def test_device_identity_key_tells_pumps_of_one_vendor_apart() -> None:
    """Two pumps under the same EUI-64 authority have different keys."""
    a = DeviceIdentity("P2449", "EUI-64", authority="0012210000000000")
    b = DeviceIdentity("P6013", "EUI-64", authority="0012210000000000")
    assert a.key != b.key
    assert a.eui64 is None
    assert DeviceIdentity("080019fffe3ed02d", "EUI-64").eui64 == "080019FFFE3ED02D"


def test_finding_becomes_an_err_entry() -> None:
    """A finding's location and code turn into an ErrorDetail for the ACK builder."""
    detail = Finding("error", "OBX[3]-4.1", 102, "OBX-4 is not a containment path")
    err = detail.to_error_detail()
    assert err == ErrorDetail(
        code=102,
        severity="E",
        segment="OBX",
        sequence=3,
        field=4,
        component=1,
        text="OBX-4 is not a containment path",
    )
    assert Finding("warning", "MSH-21", 103, "x").to_error_detail().sequence == 1


def test_report_helpers() -> None:
    """metric(), alarms_with_priority() and device_identity read the tree and rows."""
    ident = DeviceIdentity("0123456789ABCDEF", "EUI-64")
    mds = DeviceNode(
        "MDS", ContainmentPath(1), Code("69965", "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS", "MDC"), ident
    )
    metric = Metric("4", ContainmentPath(1, 1, 1, 1), SPO2, "NM", 88.0, "88")
    alarm = Alarm(Code("196670", "MDC_EVT_LO", "MDC"), priority="medium", priority_code="PM")
    report = DeviceReport("PCD-01", devices=(mds,), metrics=(metric,), alarms=(alarm,))
    assert report.metric("MDC_PULS_OXIM_SAT_O2") is metric
    assert report.metric("150021") is None
    assert report.device_identity is ident
    assert report.is_monitor and not report.is_infusion_pump
    assert report.alarms_with_priority("PM") == (alarm,)
    assert report.alarms_with_priority("high") == ()
