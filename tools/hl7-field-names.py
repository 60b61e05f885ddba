#!/usr/bin/env python3
"""Write `engine/web/hl7-fields.json`: the names of the fields of common HL7 v2 segments.

The dashboard shows a field's name when the pointer rests on it. The names come from
hl7apy's structures (HL7 v2.6, the version of IHE PCD-01; v2.8 for segments 2.6 lacks),
read here once and kept as a small data file, so the browser needs neither hl7apy nor the
network. Run it again after changing SEGMENTS; `--check` exits non-zero when the file in
the repository differs from what this would write (the tests use it).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from pathlib import Path
from typing import Any

TARGET = Path(__file__).resolve().parents[1] / "engine" / "web" / "hl7-fields.json"
VERSIONS = ("hl7apy.v2_6", "hl7apy.v2_8")
SEGMENTS = (
    "MSH", "SFT", "UAC", "EVN", "PID", "PD1", "NK1", "PV1", "PV2", "MRG", "AL1", "DG1",
    "IN1", "ORC", "TQ1", "OBR", "OBX", "NTE", "SPM", "PRT", "MSA", "ERR", "QAK", "QPD",
    "RCP", "BHS", "BTS", "FHS", "FTS",
)


def title(name: str) -> str:
    """`PATIENT_IDENTIFIER_LIST` → `Patient Identifier List`."""
    return " ".join(word.capitalize() for word in name.split("_") if word)


def field_entry(spec: Any) -> dict[str, Any]:
    """One field: name, data type and, for composite types, the component names."""
    kind, children, datatype, name = spec[0], spec[1], spec[2], spec[3]
    entry: dict[str, Any] = {"name": title(name), "type": datatype}
    if kind == "sequence":
        entry["components"] = [title(child[1][3]) for child in children]
    return entry


def segment_fields(segment: str) -> list[dict[str, Any]]:
    """The fields of one segment, in order, from the first version that defines it."""
    for module_name in VERSIONS:
        segments = importlib.import_module(f"{module_name}.segments").SEGMENTS
        if segment in segments:
            return [field_entry(child[1]) for child in segments[segment][1]]
    raise KeyError(f"no hl7apy version defines {segment}")


def build() -> str:
    """The file's text: one object keyed by segment id, one segment per line."""
    lines = [f"{json.dumps(segment)}:{json.dumps(segment_fields(segment), separators=(',', ':'))}"
             for segment in sorted(SEGMENTS)]
    return "{\n" + ",\n".join(lines) + "\n}\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="compare with the file instead of writing it")
    args = parser.parse_args()
    text = build()
    if args.check:
        current = TARGET.read_text() if TARGET.exists() else ""
        if current != text:
            print(f"{TARGET} is out of date: run {sys.argv[0]}", file=sys.stderr)
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
