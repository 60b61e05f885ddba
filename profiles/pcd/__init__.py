"""IHE PCD device data: records, extraction, conformance and code maps.

``records`` is the typed contract; ``extract.extract`` reads a message into a
``DeviceReport``; ``conformance.check`` lists PCD-01 / PCD-04 findings; ``codes`` looks up
the shipped MDC → LOINC / UCUM maps. Nothing here does I/O beyond reading its own data files.
"""
