"""Extraction of the corpus infusion pump messages (PCD-01, PCD-10, PCD-15)."""

from __future__ import annotations

from profiles.pcd.records import ContainmentPath, PumpChannel, Quantity
from tests.profiles.pcd.helpers import at, only, report

PUMP = "pcd01-pump/"
BBRAUN_PUMP = ("P2449", "EUI-64", "0012210000000000")


def _q(quantity: Quantity | None) -> tuple[float, str | None] | None:
    """A quantity as (value, UCUM) for compact assertions."""
    if quantity is None:
        return None
    return quantity.value, quantity.unit.ucum if quantity.unit else None


def _pump(r_pumps: tuple[PumpChannel, ...]) -> PumpChannel:
    (pump,) = r_pumps
    return pump


def test_bbraun_perfusor_infusing_dobutamine() -> None:
    """Syringe pump PCD-01: every pump field, the OBX-18 identity, the near-completion alert."""
    r = report(PUMP + "bbraun-spaceplus-perfusor-pcd01-infusing-dobutamine.hl7")
    assert r.profile == "PCD-01"
    assert r.control_id == "63788912473382465025"
    assert r.message_time == at("2022-05-23 14:21:13")
    assert r.profile_ids == ("IHE_PCD_001",)
    assert r.patient is not None and r.patient.primary_id == "Unknown Patient"
    assert r.patient.name is None
    ident = r.device_identity
    assert ident is not None and (ident.id, ident.scheme, ident.authority) == BBRAUN_PUMP
    # MSH-3 is the SpaceStation gateway, never the pump.
    assert r.sender is not None and r.sender.id == "0012211839000001"
    assert r.is_infusion_pump and not r.is_monitor

    pump = _pump(r.pumps)
    assert pump.path == ContainmentPath(1, 1)
    assert pump.code is not None and pump.code.refid == "MDC_DEV_PUMP_INFUS_SYRINGE_VMD"
    assert pump.device == ident
    assert pump.label == "Primary"
    assert pump.drug_name == "Dobutamine"
    assert _q(pump.programmed_rate) == (18.0, "mL/h")
    assert _q(pump.current_rate) == (18.0, "mL/h")
    assert pump.dose_rate is None
    assert _q(pump.concentration) == (5.0, "mg/mL")
    assert _q(pump.volume_to_be_infused) == (2.0, "mL")
    assert _q(pump.volume_remaining) == (0.9, "mL")
    assert _q(pump.volume_delivered) == (1.1, "mL")
    assert _q(pump.time_remaining) == (179.0, "s")  # in the unit the pump sent
    assert pump.infusing_status == "pump-status-infusing" and pump.is_infusing is True
    assert pump.delivery_status == "pump-delivery-status-delivering"
    assert pump.not_delivering_reason is None

    (alert,) = r.alarms
    assert (alert.code.code, alert.code.refid) == ("197334", "MDC_EVT_VOL_INFUS_NEAR_COMP")
    assert alert.source is not None and alert.source.text == "1.1.2.0"
    assert alert.location == "OBX[4]" and alert.device == ident

    weight = only(r, "MDC_ATTR_PT_WEIGHT")
    assert (weight.value, weight.unit and weight.unit.ucum) == (100.0, "kg")
    assert weight.observed_at == at("2022-05-23 14:20:39") and weight.time_source == "OBR-7"
    assert only(r, "MDC_ATTR_SYS_ID").value == "ee794b2a-5e04-56b4-91e6-b4d637f1d894"
    assert only(r, "MDC_DOSE_DRUG_DELIV_TOTAL").value == 5520.0
    assert only(r, "MDC_VOL_SYRINGE_ACTUAL").value == 30.95
    assert r.findings == ()


def test_bbraun_pcd10_delivery_start() -> None:
    """PCD-10 event report at the start of an infusion."""
    r = report(PUMP + "bbraun-spaceplus-perfusor-pcd10-delivery-start.hl7")
    assert (r.profile, r.message_type) == ("PCD-10", "ORU^R42")
    assert r.profile_ids == ("IHE_PCD_010",)
    event = only(r, "MDC_ATTR_EVT_COND")
    assert event.value == "MDC_EVT_PUMP_DELIV_START"
    assert event.value_code is not None and event.value_code.code == "197288"
    assert only(r, "MDC_ATTR_EVT_SOURCE").value == "1.1.2.0"
    pump = _pump(r.pumps)
    assert pump.is_infusing is True
    assert _q(pump.current_rate) == (18.0, "mL/h")
    assert _q(pump.volume_remaining) == (2.0, "mL")
    assert _q(pump.volume_delivered) == (0.0, "mL")
    assert _q(pump.time_remaining) == (400.0, "s")
    assert r.alarms == ()
    assert r.device_identity is not None and r.device_identity.id == "P2449"


def test_bbraun_pcd10_delivery_complete() -> None:
    """PCD-10 at the end: not infusing, stopped alarming, everything delivered."""
    r = report(PUMP + "bbraun-spaceplus-perfusor-pcd10-delivery-complete.hl7")
    assert r.profile == "PCD-10"
    assert only(r, "MDC_ATTR_EVT_COND").value == "MDC_EVT_PUMP_DELIV_COMP"
    pump = _pump(r.pumps)
    assert pump.infusing_status == "pump-status-not-infusing" and pump.is_infusing is False
    assert pump.delivery_status == "pump-delivery-status-not-delivering"
    assert pump.not_delivering_reason == "pump-stopped-alarming"
    assert _q(pump.current_rate) == (0.0, "mL/h")
    assert _q(pump.programmed_rate) == (18.0, "mL/h")
    assert _q(pump.volume_delivered) == (2.0, "mL")
    assert _q(pump.time_remaining) == (0.0, "s")
    assert only(r, "MDC_VOL_FLUID_DELIV_SEGMENT").value == 2.0
    assert r.message_time == at("2022-05-23 14:24:10")


def test_bbraun_pcd15_on_battery() -> None:
    """PCD-15 device management: no pump channel, battery and wireless metrics."""
    r = report(PUMP + "bbraun-spaceplus-perfusor-pcd15-on-battery.hl7")
    assert r.profile == "PCD-15" and r.profile_ids == ("IHE_PCD_015",)
    assert r.pumps == () and r.is_infusion_pump
    assert only(r, "MDC_ATTR_POWER_STAT").value == "onBattery(1)"
    source = r.metrics_named("MDCX_DMC_ATTR_POWER_SOURCE")[0]
    assert source.value == "OnBattery" and source.value_code is not None
    assert source.value_code.code == "1"
    battery = only(r, "67976")
    assert (battery.value, battery.unit and battery.unit.ucum) == (672.0, "min")
    charge = only(r, "MDC_ATTR_VAL_BATT_CHARGE")
    assert (charge.value, charge.unit and charge.unit.ucum) == (100.0, "%")
    capacity = only(r, "MDC_ATTR_CAPAC_BATT_FULL")
    assert (capacity.value, capacity.unit and capacity.unit.ucum) == (1928.0, "mA.h")
    rate = only(r, "MDC_NCC_WIRELESS_TXRATE")
    assert (rate.value, rate.unit and rate.unit.ucum) == (0.0, "Mbit/s")
    assert only(r, "MDC_NCC_WIRELESS_MAC").value == "c0:ee:40:0d:16:8f"
    assert [n.code.refid for n in r.nodes()] == [
        "MDC_DEV_PUMP_INFUS_SYRINGE_MDS",
        "MDC_DEV_PUMP_INFUS_SYRINGE_VMD",
        "MDC_MOC_NCC_WIRELESS",
        "MDC_MOC_BATTERY",
    ]
    assert r.findings == ()


def test_bbraun_pcd15_on_mains() -> None:
    """The SSID keeps its leading space, as sent."""
    r = report(PUMP + "bbraun-spaceplus-perfusor-pcd15-on-mains.hl7")
    assert only(r, "MDC_ATTR_POWER_STAT").value == "onMains(0)"
    assert only(r, "MDC_NCC_WIRELESS_SSID").value == " BBraunPumps"
    assert only(r, "MDC_ATTR_TIME_BATT_REMAIN").value == 700.0
    assert only(r, "MDC_ATTR_VAL_BATT_CHARGE").value == 99.0
    assert r.metric("MDC_ATTR_BATT_STAT") is None


def test_ipec_pcd10_delivery_start_with_pending_codes() -> None:
    """IPEC sample: codes printed as 0 (pending) are found by reference id; dose rate."""
    r = report(PUMP + "ihe-ipec-pcd10-pump-delivery-start-event.hl7")
    assert r.profile == "PCD-10"
    assert r.control_id == "6358051206735492253"
    assert r.message_time == at("2015-10-15 13:21:07", -5)
    assert r.patient is not None
    assert [(i.value, i.authority, i.type_code) for i in r.patient.identifiers] == [
        ("HO2009002", "IHE", "PI")
    ]
    ident = r.device_identity
    assert ident is not None and (ident.id, ident.authority) == ("E0002", "0012210000000000")
    pump = _pump(r.pumps)
    assert pump.code is not None and pump.code.refid == "MDC_DEV_PUMP_INFUS_LVP_VMD"
    assert _q(pump.programmed_rate) == (15.4, "mL/h")
    assert _q(pump.current_rate) == (15.4, "mL/h")
    assert _q(pump.dose_rate) == (5.0, "ug/kg/min")
    assert pump.dose_rate is not None and pump.dose_rate.raw == "5.00"
    assert pump.drug_name == "Dopamine"
    assert _q(pump.concentration) == (1.6, "mg/mL")
    assert _q(pump.volume_to_be_infused) == (250.0, "mL")
    assert _q(pump.volume_remaining) == (250.0, "mL")
    assert _q(pump.volume_delivered) == (0.0, "mL")
    assert _q(pump.time_remaining) == (974.0, "min")
    assert pump.label == "Primary"
    assert pump.delivery_status == "pump-delivery-status-delivering"
    assert r.metric("0") is None  # a pending code names nothing
    current = only(r, "MDC_FLOW_FLUID_PUMP_CURRENT")
    assert current.code.code == "0"
    assert current.observed_at == at("2015-10-15 13:21:06", -5)
    assert only(r, "MDC_ATTR_PT_WEIGHT").value == 82.0
