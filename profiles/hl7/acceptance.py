"""The checks an engine owes a sender before it answers AA: MSH basics and required segments.

Message structures, message types (table 0076) and trigger events (table 0003) come from
hl7apy's definitions of the nearest version it ships, computed once per key and cached,
so a steady stream costs one cache lookup plus one ``bytes.find`` per required segment.
Only top-level required segments (and those of required groups) are checked; segment
order, optional groups, choices and Z-segments are left alone, as real senders need.
"""

from __future__ import annotations

import importlib
from functools import lru_cache
from types import ModuleType
from typing import Any, NamedTuple

from profiles.hl7.ack import AckOutcome, ErrorDetail
from profiles.hl7.delimiters import version_tuple
from profiles.hl7.header import Header
from profiles.hl7.tables import (
    EVENT_STRUCTURES,
    IHE_MESSAGE_TYPES,
    IHE_TRIGGER_EVENTS,
    PROCESSING_IDS,
    RELAXED_SEGMENTS,
    STRUCTURE_ALIASES,
    VERSIONS,
)

# hl7apy's libraries used, oldest first. Its 2.1 and 2.2 libraries carry no code tables
# and stricter structures than senders of that era keep to (NK1 required in ADT^A01),
# so those versions are read with 2.3's structures and 2.3.1's tables.
_LIBRARIES: tuple[tuple[tuple[int, ...], str], ...] = (
    ((2, 3), "hl7apy.v2_3"),
    ((2, 3, 1), "hl7apy.v2_3_1"),
    ((2, 4), "hl7apy.v2_4"),
    ((2, 5), "hl7apy.v2_5"),
    ((2, 5, 1), "hl7apy.v2_5_1"),
    ((2, 6), "hl7apy.v2_6"),
    ((2, 7), "hl7apy.v2_7"),
    ((2, 8), "hl7apy.v2_8"),
    ((2, 8, 1), "hl7apy.v2_8_1"),
    ((2, 8, 2), "hl7apy.v2_8_2"),
)
_FIRST_WITH_TABLES = (2, 3, 1)
_DEFAULT_LIBRARY = (2, 5)


def _nearest(version: tuple[int, ...], *, with_tables: bool = False) -> str:
    """The newest hl7apy library not newer than ``version`` (the oldest if all are newer)."""
    candidates = [
        (key, name) for key, name in _LIBRARIES if not with_tables or key >= _FIRST_WITH_TABLES
    ]
    chosen = candidates[0][1]
    for key, name in candidates:
        if key <= version:
            chosen = name
    return chosen


def _load(name: str) -> ModuleType:
    return importlib.import_module(name)


@lru_cache(maxsize=32)
def _codes(version: tuple[int, ...]) -> tuple[frozenset[str], frozenset[str]]:
    """(message types, trigger events) known for ``version``, IHE PCD additions included."""
    tables = _load(_nearest(version, with_tables=True)).TABLES
    types = frozenset(tables["HL70076"][1]) | IHE_MESSAGE_TYPES
    events = frozenset(tables["HL70003"][1]) | IHE_TRIGGER_EVENTS
    return types, events


def _required(children: Any) -> list[str]:
    """Required segments of a sequence, descending only into required sequence groups."""
    found: list[str] = []
    for name, reference, (minimum, _maximum), kind in children:
        if minimum < 1:
            continue
        if kind == "SEG":
            found.append(name)
        elif kind == "GRP" and reference[0] == "sequence":
            found.extend(_required(reference[1]))
    return found


@lru_cache(maxsize=512)
def required_segments(version: tuple[int, ...], candidates: tuple[str, ...]) -> tuple[str, ...]:
    """Required segments (MSH excluded) of the first known structure among ``candidates``.

    An unknown structure yields no requirement: leniency beats rejecting valid traffic.
    """
    messages = _load(_nearest(version)).MESSAGES
    for structure in candidates:
        if structure in messages:
            definition = messages[structure]
            if definition[0] != "sequence":
                return ()
            relaxed = RELAXED_SEGMENTS.get(structure, frozenset()) | {"MSH"}
            names = dict.fromkeys(n for n in _required(definition[1]) if n not in relaxed)
            return tuple(names)
    return ()


def _candidates(structure: str, message_type: str, trigger: str) -> tuple[str, ...]:
    found = [
        structure,
        STRUCTURE_ALIASES.get(structure, ""),
        f"{message_type}_{trigger}" if trigger else "",
        EVENT_STRUCTURES.get(f"{message_type}^{trigger}", ""),
    ]
    if message_type == "ACK":
        found.append("ACK")
    return tuple(c for c in found if c)


def _msh_error(code: int, field: int, component: int | None, text: str) -> ErrorDetail:
    return ErrorDetail(
        code, "E", segment="MSH", sequence=1, field=field, component=component, text=text
    )


@lru_cache(maxsize=1024)
def _header_errors(
    version_text: str,
    message_type: str,
    trigger: str,
    has_control_id: bool,
    processing_id: str,
) -> tuple[tuple[ErrorDetail, ...], tuple[int, ...]]:
    """MSH-level findings and the version to read structures with; cached per key."""
    errors: list[ErrorDetail] = []
    version = version_tuple(version_text)
    if not version_text:
        errors.append(_msh_error(101, 12, None, "MSH-12 version id is empty"))
    elif version_text not in VERSIONS:
        errors.append(
            _msh_error(203, 12, None, "MSH-12 names a version this engine does not support")
        )
    if not version or version_text not in VERSIONS:
        version = _DEFAULT_LIBRARY
    if not has_control_id:
        errors.append(_msh_error(101, 10, None, "MSH-10 message control id is empty"))
    if not processing_id:
        errors.append(_msh_error(101, 11, None, "MSH-11 processing id is empty"))
    elif processing_id not in PROCESSING_IDS:
        errors.append(_msh_error(202, 11, None, "MSH-11 processing id is not D, P or T"))
    types, events = _codes(version)
    if not message_type:
        errors.append(_msh_error(101, 9, 1, "MSH-9.1 message type is empty"))
    elif message_type not in types and not message_type.startswith("Z"):
        errors.append(_msh_error(200, 9, 1, "MSH-9.1 message type is not in HL7 table 0076"))
    if not trigger:
        if message_type and message_type != "ACK" and version >= (2, 2):
            errors.append(_msh_error(101, 9, 2, "MSH-9.2 trigger event is empty"))
    elif trigger not in events and not trigger.startswith("Z"):
        errors.append(_msh_error(201, 9, 2, "MSH-9.2 trigger event is not in HL7 table 0003"))
    return tuple(errors), version


class _Rules(NamedTuple):
    """What one kind of header owes before an AA, ready to test against a message's bytes."""

    errors: tuple[ErrorDetail, ...]
    """MSH-level findings, the same for every message with this header."""
    segments: tuple[tuple[bytes, bytes, ErrorDetail], ...]
    """Per required segment: its name after a CR, after an LF, and the finding if absent."""


@lru_cache(maxsize=1024)
def _rules(
    version_text: str,
    message_type: str,
    trigger: str,
    has_control_id: bool,
    processing_id: str,
    structure: str,
    field: str,
) -> _Rules:
    """The checks for one kind of header, derived once: a sender repeats its MSH for years."""
    errors, version = _header_errors(
        version_text, message_type, trigger, has_control_id, processing_id
    )
    if any(e.code in (200, 201) or (e.code == 101 and e.field == 9) for e in errors):
        return _Rules(errors, ())
    if message_type.startswith("Z"):
        return _Rules(errors, ())
    separator = field.encode("iso8859-1")
    candidates = _candidates(structure, message_type, trigger)
    segments = tuple(
        (
            b"\r" + name.encode("ascii") + separator,
            b"\n" + name.encode("ascii") + separator,
            ErrorDetail(
                100, "E", segment=name, sequence=1, text=f"required segment {name} is missing"
            ),
        )
        for name in required_segments(version, candidates)
    )
    return _Rules(errors, segments)


def check_acceptance(header: Header, raw: bytes) -> list[ErrorDetail]:
    """Everything that stands between ``raw`` and an AA/CA, as ERR entries (empty: accept).

    Findings have severity E; 200/201/203 are the ones an engine answers with a reject.
    Diagnostics name fields and segments, never message content.
    """
    rules = _rules(
        header.version,
        header.message_type,
        header.trigger_event,
        bool(header.control_id),
        header.processing_id,
        header.message_structure,
        header.delimiters.field,
    )
    found = list(rules.errors)
    for after_cr, after_lf, missing in rules.segments:
        if raw.find(after_cr) < 0 and raw.find(after_lf) < 0:
            found.append(missing)
    return found


# Findings that mean "this engine cannot take this kind of message at all".
REJECT_CODES = frozenset({200, 201, 202, 203})


def suggested_outcome(errors: list[ErrorDetail]) -> AckOutcome:
    """A default policy for the engine: reject unsupported kinds, error on other E/F findings."""
    if any(e.code in REJECT_CODES for e in errors):
        return AckOutcome.REJECT
    if any(e.severity in ("E", "F") for e in errors):
        return AckOutcome.ERROR
    return AckOutcome.ACCEPT
