"""One Observation per metric: MDC code (plus LOINC where known), UCUM value, time, device.

Each Observation carries an identifier that is a pure function of what makes a reading
that reading: the device, its place in the containment tree (OBX-4), its code and its
observation time. A resent message therefore yields the same identifiers, and a server
asked to create it only if none exists (``If-None-Exist``) creates nothing new.
"""

from __future__ import annotations

import hashlib
import re
from datetime import UTC
from typing import Any

from profiles.fhir import systems
from profiles.pcd import codes
from profiles.pcd.records import Code, Metric, Unit

# OBX-11 (HL7 table 0085) → Observation.status, after the HL7 v2-to-FHIR concept map.
# Device data usually comes as R (not verified by a person): a reading is complete as
# sent, so R counts as final, as do B, U and V.
STATUS: dict[str, str] = {
    "F": "final", "R": "final", "B": "final", "U": "final", "V": "final",
    "C": "corrected", "A": "amended", "P": "preliminary", "S": "preliminary",
    "I": "registered", "X": "cancelled", "D": "entered-in-error", "W": "entered-in-error",
    "N": "cancelled",
}
UNKNOWN_STATUS = "unknown"
"""OBX-11 empty or not in table 0085."""

INTERPRETATIONS = frozenset({"L", "H", "LL", "HH", "N", "A", "AA"})
"""OBX-8 flags that are v3 ObservationInterpretation codes as written."""

_CODED_TYPES = frozenset({"CWE", "CE", "CNE", "CF"})
_RANGE = re.compile(r"\s*(-?\d+(?:\.\d+)?)\s*-\s*(-?\d+(?:\.\d+)?)\s*")
_BOUND = re.compile(r"\s*([<>])=?\s*(-?\d+(?:\.\d+)?)\s*")


def observation_identity(metric: Metric, device: str) -> str:
    """The reading's identifier value: SHA-256 of device | OBX-4 path | code | time (UTC)."""
    path = metric.path.dotted() if metric.path is not None else f"OBX-1:{metric.set_id}"
    code = f"{metric.code.code}^{metric.code.refid}^{metric.code.system}"
    when = metric.observed_at.astimezone(UTC).isoformat() if metric.observed_at else ""
    return hashlib.sha256("|".join((device, path, code, when)).encode()).hexdigest()


def observation(
    metric: Metric,
    *,
    identity: str,
    device_url: str | None,
    subject: dict[str, Any] | None,
) -> dict[str, Any]:
    """The Observation for one metric (a FHIR R4 JSON dict)."""
    resource: dict[str, Any] = {
        "resourceType": "Observation",
        "identifier": [{"system": systems.OBSERVATION, "value": identity}],
        "status": STATUS.get(metric.status.strip().upper(), UNKNOWN_STATUS),
    }
    loinc = _loinc(metric)
    if loinc and loinc[0].vital_sign:
        resource["category"] = [{"coding": [{
            "system": systems.OBSERVATION_CATEGORY, "code": "vital-signs",
            "display": "Vital Signs"}]}]
    resource["code"] = _code(metric.code, loinc)
    if subject is not None:
        resource["subject"] = subject
    if metric.observed_at is not None:
        resource["effectiveDateTime"] = metric.observed_at.isoformat()
    if device_url is not None:
        resource["device"] = {"reference": device_url}
    resource.update(_value(metric))
    flags = [f for f in metric.abnormal_flags if f in INTERPRETATIONS]
    if flags:
        resource["interpretation"] = [
            {"coding": [{"system": systems.INTERPRETATION, "code": f}]} for f in flags]
    if metric.reference_range.strip():
        resource["referenceRange"] = [_range(metric.reference_range, metric.unit)]
    return resource


def _loinc(metric: Metric) -> tuple[codes.Loinc, ...]:
    ucum = metric.unit.ucum if metric.unit is not None else None
    for key in (metric.code.refid, metric.code.code):
        if key and key != "0":
            found = codes.loinc_for(key, ucum)
            if found:
                return found
    return ()


def _code(code: Code, loinc: tuple[codes.Loinc, ...]) -> dict[str, Any]:
    concept = _concept(code)
    codings = concept.setdefault("coding", [])
    codings.extend({"system": systems.LOINC, "code": c.code, "display": c.display}
                   for c in loinc)
    if not codings:
        del concept["coding"]
    return concept


def _concept(code: Code) -> dict[str, Any]:
    """A CodeableConcept for an MDC code; other or pending codes keep their text."""
    if code.is_mdc and code.code not in ("", "0"):
        coding: dict[str, str] = {"system": systems.MDC, "code": code.code}
        if code.refid:
            coding["display"] = code.refid
        concept: dict[str, Any] = {"coding": [coding]}
        if code.text:
            concept["text"] = code.text
        return concept
    return {"text": code.refid or code.text or code.code or "(not coded)"}


def _value(metric: Metric) -> dict[str, Any]:
    value = metric.value
    if isinstance(value, float):
        return {"valueQuantity": _quantity(_number(value, metric.raw_value), metric.unit)}
    if isinstance(value, str) and value:
        if metric.value_code is not None:
            return {"valueCodeableConcept": _concept(metric.value_code)}
        if metric.value_type.upper() in _CODED_TYPES:
            return {"valueCodeableConcept": {"text": value}}
        return {"valueString": value}
    if metric.raw_value.strip():
        return {"valueString": metric.raw_value.strip()}
    return {"dataAbsentReason": {"coding": [{
        "system": systems.DATA_ABSENT_REASON, "code": "unknown", "display": "Unknown"}]}}


def _number(value: float, raw: str) -> int | float:
    """The value as written: ``111`` stays an integer, ``3.90`` keeps being 3.9."""
    text = raw.strip()
    if text.lstrip("+-").isdigit():
        return int(text)
    return int(value) if value.is_integer() and "." not in text else value


def _quantity(value: int | float, unit: Unit | None) -> dict[str, Any]:
    quantity: dict[str, Any] = {"value": value}
    if unit is None:
        return quantity
    if unit.ucum:
        quantity.update(unit=unit.ucum, system=systems.UCUM, code=unit.ucum)
    elif str(unit):
        quantity["unit"] = str(unit)
    return quantity


def _range(text: str, unit: Unit | None) -> dict[str, Any]:
    """OBX-7 as low/high (``90-160``, ``<500``, ``>5``), else kept as text."""
    span = _RANGE.fullmatch(text)
    if span:
        return {"low": _quantity(_parse(span.group(1)), unit),
                "high": _quantity(_parse(span.group(2)), unit)}
    bound = _BOUND.fullmatch(text)
    if bound:
        side = "high" if bound.group(1) == "<" else "low"
        return {side: _quantity(_parse(bound.group(2)), unit)}
    return {"text": text.strip()}


def _parse(text: str) -> int | float:
    return int(text) if text.lstrip("-").isdigit() else float(text)
