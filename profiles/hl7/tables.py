"""HL7 and IHE code tables used when answering messages, kept as data."""

from __future__ import annotations

# HL7 table 0357, message error condition codes.
ERROR_CODES: dict[int, str] = {
    0: "Message accepted",
    100: "Segment sequence error",
    101: "Required field missing",
    102: "Data type error",
    103: "Table value not found",
    104: "Value too long",
    200: "Unsupported message type",
    201: "Unsupported event code",
    202: "Unsupported processing id",
    203: "Unsupported version id",
    204: "Unknown key identifier",
    205: "Duplicate key identifier",
    206: "Application record locked",
    207: "Application internal error",
}

# HL7 table 0516, error severity.
SEVERITIES = frozenset({"E", "W", "I", "F"})

# HL7 table 0104, version identifiers an engine can meet on the wire.
VERSIONS = frozenset(
    {"2.1", "2.2", "2.3", "2.3.1", "2.4", "2.5", "2.5.1", "2.6", "2.7", "2.7.1"}
    | {"2.8", "2.8.1", "2.8.2", "2.9"}
)

# HL7 table 0103, processing ids.
PROCESSING_IDS = frozenset({"D", "P", "T"})

# Message types and trigger events IHE PCD uses before (or outside) the HL7 tables:
# PCD-04/05 alarms (ORU^R40, ORA^R41) and PCD-10 event reports (ORU^R42).
IHE_MESSAGE_TYPES = frozenset({"ORU", "ORA", "ACK"})
IHE_TRIGGER_EVENTS = frozenset({"R40", "R41", "R42", "R43"})

# IHE-defined structures mapped to the HL7 structure whose required segments they share.
STRUCTURE_ALIASES: dict[str, str] = {
    "ORU_R40": "ORU_R01",
    "ORU_R42": "ORU_R01",
}

# HL7 table 0354 (v2.5): which structure a trigger event uses when MSH-9.3 is absent.
EVENT_STRUCTURES: dict[str, str] = {
    **dict.fromkeys(("ADT^A01", "ADT^A04", "ADT^A08", "ADT^A13"), "ADT_A01"),
    **dict.fromkeys(("ADT^A05", "ADT^A14", "ADT^A28", "ADT^A31"), "ADT_A05"),
    **dict.fromkeys(("ADT^A06", "ADT^A07"), "ADT_A06"),
    **dict.fromkeys(("ADT^A09", "ADT^A10", "ADT^A11"), "ADT_A09"),
    **dict.fromkeys(
        ("ADT^A21", "ADT^A22", "ADT^A23", "ADT^A25", "ADT^A26", "ADT^A27", "ADT^A29"), "ADT_A21"
    ),
    **dict.fromkeys(("ADT^A32", "ADT^A33"), "ADT_A21"),
    **dict.fromkeys(("ADT^A39", "ADT^A40", "ADT^A41", "ADT^A42"), "ADT_A39"),
    **dict.fromkeys(("ADT^A43", "ADT^A44"), "ADT_A43"),
    **dict.fromkeys(("ADT^A50", "ADT^A51"), "ADT_A50"),
    **dict.fromkeys(("ADT^A52", "ADT^A53", "ADT^A55"), "ADT_A52"),
    **dict.fromkeys(("ADT^A61", "ADT^A62"), "ADT_A61"),
    **dict.fromkeys(("MDM^T01", "MDM^T03", "MDM^T05", "MDM^T07", "MDM^T09", "MDM^T11"), "MDM_T01"),
    **dict.fromkeys(("MDM^T02", "MDM^T04", "MDM^T06", "MDM^T08", "MDM^T10"), "MDM_T02"),
    **dict.fromkeys(("ORU^R30", "ORU^R31", "ORU^R32"), "ORU_R30"),
    **dict.fromkeys(("ORU^R40", "ORU^R42"), "ORU_R01"),
    **dict.fromkeys(tuple(f"SIU^S{n}" for n in range(12, 27)), "SIU_S12"),
    **dict.fromkeys(("BAR^P01", "BAR^P05"), "BAR_P01"),
    **dict.fromkeys(("DFT^P03", "DFT^P11"), "DFT_P03"),
}

# Segments HL7 requires but an IHE profile makes optional, per structure: IHE PCD-03
# (PIV) RGV^O15 carries the programmed rate in RXG/OBX and does not send TQ1.
RELAXED_SEGMENTS: dict[str, frozenset[str]] = {
    "RGV_O15": frozenset({"TQ1"}),
}
