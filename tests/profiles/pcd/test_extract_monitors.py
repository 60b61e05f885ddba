"""Extraction of the corpus PCD-01 monitor messages: every value as the message states it."""

from __future__ import annotations

from zoneinfo import ZoneInfo

from profiles.pcd.records import ContainmentPath
from tests.profiles.pcd.helpers import at, only, report

MON = "pcd01-monitor/"


def test_acme_gateway_episodic_nibp() -> None:
    """UCUM units given in OBX-6, OBX-14 per metric, OBX-18 on each metric row."""
    r = report(MON + "ihe-tf-acme-gateway-nibp-episodic.hl7")
    assert r.profile == "PCD-01"
    assert r.control_id == "0104ef190d604db188c3"
    assert r.message_type == "ORU^R01"
    assert r.message_time == at("2011-06-02 05:00:00")
    assert r.profile_ids == ("PCD_DEC_001",)
    assert r.sender is not None and r.sender.id == "080019FFFE3ED02D"
    assert r.sender.scheme == "EUI-64" and r.sender.source == "MSH-3"
    assert r.patient is not None
    assert [(i.value, i.authority, i.type_code) for i in r.patient.identifiers] == [
        ("12345", "A", "MR")
    ]
    assert [(n.level, n.path.dotted(), n.code.code) for n in r.nodes()] == [
        ("MDS", "1.0.0.0", "69965"),
        ("VMD", "1.16.0.0", "70686"),
        ("CHAN", "1.16.1.0", "70687"),
    ]
    expected = [
        ("150021", "MDC_PRESS_BLD_NONINV_SYS", "1.16.1.1", 111.0, "mm[Hg]"),
        ("150022", "MDC_PRESS_BLD_NONINV_DIA", "1.16.1.2", 60.0, "mm[Hg]"),
        ("150023", "MDC_PRESS_BLD_NONINV_MEAN", "1.16.1.3", 80.0, "mm[Hg]"),
        ("149546", "MDC_PULS_RATE_NON_INV", "1.16.1.4", 63.0, "{beat}/min"),
    ]
    got = [
        (m.code.code, m.code.refid, str(m.path), m.value, m.unit.ucum if m.unit else None)
        for m in r.metrics
    ]
    assert got == expected
    for metric in r.metrics:
        assert metric.value_type == "NM" and metric.status == "R"
        # OBX-14 has no offset: read in the offset MSH-7 states (+0000).
        assert metric.observed_at == at("2011-06-02 04:58:42")
        assert metric.time_source == "OBX-14"
        assert metric.unit is not None and metric.unit.system == "UCUM"
        assert metric.device is not None
        assert metric.device.id == "080019FFFE3ED02D172.16.172.135"
        assert metric.device.name == "GATEWAY_ACME"
    assert r.is_monitor and not r.is_infusion_pump
    assert r.findings == ()


def test_philips_multiparameter_monitor() -> None:
    """Full MDS.VMD.CHAN.METRIC tree; OBX-18 on the MDS and VMDs; OBX-7 ranges; OBX-11 X."""
    r = report(MON + "ihe-tf-philips-multiparam-monitor.hl7")
    assert r.profile == "PCD-01"
    assert r.control_id == "HP0122182658686QQ000CND119C0WS61"
    assert r.message_time == at("2015-01-22 18:26:58")
    assert r.patient is not None and r.patient.primary_id == "HO2009001"
    assert r.patient.identifiers[0].type_code == "MR"
    assert r.patient.name == "Hon^Albert"
    # MSH-3 has no id, only a name: a sender, never the device identity.
    assert r.sender is not None and r.sender.id == "PAT_DEVICE_PHILIPS_C"
    assert r.sender.scheme == "local"
    ident = r.device_identity
    assert ident is not None and ident.id == "e86c094f-f751-4acf-92b2-38f11c1f6f57-Device"
    (mds,) = r.devices
    assert mds.level == "MDS" and mds.code.refid == "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS"
    assert [(v.code.refid, [c.code.refid for c in v.children]) for v in mds.children] == [
        ("MDC_DEV_PRESS_BLD_NONINV_VMD", ["MDC_DEV_PULS_CHAN"]),
        ("MDC_DEV_ECG_VMD", ["MDC_DEV_ECG_CHAN"]),
        ("MDC_DEV_ANALY_SAT_O2_VMD", ["MDC_DEV_ANALY_PERF_REL_CHAN"]),
    ]
    assert all(v.identity is not None and v.identity.id == "0600dc750001" for v in mds.children)

    sys = only(r, "MDC_PRESS_BLD_NONINV_SYS")
    assert (sys.value, sys.unit and sys.unit.ucum, sys.reference_range) == (
        117.0,
        "mm[Hg]",
        "90-160",
    )
    assert sys.unit is not None and (sys.unit.code, sys.unit.refid) == ("266016", "MDC_DIM_MMHG")
    assert sys.observed_at == at("2015-01-22 11:50:00") and sys.time_source == "OBX-14"
    assert sys.path == ContainmentPath(1, 1, 1, 5)
    assert only(r, "150022").value == 82.0
    assert only(r, "150023").value == 90.0

    hr = only(r, "147842")
    assert hr.code.refid == "MDC_ECG_CARD_BEAT_RATE"
    assert (hr.value, hr.unit and hr.unit.ucum, hr.reference_range) == (80.0, "/min", "50-120")
    # No OBX-14: OBR-7, read in MSH-7's offset.
    assert hr.observed_at == at("2015-01-22 18:26:56") and hr.time_source == "OBR-7"
    assert (only(r, "MDC_ECG_TIME_PD_QT_GL").value, only(r, "147236").reference_range) == (
        360.0,
        "<500",
    )
    assert only(r, "MDC_RESP_RATE").value == 30.0
    rhythm = only(r, "MDC_ECG_STAT_RHY")
    assert (rhythm.value_type, rhythm.value) == ("ST", "MDC_ECG_SINUS_RHY")
    spo2 = only(r, "MDC_PULS_OXIM_SAT_O2")
    assert (spo2.value, spo2.unit and spo2.unit.ucum, spo2.reference_range) == (99.0, "%", "90-100")
    assert spo2.device is not None and spo2.device.id == "0600dc750001"
    perf = only(r, "150448")
    assert (perf.value, perf.unit and perf.unit.ucum) == (3.9, "1")
    assert {m.status for m in r.metrics} == {"X"}
    assert len(r.metrics) == 10
    assert r.is_monitor
    assert r.findings == ()


def test_ipf_minimal_bp_from_a_personal_health_device() -> None:
    """OBX-4 '1' / '1.0.1' / '1.0.1.x'; MDS OBX-18 inherited; CRLF segments."""
    r = report(MON + "ipf-acme-bp-pcd01-minimal.hl7")
    # ORU^R01 from an application hosting device with an MDC_DEV_SPEC_PROFILE_BP MDS.
    assert r.profile == "PHD" and r.is_personal_health_device
    assert r.control_id == "MSGID1234"
    assert r.message_time == at("2009-07-13 09:00:30", 5)
    assert r.profile_ids == ("IHE PCD ORU-R01 2006",)
    assert r.patient is not None
    assert [(i.value, i.authority, i.type_code) for i in r.patient.identifiers] == [
        ("789567", "Imaginary Hospital", "PI")
    ]
    ident = r.device_identity
    assert ident is not None and (ident.id, ident.scheme) == ("0123456789ABCDEF", "EUI-64")
    assert ident.eui64 == "0123456789ABCDEF"
    assert [(n.level, n.path.dotted(), n.path.depth) for n in r.nodes()] == [
        ("MDS", "1.0.0.0", 1),
        ("CHAN", "1.0.1.0", 3),
    ]
    values = [(m.code.refid, m.value, m.unit and m.unit.ucum) for m in r.metrics]
    assert values == [
        ("MDC_PRESS_BLD_NONINV_SYS", 120.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_NONINV_DIA", 80.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_NONINV_MEAN", 100.0, "mm[Hg]"),
    ]
    for metric in r.metrics:
        assert metric.observed_at == at("2009-08-13 09:57:15", 5)
        assert metric.time_source == "OBR-7"
        assert metric.device == ident
    assert r.findings == ()


def test_ipf_maximum_all_fields() -> None:
    """Two OBR groups, NTEs between OBX, OBX-8 repeated, OBX-11 C/D/F/S/U/X, OBX-18 repeated."""
    r = report(MON + "ipf-acme-bp-maximum-all-fields.hl7")
    assert r.patient is not None
    assert r.patient.identifiers[0].value == "111222333444"
    assert r.patient.identifiers[0].authority == "Imaginary Hospital"
    first = r.metrics[0]
    # OBX-1 carries a value at the MDS level: kept as a metric, its unit not UCUM.
    assert (first.location, first.value, first.abnormal_flags) == ("OBX[1]", 80.0, ("TEST",))
    assert first.unit is not None and (first.unit.code, first.unit.ucum) == ("mmHg", None)
    assert first.reference_range == "75 - 90"
    assert first.observed_at == at("2009-08-13 09:57:25", 5)
    sys = r.metrics_named("MDC_PRESS_BLD_NONINV_SYS")
    assert [(m.value, m.status, m.abnormal_flags) for m in sys] == [
        (140.0, "C", ("QUES",)),
        (120.0, "S", ()),
        (80.0, "U", ()),
    ]
    assert sys[0].device is not None
    assert (sys[0].device.id, sys[0].device.authority) == ("1305815835", "0123456789ABCDEF")
    dia = only(r, "MDC_PRESS_BLD_NONINV_DIA")
    assert (dia.value, dia.status, dia.abnormal_flags) == (70.0, "D", ("EARLY", "QUES"))
    assert [m.status for m in r.metrics_named("MDC_PRESS_BLD_NONINV_MEAN")] == ["F", "X"]
    # The second group's misprinted codes are kept as written.
    assert r.metrics_named("1500212")[0].code.refid == "MDC_PRESS_BLD_NONINV_SYS"
    assert len(r.metrics) == 8
    # The second group declares the channel again with a different (misprinted) code.
    assert [(f.location, f.code) for f in r.findings] == [("OBX[7]-4", 205)]


def test_awaregateway_times_without_offsets() -> None:
    """No offset anywhere: times stay unset with one warning, or take the channel's zone."""
    name = MON + "ipf-awaregateway-icu-invasive-pressures.hl7"
    r = report(name)
    assert r.message_time is None
    assert all(m.observed_at is None for m in r.metrics)
    (finding,) = r.findings
    assert (finding.severity, finding.location, finding.code) == ("warning", "MSH-7", 102)
    assert r.device_identity is None  # no OBX-18; MSH-3 alone never names the device
    assert r.sender is not None and r.sender.id == "080019FFFF4F6AC0"
    assert r.is_monitor

    zoned = report(name, default_tz=ZoneInfo("America/New_York"))
    assert zoned.findings == ()
    assert zoned.message_time is not None
    assert zoned.message_time.isoformat() == "2008-12-11T14:45:00-05:00"
    expected = [
        ("MDC_ECG_HEART_RATE", "1.6.1.1", 60.0, "/min"),
        ("MDC_ECG_V_P_C_CNT", "1.6.1.2", 0.0, "/min"),
        ("MDC_PRESS_BLD_ART_MEAN", "1.3.1.1", 92.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_ART_SYS", "1.3.1.2", 120.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_ART_DIA", "1.3.1.3", 80.0, "mm[Hg]"),
        ("MDC_BLD_PULS_RATE_INV", "1.2.1.1", 60.0, "/min"),
        ("MDC_PRESS_BLD_ART_PULM_MEAN", "1.4.2.1", 14.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_ART_PULM_SYS", "1.4.2.2", 25.0, "mm[Hg]"),
        ("MDC_PRESS_BLD_ART_PULM_DIA", "1.4.2.3", 10.0, "mm[Hg]"),
    ]
    got = [(m.code.refid, str(m.path), m.value, m.unit and m.unit.ucum) for m in zoned.metrics]
    assert got == expected
    for metric in zoned.metrics:
        assert metric.observed_at is not None
        assert metric.observed_at.isoformat() == "2008-12-11T14:45:00-05:00"
        assert metric.time_source == "OBR-7"
