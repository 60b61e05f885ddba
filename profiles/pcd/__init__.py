"""IHE PCD device data: records, extraction, conformance and code maps.

``records`` is the typed contract; ``extract.extract`` reads a message into a
``DeviceReport``; ``conformance.check`` lists PCD-01 / PCD-04 findings; ``codes`` looks up
the shipped MDC → LOINC / UCUM maps. Nothing here does I/O beyond reading its own data files.
"""

from profiles.pcd.conformance import check, has_errors
from profiles.pcd.extract import extract
from profiles.pcd.records import (
    Alarm,
    Code,
    ContainmentPath,
    DeviceIdentity,
    DeviceNode,
    DeviceReport,
    Finding,
    Metric,
    PatientIdentifier,
    PatientRef,
    PumpChannel,
    Quantity,
    Unit,
)

__all__ = [
    "Alarm",
    "Code",
    "ContainmentPath",
    "DeviceIdentity",
    "DeviceNode",
    "DeviceReport",
    "Finding",
    "Metric",
    "PatientIdentifier",
    "PatientRef",
    "PumpChannel",
    "Quantity",
    "Unit",
    "check",
    "extract",
    "has_errors",
]
