"""One transaction Bundle per message: its Devices, then an Observation per metric.

Every entry is a conditional create (``POST`` with ``ifNoneExist`` on the resource's
identifier), and references between entries use ``urn:uuid:`` fullUrls derived from those
identifiers, so the same message always gives the same Bundle and a server that already
holds its resources creates nothing. Two rows of one message that are the same reading
(same device, OBX-4, code and time) become one Observation: a server could not tell them
apart on a resend either.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote

from profiles.fhir import systems
from profiles.fhir.devices import DeviceEntry, device_entries, device_key, standalone_entry
from profiles.fhir.observations import observation, observation_identity
from profiles.pcd.records import DeviceReport, Metric, PatientRef

_OID = re.compile(r"[0-2](\.(0|[1-9]\d*))+")


class NothingToMap(ValueError):
    """The report has no metric to send (the text names no content)."""


@dataclass(frozen=True, slots=True)
class MappingOptions:
    """Choices a destination makes about the mapping.

    ``subject``: ``identifier`` references the patient by PID-3 identifier only (the
    server need not know the patient); ``conditional`` writes ``Patient?identifier=…`` so
    the server resolves it (and refuses the Bundle when no such patient exists); ``none``
    leaves the subject out. ``patient_system`` is the identifier system of PID-3 when the
    assigning authority does not name one (default: an OID authority as ``urn:oid:``,
    else ``urn:interlink:patient-id`` plus the authority).
    """

    subject: Literal["identifier", "conditional", "none"] = "identifier"
    patient_system: str | None = None


def transaction_bundle(report: DeviceReport, options: MappingOptions | None = None) -> dict:
    """The transaction Bundle for one report; NothingToMap when it has no metric."""
    options = options or MappingOptions()
    if not report.metrics:
        raise NothingToMap(f"no device observations to map ({report.profile or 'not PCD'})")
    devices, by_position = device_entries(report.devices)
    known = {entry.key for entry in devices}
    subject = _subject(report.patient, options)
    fallback = device_key(report.sender) if report.sender is not None else ""
    observations: list[dict[str, Any]] = []
    seen: set[str] = set()
    for metric in report.metrics:
        device = _device_for(metric, by_position)
        if device is not None and device.key not in known:
            known.add(device.key)
            devices.append(device)
        key = device.device if device is not None else fallback
        identity = observation_identity(metric, key)
        if identity in seen:
            continue
        seen.add(identity)
        resource = observation(metric, identity=identity, subject=subject,
                               device_url=device.full_url if device is not None else None)
        observations.append(_entry(systems.full_url(systems.OBSERVATION, identity), resource,
                                   (systems.OBSERVATION, identity)))
    entries = [_entry(d.full_url, d.resource, d.key) for d in devices]
    return {"resourceType": "Bundle", "type": "transaction", "entry": entries + observations}


def _device_for(metric: Metric, by_position: dict[tuple[int, ...], DeviceEntry]
                ) -> DeviceEntry | None:
    """The nearest declared node above the metric, unless the metric names another device."""
    node = None
    if metric.path is not None:
        for level in ("CHAN", "VMD", "MDS"):
            node = by_position.get(metric.path.node_key(level))  # type: ignore[arg-type]
            if node is not None:
                break
    if metric.device is None:
        return node
    if node is not None and node.device == device_key(metric.device):
        return node
    return standalone_entry(metric.device)


def _entry(full_url: str, resource: dict[str, Any], key: tuple[str, str]) -> dict[str, Any]:
    return {
        "fullUrl": full_url,
        "resource": resource,
        "request": {"method": "POST", "url": resource["resourceType"],
                    "ifNoneExist": systems.identifier_query(*key)},
    }


def _subject(patient: PatientRef | None, options: MappingOptions) -> dict[str, Any] | None:
    if options.subject == "none" or patient is None:
        return None
    first = next((i for i in patient.identifiers if i.value.strip()), None)
    if first is None:
        return None
    system = options.patient_system or _patient_system(first.authority)
    value = first.value.strip()
    if options.subject == "conditional":
        return {"reference": "Patient?" + systems.identifier_query(system, value)}
    return {"type": "Patient", "identifier": {"system": system, "value": value}}


def _patient_system(authority: str) -> str:
    authority = authority.strip()
    if _OID.fullmatch(authority):
        return f"urn:oid:{authority}"
    if authority:
        return f"{systems.PATIENT}:{quote(authority, safe='')}"
    return systems.PATIENT
