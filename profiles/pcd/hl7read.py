"""Small readers of HL7 v2 data types as PCD messages use them (DTM, CWE, EI, CX).

They work on one field's text as written, split by the message's delimiters, and decode
escape sequences only at the leaves. None of them raises on bad input: they return None
or empty values and leave the judging to the caller.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta, timezone, tzinfo

from profiles.hl7.delimiters import Delimiters
from profiles.hl7.escape import unescape
from profiles.pcd.records import Code, DeviceIdentity

_DTM = re.compile(
    r"(?P<y>\d{4})(?P<mo>\d{2})?(?P<d>\d{2})?(?P<h>\d{2})?(?P<mi>\d{2})?(?P<s>\d{2})?"
    r"(?:\.(?P<frac>\d{1,4}))?(?P<tz>[+-]\d{4})?"
)
# EI-4 / HD-3 identifier types a device id can carry, normalised.
_ID_TYPES = {"EUI-64": "EUI-64", "EUI64": "EUI-64", "URN": "URN", "DNS": "DNS", "ISO": "ISO"}
_ID_TYPES |= {"UUID": "UUID", "GUID": "GUID", "URI": "URI", "L": "local"}


def components(text: str, d: Delimiters) -> list[str]:
    """The components of one repetition, as written."""
    return text.split(d.component) if d.component in text else [text]


def leaf(text: str, d: Delimiters, codec: str) -> str:
    """One component decoded (sub-components kept joined as written)."""
    if d.escape and d.escape in text:
        return unescape(text, d, codec)
    return text


def parse_offset(text: str) -> timezone | None:
    """``+0500`` → a fixed offset; None for anything else."""
    if len(text) != 5 or text[0] not in "+-" or not text[1:].isdigit():
        return None
    hours, minutes = int(text[1:3]), int(text[3:5])
    if hours > 23 or minutes > 59:
        return None
    sign = 1 if text[0] == "+" else -1
    return timezone(sign * timedelta(hours=hours, minutes=minutes)) if hours or minutes else UTC


def parse_dtm(text: str) -> tuple[datetime | None, bool]:
    """An HL7 DTM as a datetime and whether it stated an offset; (None, False) if unreadable.

    A time without an offset comes back naive; the caller decides its zone.
    """
    text = text.strip()
    match = _DTM.fullmatch(text)
    if match is None:
        return None, False
    try:
        frac = match["frac"] or ""
        moment = datetime(
            int(match["y"]),
            int(match["mo"] or 1),
            int(match["d"] or 1),
            int(match["h"] or 0),
            int(match["mi"] or 0),
            int(match["s"] or 0),
            int(frac.ljust(6, "0")) if frac else 0,
        )
    except ValueError:
        return None, False
    if match["tz"]:
        zone = parse_offset(match["tz"])
        if zone is None:
            return None, False
        return moment.replace(tzinfo=zone), True
    return moment, False


def localise(moment: datetime, zone: tzinfo) -> datetime:
    """Attach ``zone`` to a naive time (zoneinfo zones resolve their own DST offset)."""
    return moment.replace(tzinfo=zone)


def parse_code(text: str, d: Delimiters, codec: str) -> Code:
    """A CWE/CE: identifier, text (the MDC refid), system, and original text (CWE-9)."""
    parts = [leaf(p, d, codec).strip() for p in components(text, d)[:9]]
    parts += [""] * (9 - len(parts))
    original = parts[8] or (parts[4] if parts[5].upper() != "UCUM" else "")
    return Code(parts[0], parts[1], parts[2], original)


def parse_identity(text: str, d: Delimiters, codec: str, source: str) -> DeviceIdentity | None:
    """An EI (OBX-18) or HD (MSH-3) as a device identity; None when it names nothing.

    Handles the forms met in the field: ``id^^universal^EUI-64`` (IHE), ``id^EUI-64``
    (type in the namespace slot) and ``name^universal^type`` (HD).
    """
    parts = [leaf(p, d, codec).strip() for p in components(text, d)]
    parts += [""] * (4 - len(parts))
    if source == "MSH-3":
        namespace, universal, kind = parts[0], parts[1], parts[2]
        if not (namespace or universal):
            return None
        if universal.upper() in _ID_TYPES and not kind:
            return DeviceIdentity(namespace, _ID_TYPES[universal.upper()], source=source)
        scheme = _ID_TYPES.get(kind.upper(), kind or "local")
        return DeviceIdentity(universal or namespace, scheme, namespace, source=source)
    entity, namespace, universal, kind = parts[0], parts[1], parts[2], parts[3]
    if not (entity or universal):
        return None
    if not kind and namespace.upper() in _ID_TYPES and not universal:
        return DeviceIdentity(entity, _ID_TYPES[namespace.upper()], source=source)
    scheme = _ID_TYPES.get(kind.upper(), kind or "local")
    ident = entity or universal
    authority = universal if universal != ident else ""
    return DeviceIdentity(ident, scheme, namespace, authority, source=source)


def parse_number(text: str) -> float | None:
    """A NM value as a float; None unless the whole text is a finite decimal number."""
    text = text.strip()
    if not text or len(text) > 40:
        return None
    body = text[1:] if text[0] in "+-" else text
    if not body or not all(c.isdigit() or c == "." for c in body) or body.count(".") > 1:
        return None
    if body == ".":
        return None
    return float(text)
