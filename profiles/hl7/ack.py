"""Acknowledgments: pure functions of the received header, the outcome, ``now`` and an id."""

from __future__ import annotations

import enum
import functools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from profiles.hl7.delimiters import DEFAULT_DELIMITERS, Delimiters, version_tuple
from profiles.hl7.escape import escape
from profiles.hl7.header import EMPTY_HD, Header, HeaderError, salvage_control_id
from profiles.hl7.tables import ERROR_CODES, SEVERITIES

DEFAULT_SENDER = ("INTERLINK", "")
FALLBACK_VERSION = "2.5"


class AckOutcome(enum.Enum):
    """What the receiver decided; the mode of the sender picks the letters."""

    ACCEPT = "A"
    ERROR = "E"
    REJECT = "R"


@dataclass(frozen=True, slots=True)
class ErrorDetail:
    """One ERR entry. ``text`` is a diagnostic and must never quote message content."""

    code: int
    severity: str = "E"
    segment: str = ""
    sequence: int = 1
    field: int | None = None
    component: int | None = None
    text: str = ""

    def __post_init__(self) -> None:
        if self.code not in ERROR_CODES:
            raise ValueError(f"{self.code} is not in HL7 table 0357")
        if self.severity not in SEVERITIES:
            raise ValueError(f"severity {self.severity!r} is not in HL7 table 0516")

    @property
    def code_text(self) -> str:
        """The table 0357 description of ``code``."""
        return ERROR_CODES[self.code]


def ack_code(header: Header, outcome: AckOutcome) -> str:
    """AA/AE/AR in original mode; CA/CE/CR when MSH-15 or MSH-16 asks for enhanced mode."""
    # `_value_` is the member's value without the `value` property's Python-level lookup:
    # this runs twice for every message answered.
    return ("C" if header.enhanced_mode else "A") + outcome._value_


def format_timestamp(now: datetime) -> str:
    """HL7 DTM to the second, with the UTC offset when ``now`` carries one.

    Remembered for the last few values: every ACK written within the same second carries
    the same text, and `strftime` is a noticeable share of answering a message. The key
    holds the time zone too, since equal instants in two zones compare equal.
    """
    key = (now, now.tzinfo)
    text = _stamps.get(key)
    if text is None:
        if len(_stamps) >= 16:
            _stamps.clear()
        text = _stamps[key] = now.strftime("%Y%m%d%H%M%S%z")
    return text


_stamps: dict[tuple[datetime, object], str] = {}


def _fields(name: str, values: list[str]) -> list[str]:
    while values and not values[-1]:
        values.pop()
    return [name, *values]


@functools.lru_cache(maxsize=4096)
def _msh_template(
    d: Delimiters,
    sender: tuple[str, str],
    receiver: tuple[str, str],
    trigger_event: str,
    processing_id: str,
    version: str,
    character_sets: tuple[str, ...],
) -> tuple[str, str, str]:
    """MSH of an ACK split around MSH-7 and MSH-10, the only parts that change per ACK.

    Devices send thousands of messages with the same header fields, so the rest of the
    ACK's MSH is built once per sender and reused.
    """
    e = escape
    parts = ["ACK", e(trigger_event, d)]
    numbers = version_tuple(version)
    if not numbers or numbers >= (2, 3, 1):
        parts.append("ACK")
    while parts[-1] == "" and len(parts) > 1:
        parts.pop()
    head = d.field.join(["MSH", d.encoding_characters, e(sender[0], d), e(sender[1], d),
                         receiver[0], receiver[1], ""])
    middle = d.field.join(["", "", d.component.join(parts), ""])
    trailing = [
        e(processing_id or "P", d),
        e(version, d),
        "",
        "",
        "",
        "",
        "",
        d.repetition.join(e(cs, d) for cs in character_sets),
    ]
    while trailing and not trailing[-1]:
        trailing.pop()
    tail = d.field.join(["", *trailing])
    return head, middle, tail


def _msh(
    header: Header, d: Delimiters, now: datetime, control_id: str, sender: tuple[str, str]
) -> str:
    head, middle, tail = _msh_template(
        d,
        sender,
        (header.sending_application.text, header.sending_facility.text),
        header.trigger_event,
        header.processing_id,
        header.version or FALLBACK_VERSION,
        header.character_sets,
    )
    return f"{head}{format_timestamp(now)}{middle}{escape(control_id, d)}{tail}"


def _err_v25(error: ErrorDetail, d: Delimiters) -> str:
    location = ""
    if error.segment:
        location = d.component.join(
            [
                escape(error.segment, d),
                str(error.sequence),
                "" if error.field is None else str(error.field),
                "",
                "" if error.component is None else str(error.component),
            ]
        ).rstrip(d.component)
    code = d.component.join([str(error.code), escape(error.code_text, d), "HL70357"])
    values = ["", location, code, error.severity, "", "", escape(error.text, d)]
    return d.field.join(_fields("ERR", values))


def _eld_v2x(error: ErrorDetail, d: Delimiters) -> str:
    code = d.subcomponent.join([str(error.code), escape(error.code_text, d), "HL70357"])
    return d.component.join(
        [
            escape(error.segment, d),
            str(error.sequence) if error.segment else "",
            "" if error.field is None else str(error.field),
            code,
        ]
    )


def build_ack(
    header: Header,
    *,
    outcome: AckOutcome,
    now: datetime,
    control_id: str,
    sender: tuple[str, str] = DEFAULT_SENDER,
    errors: Iterable[ErrorDetail] = (),
    text: str | None = None,
) -> bytes:
    """The ACK for ``header`` in its own delimiters and character set, segments ended by CR.

    MSH swaps sender and receiver, MSA-2 echoes MSH-10. ERR follows the version: ERR-2/3/4/7
    from v2.5 on, one repeating ERR-1 before. MSA-3 carries ``text`` where it exists
    (before v2.7). A message without MSH-11/MSH-12 is answered as P / v2.5.
    """
    d = header.delimiters
    fs = d.field
    msh = _msh(header, d, now, control_id, sender)
    msa = f"MSA{fs}{ack_code(header, outcome)}{fs}{escape(header.control_id, d)}"
    errors = tuple(errors)
    if not text and not errors:  # the usual answer: no list of segments to build
        return f"{msh}\r{msa}\r".encode(header.codec, "replace")
    version = version_tuple(header.version or FALLBACK_VERSION)
    if text and (not version or version < (2, 7)):
        msa += fs + escape(text, d)
    segments = [msh, msa]
    if errors:
        if not version or version >= (2, 5):
            segments.extend(_err_v25(error, d) for error in errors)
        else:
            eld = d.repetition.join(_eld_v2x(error, d) for error in errors)
            segments.append(fs.join(["ERR", eld]))
    return "".join(segment + "\r" for segment in segments).encode(header.codec, "replace")


def build_reject_for_unreadable(
    raw: bytes,
    error: HeaderError,
    *,
    now: datetime,
    control_id: str,
    sender: tuple[str, str] = DEFAULT_SENDER,
) -> bytes:
    """AR for a message whose MSH cannot be read: default delimiters, v2.5, ASCII.

    MSA-2 is the salvaged MSH-10; ERR names the rule MSH broke, never its content.
    """
    salvaged = error.salvaged_control_id or salvage_control_id(raw)
    header = _unreadable_header(salvaged.encode("ascii", "replace").decode("ascii"))
    detail = ErrorDetail(
        error.code if error.code in ERROR_CODES else 100,
        "E",
        segment="MSH",
        sequence=1,
        field=error.field,
        text=error.reason,
    )
    return build_ack(
        header,
        outcome=AckOutcome.REJECT,
        now=now,
        control_id=control_id,
        sender=sender,
        errors=(detail,),
        text=error.reason,
    )


def _unreadable_header(control_id: str) -> Header:
    return Header(
        delimiters=DEFAULT_DELIMITERS,
        codec="ascii",
        sending_application=EMPTY_HD,
        sending_facility=EMPTY_HD,
        receiving_application=EMPTY_HD,
        receiving_facility=EMPTY_HD,
        timestamp="",
        message_type="",
        trigger_event="",
        message_structure="",
        control_id=control_id,
        processing_id="P",
        version=FALLBACK_VERSION,
        accept_ack_type="",
        application_ack_type="",
        character_sets=(),
        profiles=(),
        patient_id="",
    )
