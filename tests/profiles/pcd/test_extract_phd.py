"""Extraction of the Continua WAN (personal health device) messages and the PCD edge files."""

from __future__ import annotations

import pytest

from profiles.pcd.codes import convert_glucose, loinc_for
from profiles.pcd.records import ContainmentPath, DeviceReport
from tests.profiles.pcd.helpers import at, only, report

PHD = "phd-glucose/"
MEASURED = at("2009-07-15 07:07:07")


def _common(name: str) -> DeviceReport:
    r = report(PHD + name)
    assert r.profile == "PHD" and r.is_personal_health_device
    assert r.control_id == "MSGID1234"
    assert r.message_time == at("2009-07-13 09:00:30")
    ident = r.device_identity
    assert ident is not None and (ident.id, ident.scheme) == ("0123456789ABCDEF", "EUI-64")
    assert r.sender is not None and r.sender.id == "ACDE48234567ABCD"
    assert r.patient is not None and r.patient.primary_id == "789567"
    return r


def test_glucose_meter() -> None:
    """Capillary glucose 37.5 mg/dL with context; LOINC 2339-0; 2.08 mmol/L."""
    r = _common("continua-wan-glucose-meter.hl7")
    (mds,) = r.devices
    assert (mds.level, mds.code.refid) == ("MDS", "MDC_DEV_SPEC_PROFILE_GLUCOSE")
    glucose = only(r, "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD")
    assert (glucose.code.code, glucose.value) == ("160184", 37.5)
    assert glucose.unit is not None
    assert (glucose.unit.refid, glucose.unit.ucum) == ("MDC_DIM_MILLI_G_PER_DL", "mg/dL")
    assert glucose.observed_at == MEASURED and glucose.time_source == "OBX-14"
    assert glucose.device == r.device_identity
    assert glucose.path == ContainmentPath(1, 0, 0, 1, depth=4)
    assert loinc_for(glucose.code.code, glucose.unit.ucum)[0].code == "2339-0"
    assert convert_glucose(37.5, glucose.unit.ucum, "mmol/L") == pytest.approx(2.0815, abs=1e-4)
    assert only(r, "MDC_CTXT_GLU_EXERCISE").value == 12.5
    active = only(r, "MDC_ATTR_TIME_PD_MSMT_ACTIVE")
    assert (active.value, active.path) == (12.0, ContainmentPath(1, 0, 0, 2, facet=1, depth=5))
    assert only(r, "MDC_CTXT_MEDICATION_RAPIDACTING").unit.ucum == "mg"  # type: ignore[union-attr]
    assert (only(r, "8417768").value, only(r, "8417768").unit.ucum) == (12.0, "g")  # type: ignore[union-attr]
    status = only(r, "MDC_GLU_METER_DEV_STATUS")
    assert status.value == "sensor-strip-insertion(3)"
    assert status.value_code is not None and status.value_code.code == "1"
    assert len(r.metrics) == 6
    assert r.findings == ()


def test_glucose_meter_invalid_variant() -> None:
    """Coded OBX-5 without OBX-2 is kept as written; HbA1c 12.5 %."""
    r = _common("continua-wan-glucose-meter-invalid.hl7")
    location = only(r, "MDC_CTXT_GLU_SAMPLELOCATION")
    assert location.value_type == ""
    assert location.value == "8417848^MDC_CTXT_GLU_SAMPLELOCATION_FINGER^MDC"
    hba1c = only(r, "MDC_CONC_HBA1C")
    assert (hba1c.value, hba1c.unit and hba1c.unit.ucum) == (12.5, "%")
    assert loinc_for("MDC_CONC_HBA1C")[0].code == "4548-4"


def test_bp_monitor() -> None:
    """Time-sync row at 0.0.0.1, the BP triplet, an absolute-time DTM row."""
    r = _common("continua-wan-bp-monitor.hl7")
    sync = only(r, "MDC_TIME_SYNC_PROTOCOL")
    assert sync.value == "MDC_TIME_SYNC_NONE" and sync.path == ContainmentPath(0, 0, 0, 1)
    assert sync.device is None  # MDS 0 is not declared
    values = [(m.code.refid, m.value) for m in r.metrics_named("150021", "150022", "150023")]
    assert values == [
        ("MDC_PRESS_BLD_NONINV_SYS", 120.0),
        ("MDC_PRESS_BLD_NONINV_DIA", 80.0),
        ("MDC_PRESS_BLD_NONINV_MEAN", 100.0),
    ]
    assert only(r, "150021").observed_at == at("2009-08-13 09:57:15")
    clock = only(r, "MDC_ATTR_TIME_ABS")
    assert (clock.value_type, clock.value) == ("DTM", "20091028123702")
    assert clock.observed_at == at("2009-10-28 17:37:02")


def test_pulse_oximeter_with_waveform() -> None:
    """SpO2 80.5 % and a numeric-array pleth wave."""
    r = _common("continua-wan-pulse-oximeter.hl7")
    spo2 = only(r, "MDC_PULS_OXIM_SAT_O2")
    assert (spo2.value, spo2.unit and spo2.unit.ucum) == (80.5, "%")
    pleth = only(r, "MDC_PULS_OXIM_PLETH")
    assert (pleth.value_type, pleth.value) == ("NA", None)
    assert pleth.samples == (12.0, 123.0, 24.0, 12.0, 234.0, 55.0, 66.0, 77.0, 88.0, 99.0)
    assert [c.code for c in loinc_for(spo2.code.code)] == ["59408-5", "2708-6"]


def test_thermometer_in_fahrenheit() -> None:
    """98.6 [degF], kept in the unit sent."""
    r = _common("continua-wan-thermometer-fahrenheit.hl7")
    temp = only(r, "MDC_TEMP_ORAL")
    assert (temp.value, temp.unit and temp.unit.ucum) == (98.6, "[degF]")
    assert temp.observed_at == MEASURED


def test_weight_scale_two_measurement_sets() -> None:
    """Two OBR groups, MDS 1 and MDS 2: two device roots, two of each reading."""
    r = _common("continua-wan-weight-scale-two-obr.hl7")
    assert [(n.level, n.path.mds) for n in r.devices] == [("MDS", 1), ("MDS", 2)]
    weights = r.metrics_named("MDC_MASS_BODY_ACTUAL")
    assert [(str(m.path), m.value, m.unit and m.unit.ucum) for m in weights] == [
        ("1.0.0.2", 80.0, "kg"),
        ("2.0.0.2", 80.0, "kg"),
    ]
    assert weights[0].observed_at == at("2009-08-15 07:07:07")
    assert [m.value for m in r.metrics_named("MDC_LEN_BODY_ACTUAL")] == [180.0, 180.0]
    bmi = r.metrics_named("188752")
    assert [(m.value, m.unit and m.unit.ucum) for m in bmi] == [(24.7, "kg/m2")] * 2


def test_fitness_and_activity() -> None:
    """Imperial units map to UCUM; duplicate OBX-1 set ids are kept as sent."""
    r = _common("continua-wan-strength-fitness.hl7")
    assert (only(r, "MDC_HF_RESISTANCE").unit.ucum, only(r, "MDC_HF_REPETITION").unit.ucum) == (  # type: ignore[union-attr]
        "[lb_av]",
        "[in_i]",
    )
    cardio = _common("continua-wan-cardio-activity-duplicate-setid.hl7")
    assert [m.set_id for m in cardio.metrics].count("3") == 2
    speed = only(cardio, "MDC_HF_SPEED")
    assert (speed.value, speed.unit and speed.unit.ucum) == (500.0, "m/min")


def test_edge_msh10_wrapped_across_lines_still_extracts() -> None:
    """MSH-10 cut by a newline: the control id is what MSH holds; the pump is still read."""
    r = report("edge/bbraun-infusomat-pcd01-msh10-wrapped-across-lines.hl7")
    assert r.control_id == "6390708"
    pump = r.pumps[0]
    assert pump.is_infusing is False
    assert pump.not_delivering_reason == "pump-stopped-powered-off"
    assert r.device_identity is not None and r.device_identity.id == "I51559"
    assert r.patient is not None and r.patient.primary_id == "Unknown Patient"


def test_edge_pid_glued_to_msh_has_no_patient() -> None:
    """PID run into MSH-21: no patient, the device data is still read."""
    r = report("edge/bbraun-perfusor-pcd01-pid-glued-to-msh.hl7")
    assert r.patient is None
    assert r.device_identity is not None and r.device_identity.id == "P52814"
    assert r.pumps[0].delivery_status == "pump-delivery-status-not-delivering"
