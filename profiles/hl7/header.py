"""Reading MSH (and PID-3.1) fast: what every message needs before it can be acknowledged.

Only the first segment is split; the rest of the message is searched, never parsed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

from profiles.hl7.charsets import SPLIT_AFTER_DECODING, resolve_codec
from profiles.hl7.delimiters import (
    DelimiterError,
    Delimiters,
    read_delimiters,
)
from profiles.hl7.escape import unescape

_LEADING_JUNK = b" \t\r\n\x0b\x0c"
_BOM = b"\xef\xbb\xbf"
_MAX_CONTROL_ID = 199


class HeaderError(ValueError):
    """MSH cannot be read, so no normal ACK can be built.

    ``reason`` names the broken rule and never quotes message content, so it can go into
    logs and ERR-7. ``salvaged_control_id`` is a best-effort MSH-10 for MSA-2 ('' if none).
    ``code`` is the HL7 table 0357 code that fits, ``field`` the MSH field at fault.
    """

    def __init__(
        self, reason: str, salvaged_control_id: str, *, code: int = 100, field: int | None = None
    ) -> None:
        super().__init__(reason)
        self.reason = reason
        self.salvaged_control_id = salvaged_control_id
        self.code = code
        self.field = field


class HD(NamedTuple):
    """A hierarchic designator (MSH-3..6).

    ``text`` is the field as written (escape sequences kept, so it can be echoed into an
    ACK written with the same delimiters); the components are decoded.
    """

    text: str
    namespace: str
    universal_id: str
    universal_id_type: str

    def __str__(self) -> str:
        return self.text


EMPTY_HD = HD("", "", "", "")


@dataclass(frozen=True)
class Header:
    """What MSH says about a message, decoded, plus the first PID-3.1.

    Without ``__slots__`` on purpose: `read_header` fills a new one from the decoded fields
    it keeps per sender with one dictionary copy instead of eighteen frozen assignments.
    """

    delimiters: Delimiters
    codec: str
    sending_application: HD
    sending_facility: HD
    receiving_application: HD
    receiving_facility: HD
    timestamp: str
    message_type: str
    trigger_event: str
    message_structure: str
    control_id: str
    processing_id: str
    version: str
    accept_ack_type: str
    application_ack_type: str
    character_sets: tuple[str, ...]
    profiles: tuple[str, ...]
    patient_id: str

    @property
    def enhanced_mode(self) -> bool:
        """MSH-15 or MSH-16 set means enhanced acknowledgment mode (CA/CE/CR)."""
        return bool(self.accept_ack_type or self.application_ack_type)


def start_of_msh(raw: bytes) -> int:
    """Offset of "MSH" after any leading whitespace or UTF-8 BOM."""
    if raw[:3] == b"MSH":
        return 0
    start = 0
    if raw[:3] == _BOM:
        start = 3
    length = len(raw)
    while start < length and raw[start] in _LEADING_JUNK:
        start += 1
    return start


def _first_line_end(raw: bytes, start: int) -> int:
    cr = raw.find(b"\r", start)
    if cr < 0:
        lf = raw.find(b"\n", start)
        return len(raw) if lf < 0 else lf
    lf = raw.find(b"\n", start, cr)
    return cr if lf < 0 else lf


def salvage_control_id(raw: bytes) -> str:
    """Best-effort MSH-10 from a header that cannot be read properly ('' when hopeless)."""
    start = start_of_msh(raw)
    if raw[start : start + 3] != b"MSH":
        return ""
    line = raw[start : _first_line_end(raw, start)]
    separator = line[3:4] or b"|"
    if separator.isalnum() or separator.isspace():
        separator = b"|"
    parts = line.split(separator, 10)
    if len(parts) < 10:
        return ""
    value = parts[9].decode("iso8859-1").strip()
    return "".join(c for c in value if c.isprintable())[:_MAX_CONTROL_ID]


def _hd(text: str, d: Delimiters, codec: str) -> HD:
    esc = d.escape
    if d.component not in text:
        return HD(text, unescape(text, d, codec) if esc in text else text, "", "")
    parts = text.split(d.component, 3)
    parts += _PADDING[: 4 - len(parts)]
    if esc in text:
        return HD(text, *(unescape(p, d, codec) for p in parts[:3]))
    return HD(text, parts[0], parts[1], parts[2])


def _hd_of(text: str, d: Delimiters, codec: str) -> HD:
    return _hd(text, d, codec) if text else EMPTY_HD


def _find_pid(raw: bytes, marker: bytes, msh_end: int) -> int:
    """Start of the first PID segment, or -1; the terminator MSH used is tried first."""
    terminator = raw[msh_end : msh_end + 1]
    if terminator == b"\r" and raw[msh_end + 1 : msh_end + 2] == b"\n":
        terminator = b"\n"
        msh_end += 1
    if raw.startswith(marker, msh_end + 1):
        return msh_end + 1
    if not terminator:
        return -1
    pos = raw.find(terminator + marker, msh_end)
    other = b"\n" if terminator == b"\r" else b"\r"
    found_other = raw.find(other + marker, msh_end, pos if pos >= 0 else len(raw))
    if found_other >= 0:
        pos = found_other
    return pos + 1 if pos >= 0 else -1


def _patient_id(raw: bytes, field: bytes, d: Delimiters, codec: str, msh_end: int) -> str:
    """PID-3.1 of the first repetition of the first PID segment, found without splitting."""
    start = _find_pid(raw, b"PID" + field, msh_end)
    if start < 0:
        return ""
    parts = raw[start : _first_line_end(raw, start)].split(field, 4)
    if len(parts) < 4:
        return ""
    pid3 = parts[3].decode(codec, "replace")
    value = pid3.split(d.repetition, 1)[0].split(d.component, 1)[0]
    return unescape(value, d, codec) if d.escape in value else value


def read_header(raw: bytes) -> Header:
    """Read MSH from a raw message (CR, LF or CRLF terminators; leading whitespace/BOM ok).

    Raises HeaderError when MSH is absent or its delimiters break the standard.
    """
    start = start_of_msh(raw)
    if raw[start : start + 3] != b"MSH":
        raise HeaderError("message does not start with an MSH segment", "", code=100)
    end = _first_line_end(raw, start)
    line = raw[start:end]
    field_b = line[3:4]
    if not field_b:
        raise HeaderError("MSH has no field separator", "", code=102, field=1)
    latin = line.decode("iso8859-1")
    fs = latin[3]
    f = latin.split(fs, 21)
    n = len(f)
    msh2 = f[1]
    try:
        d = read_delimiters(fs, msh2, _version_hint(f, msh2) if len(msh2) == 5 else "")
    except DelimiterError as error:
        raise HeaderError(
            error.reason, salvage_control_id(raw), code=102, field=error.field
        ) from None
    codec = resolve_codec(raw, f[17].split(d.repetition, 1)[0] if n > 17 else "")
    if codec in SPLIT_AFTER_DECODING or (not latin.isascii() and codec != "iso8859-1"):
        f = line.decode(codec, "replace").split(fs, 21)
        n = len(f)
    if n < 22:
        f += _PADDING[n:]
    escaped = latin.find(d.escape, 5 + len(msh2)) >= 0
    timestamp = f[6]
    control_id = f[9]
    if escaped:
        timestamp = unescape(timestamp, d, codec)
        control_id = unescape(control_id, d, codec)
    fields = _sender_fields(d, msh2, codec, escaped, f).copy()
    fields["timestamp"] = timestamp
    fields["control_id"] = control_id
    fields["patient_id"] = _patient_id(raw, field_b, d, codec, end)
    return _header_from(fields)


def _header_from(fields: dict[str, object]) -> Header:
    """A Header owning ``fields``: one assignment instead of the frozen init's eighteen."""
    header = object.__new__(Header)
    object.__setattr__(header, "__dict__", fields)
    return header


_senders: dict[tuple[object, ...], dict[str, object]] = {}


def _sender_fields(
    d: Delimiters, msh2: str, codec: str, escaped: bool, f: list[str]
) -> dict[str, object]:
    """Every Header value but MSH-7, MSH-10 and PID-3.1, decoded, found by MSH's own text.

    A sender writes the same MSH on every message apart from its time and control id, so
    each distinct text is decoded once. The key holds every field the values come from;
    ``d`` is fixed by MSH-1 and MSH-2 once they were found valid. Callers copy the result.
    """
    key = (d.field, msh2, codec, escaped,
           f[2], f[3], f[4], f[5], f[8], f[10], f[11], f[14], f[15], f[17], f[20])
    found = _senders.get(key)
    if found is None:
        if len(_senders) >= _CACHE_LIMIT:
            _senders.clear()
        found = _senders[key] = _decode_sender_fields(d, codec, escaped, f)
    return found


def _decode_sender_fields(
    d: Delimiters, codec: str, escaped: bool, f: list[str]
) -> dict[str, object]:
    comp = d.component
    msh9 = f[8].split(comp, 3) if comp in f[8] else [f[8]]
    msh9 += _PADDING[:2]
    values = [
        msh9[0],
        msh9[1],
        msh9[2].split(d.subcomponent, 1)[0],
        f[10].split(comp, 1)[0],
        f[11].split(comp, 1)[0],
        f[14],
        f[15],
    ]
    if escaped:
        values = [unescape(v, d, codec) for v in values]
    kind, event, structure, processing_id, version, accept_ack, application_ack = values
    return {
        "delimiters": d,
        "codec": codec,
        "sending_application": _hd_of(f[2], d, codec),
        "sending_facility": _hd_of(f[3], d, codec),
        "receiving_application": _hd_of(f[4], d, codec),
        "receiving_facility": _hd_of(f[5], d, codec),
        "message_type": kind,
        "trigger_event": event,
        "message_structure": structure,
        "processing_id": processing_id,
        "version": version,
        "accept_ack_type": accept_ack,
        "application_ack_type": application_ack,
        "character_sets": _character_sets(f[17], d, codec) if f[17] else (),
        "profiles": _profiles(f[20], d, codec) if f[20] else (),
    }


def _version_hint(f: list[str], msh2: str) -> str:
    """MSH-12.1 split with the would-be component separator, to judge a 5th MSH-2 character."""
    return f[11].split(msh2[0], 1)[0].strip() if len(f) > 11 else ""


_CACHE_LIMIT = 1024


def _character_sets(msh18: str, d: Delimiters, codec: str) -> tuple[str, ...]:
    """MSH-18 repetitions, empty ones dropped."""
    return tuple(unescape(v, d, codec) for v in msh18.split(d.repetition) if v)


def _profiles(msh21: str, d: Delimiters, codec: str) -> tuple[str, ...]:
    """MSH-21 entity identifiers; a repetition with only a universal id (OID) yields that."""
    names: list[str] = []
    for repetition in msh21.split(d.repetition):
        parts = repetition.split(d.component, 3)
        name = parts[0] or (parts[2] if len(parts) > 2 else "")
        if name:
            names.append(unescape(name, d, codec))
    return tuple(names)


_PADDING = [""] * 22
