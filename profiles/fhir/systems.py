"""The code and identifier systems the mapping writes, and how a conditional search names one.

The EUI-64 system is the one the HL7 Point-of-Care Device and Personal Health Device
implementation guides use for IEEE EUI-64 system ids (value as eight hyphen-separated hex
octets, ``00-09-FB-FF-FF-A0-F4-CA``). Identifiers of ours (``urn:interlink:…``) name what no
standard system covers: a device known only by a local id, a VMD or channel inside a
device, and an observation's identity.
"""

from __future__ import annotations

import uuid
from urllib.parse import quote

MDC = "urn:iso:std:iso:11073:10101"
LOINC = "http://loinc.org"
UCUM = "http://unitsofmeasure.org"
EUI64 = "urn:oid:1.2.840.10004.1.1.1.0.0.1.0.0.1.2680"
DEVICE = "urn:interlink:device"
OBSERVATION = "urn:interlink:observation"
PATIENT = "urn:interlink:patient-id"
OBSERVATION_CATEGORY = "http://terminology.hl7.org/CodeSystem/observation-category"
DATA_ABSENT_REASON = "http://terminology.hl7.org/CodeSystem/data-absent-reason"
INTERPRETATION = "http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation"

_UUID_NAMESPACE = uuid.UUID("5b0f0d1e-6f5c-4b7a-9a43-3c1f2d7a9e10")


def full_url(system: str, value: str) -> str:
    """A bundle entry's ``urn:uuid:`` fullUrl, the same for the same identifier every time."""
    return f"urn:uuid:{uuid.uuid5(_UUID_NAMESPACE, f'{system}|{value}')}"


def identifier_query(system: str, value: str) -> str:
    """``identifier=system|value`` as a search query: FHIR escapes, then percent-encoding."""
    return "identifier=" + quote(_escape(system), safe=":/.-_~") + "|" + quote(
        _escape(value), safe=":/.-_~")


def _escape(text: str) -> str:
    """FHIR search escaping of ``\\``, ``|``, ``,`` and ``$`` inside a token's parts."""
    for char in ("\\", "|", ",", "$"):
        text = text.replace(char, "\\" + char)
    return text
