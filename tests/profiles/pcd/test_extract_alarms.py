"""Extraction of the corpus PCD-04 alarm reports (ORU^R40)."""

from __future__ import annotations

import pytest

from profiles.pcd.records import Alarm, ContainmentPath, DeviceReport
from tests.profiles.pcd.helpers import at, report

ALARM = "pcd04-alarm/"


def _alarm(r: DeviceReport) -> Alarm:
    assert r.profile == "PCD-04" and r.message_type == "ORU^R40"
    (alarm,) = r.alarms
    return alarm


@pytest.mark.parametrize(
    ("name", "phase", "state", "inactivation", "when"),
    [
        ("bbraun-syringe-holder-open-1-start.hl7", "start", "active", "enabled", "15:24:02"),
        ("bbraun-syringe-holder-open-2-muted.hl7", "update", "active", "audio-paused", "15:24:20"),
        (
            "bbraun-syringe-holder-open-3-minimized.hl7",
            "update",
            "active",
            "audio-paused",
            "15:24:32",
        ),
        ("bbraun-syringe-holder-open-4-cleared.hl7", "end", "inactive", "alarm-off", "15:24:42"),
    ],
)
def test_bbraun_syringe_holder_open_lifecycle(
    name: str, phase: str, state: str, inactivation: str, when: str
) -> None:
    """One technical alarm through start, two updates and end: every facet as sent."""
    r = report(ALARM + name)
    alarm = _alarm(r)
    assert (alarm.code.code, alarm.code.refid) == ("197218", "MDC_EVT_SYRINGE_BARREL_CAPTURE_FAULT")
    assert alarm.text == "Syringe Holder Open"
    assert (alarm.phase, alarm.state, alarm.inactivation_state) == (phase, state, inactivation)
    assert alarm.is_active is (state == "active")
    assert (alarm.priority, alarm.priority_code) == ("high", "PH")
    assert (alarm.alert_type, alarm.kind) == ("ST", "technical")
    assert alarm.source is not None
    assert (alarm.source.code, alarm.source.refid) == ("70053", "MDC_DEV_PUMP_INFUS_SYRINGE_MDS")
    assert alarm.path == ContainmentPath(1, 1, 0, 0, facet=1, depth=5)
    assert alarm.location == "OBX[3]"
    assert alarm.observed_at == at(f"2022-05-11 {when}")
    assert alarm.device is not None
    assert (alarm.device.id, alarm.device.authority) == ("2449", "0012210000000000")
    assert r.alarms_with_priority("high") == (alarm,)
    assert r.alarms_with_priority("PM", "low") == ()
    assert r.metrics == () and r.is_infusion_pump
    assert r.findings == ()


def test_draeger_co2_sensor_unplugged() -> None:
    """A four-level path without facets; URN equipment ids; priority PL, type SP."""
    r = report(ALARM + "draeger-acm-pcd04-co2-sensor-unplugged.hl7")
    alarm = _alarm(r)
    assert r.control_id == "0"
    assert (alarm.code.code, alarm.code.refid) == ("196916", "MDC_EVT_SENSOR_DISCONN")
    assert alarm.text == "CO2 Sensor unplugged"
    assert alarm.source is not None and alarm.source.code == "42"
    assert (alarm.phase, alarm.state, alarm.inactivation_state) == ("start", "active", "enabled")
    assert (alarm.priority, alarm.alert_type, alarm.kind) == ("low", "SP", "physiological")
    assert alarm.path == ContainmentPath(1, 1, 1, 1)
    assert alarm.observed_at == at("2019-11-27 16:05:43", 1)
    assert alarm.device is not None and alarm.device.scheme == "URN"
    assert alarm.device.id == "urn:uuid:f9bd67ba-10f9-11ea-bab1-0050b612afeb"
    assert r.patient is not None
    assert [(i.value, i.type_code) for i in r.patient.identifiers] == [("8888", "AN")]
    assert r.is_monitor and not r.is_infusion_pump
    assert r.findings == ()


def test_draeger_watchdog_heartbeat() -> None:
    """The keep-alive 'alarm': advisory, no priority; its confirm timeout stays a metric."""
    r = report(ALARM + "draeger-acm-pcd04-watchdog-heartbeat.hl7")
    alarm = _alarm(r)
    assert (alarm.code.refid, alarm.text) == ("MDC_EVT_ACTIVE", "continue")
    assert (alarm.priority, alarm.priority_code, alarm.alert_type) == ("none", "PN", "SA")
    assert alarm.source is not None and alarm.source.refid == "MDC_TODO"
    (timeout,) = r.metrics
    assert (timeout.code.refid, timeout.value) == ("MDC_ATTR_CONFIRM_TIMEOUT", 5.0)
    assert timeout.unit is not None and timeout.unit.ucum == "s"
    # MDS and VMD both printed at 1.0.0.0: the code's suffix tells them apart.
    assert [(n.level, n.path.dotted()) for n in r.nodes()] == [
        ("MDS", "1.0.0.0"),
        ("VMD", "1.0.0.0"),
    ]
    assert r.alarms_with_priority("none") == (alarm,)


@pytest.mark.parametrize(
    ("name", "phase", "state", "when"),
    [
        ("ihe-tf-bbraun-pump-occlusion-alarm-start.hl7", "start", "active", "17:54:17"),
        ("ihe-tf-bbraun-pump-occlusion-alarm-end.hl7", "end", "inactive", "17:54:26"),
    ],
)
def test_tf_pump_occlusion(name: str, phase: str, state: str, when: str) -> None:
    """Alarm code in OBX-5 of MDC_EVT_ALARM, type ST in OBX-8, identity on the alarm row."""
    r = report(ALARM + name)
    alarm = _alarm(r)
    assert (alarm.code.code, alarm.code.refid) == ("196940", "MDC_EVT_FLUID_LINE_OCCL")
    assert alarm.text == "Occlusion"
    assert (alarm.phase, alarm.state, alarm.inactivation_state) == (phase, state, "enabled")
    assert (alarm.alert_type, alarm.priority) == ("ST", None)
    assert alarm.source is not None and alarm.source.refid == "MDC_DEV_PUMP_INFUS_MDS"
    assert alarm.path == ContainmentPath(1, 0, 0, 0, facet=1, depth=5)
    assert alarm.observed_at == at(f"2012-01-09 {when}", -6)
    assert alarm.device is not None
    assert (alarm.device.id, alarm.device.authority) == ("P6013", "0012210000000000")
    assert r.patient is not None and r.patient.primary_id == "HO2009003"


def test_tf_livedata_advisory_with_odd_codes() -> None:
    """Placeholder code 0 and six-digit attribute codes: attributes found by reference id."""
    r = report(ALARM + "ihe-tf-livedata-advisory-undocumented-timeout.hl7")
    alarm = _alarm(r)
    assert (alarm.code.code, alarm.code.refid) == ("0", "MDCX_DOCUMENTATION_ERROR")
    assert alarm.text == "Timeout not documented"
    assert (alarm.alert_type, alarm.priority) == ("SA", "medium")
    assert (alarm.phase, alarm.state) == ("start", "active")
    assert alarm.source is not None and alarm.source.text == "Procedure not documented on time"
    # OBX-14 printed in OBX-13: the time comes from OBR-7.
    assert alarm.observed_at == at("2012-01-09 17:54:26", -6)
    assert alarm.device is None


def test_tf_mindray_low_spo2() -> None:
    """Facets 1-5 of 1.3.1.150456: the SpO2 of 88 is the source metric; OBX-8 L~PM~SP."""
    r = report(ALARM + "ihe-tf-mindray-low-spo2-alarm-start.hl7")
    alarm = _alarm(r)
    assert (alarm.code.code, alarm.code.refid, alarm.text) == ("196670", "MDC_EVT_LO", "Low SpO2")
    assert (alarm.priority, alarm.alert_type, alarm.abnormal_flags) == ("medium", "SP", ("L",))
    assert (alarm.phase, alarm.state, alarm.inactivation_state) == ("start", "active", "enabled")
    assert alarm.path is not None and alarm.path.metric == 150456 and alarm.path.facet == 1
    metric = alarm.source_metric
    assert metric is not None and metric.code.refid == "MDC_PULS_OXIM_SAT_O2"
    assert (metric.value, metric.unit and metric.unit.ucum, metric.reference_range) == (
        88.0,
        "%",
        "90-96",
    )
    assert alarm.source is not None and alarm.source.code == "150456"
    assert alarm.device is not None
    assert (alarm.device.id, alarm.device.scheme, alarm.device.authority) == (
        "F1519EFX",
        "DNS",
        "mindray.com",
    )
    assert metric.device == alarm.device  # the facet inherits the alarm row's identity
    assert r.metric("MDC_PULS_OXIM_SAT_O2") == metric
    assert alarm.observed_at == at("2012-01-11 15:04:57", -6)
    assert r.alarms_with_priority("PM") == (alarm,)
    assert r.sender is not None and r.sender.id == "00A037EB2175780F"


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("draeger-acm-ack-r40-v27-truncation-char.hl7", ""),
        ("draeger-acm-pcd05-ora-r41-delivered.hl7", "PCD-05"),
    ],
)
def test_acknowledgements_are_not_alarm_reports(name: str, profile: str) -> None:
    """ACK^R40 and ORA^R41 carry no alarms and extract to empty reports."""
    r = report(ALARM + name)
    assert r.profile == profile
    assert (r.alarms, r.metrics, r.devices) == ((), (), ())
