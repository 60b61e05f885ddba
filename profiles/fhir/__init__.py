"""HL7 v2 device data → FHIR R4: pure functions from PCD records to FHIR JSON dicts.

``transaction_bundle(report, options)`` turns one extracted ``DeviceReport`` into a
transaction Bundle: a Device per MDS, VMD and channel, an Observation per metric, each
created only if no resource with its deterministic identifier exists yet.
"""

from profiles.fhir.bundle import MappingOptions, NothingToMap, transaction_bundle

__all__ = ["MappingOptions", "NothingToMap", "transaction_bundle"]
