"""PCD records → a FHIR R4 transaction Bundle, on records built by hand.

Every Bundle a test produces is also validated, resource by resource, with the
fhir.resources R4B models.
"""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from urllib.parse import parse_qsl

import pytest
from pydantic import ValidationError

from profiles.fhir import MappingOptions, NothingToMap, systems, transaction_bundle
from profiles.fhir.observations import STATUS
from profiles.pcd.records import (
    Code,
    ContainmentPath,
    DeviceIdentity,
    DeviceNode,
    DeviceReport,
    Metric,
    PatientIdentifier,
    PatientRef,
    Unit,
)
from tests.profiles.fhir.fhir_models import validate_bundle, validate_resource

MONITOR = DeviceIdentity("0009FBFFFFA0F4CA", "EUI-64", "ACME")
WHEN = datetime(2026, 3, 1, 12, 30, 5, tzinfo=timezone(timedelta(hours=1)))
SPO2 = Code("150456", "MDC_PULS_OXIM_SAT_O2", "MDC")
PULSE = Code("149530", "MDC_PULS_OXIM_PULS_RATE", "MDC")
PERCENT = Unit("262688", "MDC_DIM_PERCENT", "MDC", "%")
PER_MIN = Unit("264864", "MDC_DIM_BEAT_PER_MIN", "MDC", "/min")


def path(text: str) -> ContainmentPath:
    parsed = ContainmentPath.parse(text)
    assert parsed is not None
    return parsed


def tree(identity: DeviceIdentity | None = MONITOR) -> tuple[DeviceNode, ...]:
    chan = DeviceNode("CHAN", path("1.3.1.0"), Code("70771", "MDC_DEV_ANALY_PERF_REL_CHAN",
                                                       "MDC"), identity)
    vmd = DeviceNode("VMD", path("1.3.0.0"), Code("69642", "MDC_DEV_ANALY_SAT_O2_VMD", "MDC"),
                     identity, (chan,))
    mds = DeviceNode("MDS", path("1.0.0.0"),
                     Code("69965", "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS", "MDC"), identity, (vmd,))
    return (mds,)


def metric(code: Code = SPO2, value: float | str | None = 97.0, **overrides: Any) -> Metric:
    fields: dict[str, Any] = {
        "set_id": "16", "path": path("1.3.1.1"), "code": code, "value_type": "NM",
        "value": value, "raw_value": str(value if value is not None else "").removesuffix(".0"),
        "unit": PERCENT, "observed_at": WHEN, "status": "R", "device": MONITOR,
    }
    fields.update(overrides)
    return Metric(**fields)


def report(*metrics: Metric, **overrides: Any) -> DeviceReport:
    fields: dict[str, Any] = {
        "profile": "PCD-01", "control_id": "MSG1", "message_type": "ORU^R01",
        "patient": PatientRef((PatientIdentifier("HO2009001", "1.3.6.1.4.1.99", "MR"),)),
        "devices": tree(), "metrics": metrics or (metric(),),
    }
    fields.update(overrides)
    return DeviceReport(**fields)


def resources(bundle: dict[str, Any], kind: str) -> list[dict[str, Any]]:
    return [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == kind]


def mapped(rep: DeviceReport, options: MappingOptions | None = None) -> dict[str, Any]:
    bundle = transaction_bundle(rep, options)
    validate_bundle(bundle)
    return bundle


def test_device_tree_becomes_devices_linked_to_their_parents() -> None:
    """MDS, VMD and channel are Devices; the MDS by its EUI-64, parts by their place."""
    bundle = mapped(report())
    mds, vmd, chan = resources(bundle, "Device")
    assert mds["identifier"] == [{"system": systems.EUI64, "value": "00-09-FB-FF-FF-A0-F4-CA"}]
    assert mds["type"] == {"coding": [{"system": systems.MDC, "code": "69965",
                                       "display": "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS"}]}
    assert "parent" not in mds
    assert vmd["identifier"] == [
        {"system": systems.DEVICE, "value": "EUI-64:0009FBFFFFA0F4CA/1.3"}]
    assert chan["identifier"] == [
        {"system": systems.DEVICE, "value": "EUI-64:0009FBFFFFA0F4CA/1.3.1"}]
    urls = {e["resource"]["identifier"][0]["value"]: e["fullUrl"] for e in bundle["entry"]}
    assert vmd["parent"] == {"reference": urls["00-09-FB-FF-FF-A0-F4-CA"]}
    assert chan["parent"] == {"reference": urls["EUI-64:0009FBFFFFA0F4CA/1.3"]}


def test_observation_has_codes_value_time_subject_and_device() -> None:
    """MDC plus LOINC, vital-signs category, UCUM quantity, time with offset, references."""
    bundle = mapped(report())
    (obs,) = resources(bundle, "Observation")
    assert obs["status"] == "final"
    assert obs["code"]["coding"][0] == {
        "system": "urn:iso:std:iso:11073:10101", "code": "150456",
        "display": "MDC_PULS_OXIM_SAT_O2"}
    assert {"system": "http://loinc.org", "code": "2708-6"} in [
        {k: c[k] for k in ("system", "code")} for c in obs["code"]["coding"]]
    assert obs["category"][0]["coding"][0]["code"] == "vital-signs"
    assert obs["valueQuantity"] == {"value": 97, "unit": "%",
                                    "system": "http://unitsofmeasure.org", "code": "%"}
    assert obs["effectiveDateTime"] == "2026-03-01T12:30:05+01:00"
    assert obs["subject"] == {"type": "Patient", "identifier": {
        "system": "urn:oid:1.3.6.1.4.1.99", "value": "HO2009001"}}
    chan_url = next(e["fullUrl"] for e in bundle["entry"]
                    if e["resource"]["identifier"][0]["value"].endswith("/1.3.1"))
    assert obs["device"] == {"reference": chan_url}


def test_every_entry_is_a_conditional_create_on_its_identifier() -> None:
    """POST with ifNoneExist naming exactly the resource's first identifier."""
    bundle = mapped(report(metric(), metric(PULSE, 61.0, path=path("1.3.1.2"), unit=PER_MIN)))
    assert bundle["type"] == "transaction"
    for entry in bundle["entry"]:
        request = entry["request"]
        assert (request["method"], request["url"]) == ("POST", entry["resource"]["resourceType"])
        ((name, token),) = parse_qsl(request["ifNoneExist"])
        first = entry["resource"]["identifier"][0]
        assert (name, token) == ("identifier", f"{first['system']}|{first['value']}")
        assert entry["fullUrl"].startswith("urn:uuid:")


def test_same_report_gives_the_same_bundle() -> None:
    """The mapping is pure: identifiers and fullUrls repeat exactly."""
    assert transaction_bundle(report()) == transaction_bundle(report())


def test_observation_identifier_depends_on_device_path_code_and_instant() -> None:
    """Another time, path, code or device is another reading; the same instant is not."""
    def identity(m: Metric) -> str:
        (obs,) = resources(transaction_bundle(report(m)), "Observation")
        return obs["identifier"][0]["value"]

    base = identity(metric())
    assert identity(metric(observed_at=WHEN.astimezone(UTC))) == base
    assert identity(metric(value=98.0)) == base
    other_device = DeviceIdentity("0009FBFFFFA0F4CB", "EUI-64")
    for changed in (metric(observed_at=WHEN + timedelta(seconds=1)),
                    metric(path=path("1.3.1.9")), metric(code=PULSE),
                    metric(device=other_device)):
        assert identity(changed) != base


def test_the_same_reading_twice_in_one_message_is_one_observation() -> None:
    """A repeated row cannot be told apart on a resend, so it is sent once."""
    bundle = mapped(report(metric(), metric(set_id="17")))
    assert len(resources(bundle, "Observation")) == 1


@pytest.mark.parametrize(("obx11", "status"), [
    ("F", "final"), ("R", "final"), ("C", "corrected"), ("A", "amended"),
    ("P", "preliminary"), ("X", "cancelled"), ("D", "entered-in-error"), ("", "unknown"),
    ("Q", "unknown")])
def test_obx11_maps_to_observation_status(obx11: str, status: str) -> None:
    """HL7 table 0085 to FHIR as the v2-to-FHIR map has it; R (device data) is final."""
    (obs,) = resources(mapped(report(metric(status=obx11))), "Observation")
    assert obs["status"] == status


def test_every_status_in_the_table_is_a_valid_fhir_status() -> None:
    """Only codes of the R4 ObservationStatus value set (the R4B models do not check it)."""
    r4_codes = {"registered", "preliminary", "final", "amended", "corrected", "cancelled",
                "entered-in-error", "unknown"}
    assert set(STATUS.values()) <= r4_codes


def test_values_of_every_kind() -> None:
    """Coded, text, unreadable and missing values; a number without a UCUM unit."""
    rhythm = Code("184327", "MDC_ECG_STAT_RHY", "MDC")
    sinus = Code("", "MDC_ECG_SINUS_RHY", "MDC")
    rows = (
        metric(rhythm, "MDC_ECG_SINUS_RHY", value_type="CWE", value_code=sinus, unit=None,
               path=path("1.2.1.21")),
        metric(Code("", "MDC_DRUG_NAME", "MDC"), "Dobutamine", value_type="ST", unit=None,
               path=path("1.2.1.22")),
        metric(value=None, raw_value="n/a", path=path("1.2.1.23")),
        metric(value=None, raw_value="", status="X", path=path("1.2.1.24")),
        metric(value=3.9, raw_value="3.90", unit=Unit("1", "MDC_DIM_X", "MDC"),
               path=path("1.2.1.25")),
    )
    coded, text, unreadable, absent, number = resources(mapped(report(*rows)), "Observation")
    assert coded["valueCodeableConcept"] == {"text": "MDC_ECG_SINUS_RHY"}
    assert text["code"] == {"text": "MDC_DRUG_NAME"}
    assert text["valueString"] == "Dobutamine"
    assert unreadable["valueString"] == "n/a"
    assert absent["status"] == "cancelled"
    assert absent["dataAbsentReason"]["coding"][0]["code"] == "unknown"
    assert "valueQuantity" not in absent
    assert number["valueQuantity"] == {"value": 3.9, "unit": "MDC_DIM_X"}


def test_reference_ranges_and_flags() -> None:
    """OBX-7 ``90-160`` and ``<500`` as low/high in the value's unit; OBX-8 as interpretation."""
    rows = (metric(reference_range="90 - 100", abnormal_flags=("L", "QUES")),
            metric(reference_range="<500", path=path("1.3.1.2")),
            metric(reference_range="normal", path=path("1.3.1.3")))
    span, bound, text = resources(mapped(report(*rows)), "Observation")
    ucum = {"unit": "%", "system": systems.UCUM, "code": "%"}
    assert span["referenceRange"] == [{"low": {"value": 90, **ucum},
                                       "high": {"value": 100, **ucum}}]
    assert span["interpretation"] == [{"coding": [{"system": systems.INTERPRETATION,
                                                   "code": "L"}]}]
    assert bound["referenceRange"] == [{"high": {"value": 500, **ucum}}]
    assert text["referenceRange"] == [{"text": "normal"}]


def test_subject_options() -> None:
    """Identifier-only by default; a conditional reference or none when asked."""
    conditional = mapped(report(), MappingOptions(subject="conditional",
                                                 patient_system="urn:oid:2.16.1"))
    (obs,) = resources(conditional, "Observation")
    assert obs["subject"] == {"reference": "Patient?identifier=urn:oid:2.16.1|HO2009001"}
    (obs,) = resources(mapped(report(), MappingOptions(subject="none")), "Observation")
    assert "subject" not in obs
    named = report(patient=PatientRef((PatientIdentifier("789567", "Imaginary Hospital"),)))
    (obs,) = resources(mapped(named), "Observation")
    assert obs["subject"]["identifier"]["system"] == (
        "urn:interlink:patient-id:Imaginary%20Hospital")
    (obs,) = resources(mapped(report(patient=PatientRef(()))), "Observation")
    assert "subject" not in obs


def test_metric_with_a_device_of_its_own_gets_its_own_device() -> None:
    """An OBX-18 that differs from the tree's identity is a separate Device."""
    probe = DeviceIdentity("probe-7", "local")
    bundle = mapped(report(metric(device=probe)))
    devices = resources(bundle, "Device")
    assert devices[-1]["identifier"] == [{"system": systems.DEVICE, "value": "local:probe-7"}]
    (obs,) = resources(bundle, "Observation")
    assert obs["device"]["reference"] == bundle["entry"][len(devices) - 1]["fullUrl"]


def test_without_any_device_identity_there_is_no_device_and_the_sender_tells_readings_apart(
) -> None:
    """No OBX-18 anywhere: no Device; the MSH-3 sender keeps two gateways' readings apart."""
    anonymous = report(metric(device=None), devices=tree(None),
                       sender=DeviceIdentity("080019FFFF4F6AC0", "EUI-64"))
    bundle = mapped(anonymous)
    assert resources(bundle, "Device") == []
    (obs,) = resources(bundle, "Observation")
    assert "device" not in obs
    other = dataclasses.replace(anonymous, sender=DeviceIdentity("080019FFFF4F6AC1", "EUI-64"))
    (other_obs,) = resources(transaction_bundle(other), "Observation")
    assert other_obs["identifier"] != obs["identifier"]


def test_odd_characters_in_a_local_id_are_escaped_in_the_search() -> None:
    """``|``, ``,`` and ``$`` are escaped, then percent-encoded; the value reads back."""
    odd = DeviceIdentity("bed 4|a,b$c", "local")
    bundle = mapped(report(metric(device=odd), devices=()))
    (device,) = resources(bundle, "Device")
    query = bundle["entry"][0]["request"]["ifNoneExist"]
    ((_, token),) = parse_qsl(query)
    assert token == f"{systems.DEVICE}|local:bed 4\\|a\\,b\\$c"
    assert device["identifier"][0]["value"] == "local:bed 4|a,b$c"


def test_pending_and_foreign_codes_keep_their_text() -> None:
    """A pending MDC code (0) or a local code is not written as an MDC coding."""
    pending = metric(Code("0", "MDC_EVT_PUMP_DELIV_START", "MDC"), path=path("1.1.1.9"))
    local = metric(Code("99X", "", "L", "Local thing"), path=path("1.1.1.8"))
    first, second = resources(mapped(report(pending, local)), "Observation")
    assert first["code"] == {"text": "MDC_EVT_PUMP_DELIV_START"}
    assert second["code"] == {"text": "Local thing"}


def test_report_without_metrics_is_refused_with_a_clear_reason() -> None:
    """Nothing to map is an error naming the profile, not an empty Bundle."""
    with pytest.raises(NothingToMap, match=r"no device observations to map \(PCD-04\)"):
        transaction_bundle(report(profile="PCD-04", metrics=()))


def test_validation_catches_a_broken_resource() -> None:
    """The check itself can fail: a missing code, a bad time, an unknown element."""
    good = {"resourceType": "Observation", "status": "final", "code": {"text": "x"}}
    validate_resource(good)
    for broken in ({k: v for k, v in good.items() if k != "code"},
                   {**good, "effectiveDateTime": "2026-13-01T00:00:00Z"},
                   {**good, "valueQuantity": {"value": "ninety"}},
                   {**good, "device": "Device/1"},
                   {**good, "effective": "2026"}):
        with pytest.raises(ValidationError):
            validate_resource(broken)


def test_parts_sharing_an_identity_stay_apart_and_a_module_keeps_its_eui64() -> None:
    """Two VMDs with one OBX-18 are two Devices; a VMD with its own EUI-64 carries it too."""
    shared = DeviceIdentity("0600dc750001", "local")
    module = DeviceIdentity("00A0B0FFFE000001", "EUI-64")
    vmds = (DeviceNode("VMD", path("1.1.0.0"), Code("70686", "MDC_DEV_PRESS_BLD_NONINV_VMD",
                                                      "MDC"), shared),
            DeviceNode("VMD", path("1.2.0.0"), Code("4262", "MDC_DEV_ECG_VMD", "MDC"), shared),
            DeviceNode("VMD", path("1.3.0.0"), Code("69642", "MDC_DEV_ANALY_SAT_O2_VMD", "MDC"),
                       module))
    mds = DeviceNode("MDS", path("1.0.0.0"), Code("69965", "", "MDC"), MONITOR, vmds)
    devices = resources(mapped(report(devices=(mds,))), "Device")
    assert [d["identifier"] for d in devices[1:]] == [
        [{"system": systems.DEVICE, "value": "local:0600dc750001/1.1"}],
        [{"system": systems.DEVICE, "value": "local:0600dc750001/1.2"}],
        [{"system": systems.DEVICE, "value": "EUI-64:00A0B0FFFE000001/1.3"},
         {"system": systems.EUI64, "value": "00-A0-B0-FF-FE-00-00-01"}]]
