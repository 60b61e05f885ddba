"""MSH-18 character sets (HL7 table 0211) mapped to Python codecs, and the fallback rule."""

from __future__ import annotations

# HL7 table 0211 values, plus spellings real senders use instead of the table's.
CHARACTER_SETS: dict[str, str] = {
    "ASCII": "ascii",
    "8859/1": "iso8859-1",
    "8859/2": "iso8859-2",
    "8859/3": "iso8859-3",
    "8859/4": "iso8859-4",
    "8859/5": "iso8859-5",
    "8859/6": "iso8859-6",
    "8859/7": "iso8859-7",
    "8859/8": "iso8859-8",
    "8859/9": "iso8859-9",
    "8859/15": "iso8859-15",
    "ISO IR6": "ascii",
    "ISO IR14": "shift_jis",
    "ISO IR87": "iso2022_jp",
    "ISO IR159": "iso2022_jp_2",
    "ISO IR100": "iso8859-1",
    "ISO IR101": "iso8859-2",
    "ISO IR109": "iso8859-3",
    "ISO IR110": "iso8859-4",
    "ISO IR126": "iso8859-7",
    "ISO IR127": "iso8859-6",
    "ISO IR138": "iso8859-8",
    "ISO IR144": "iso8859-5",
    "ISO IR148": "iso8859-9",
    "ISO IR192": "utf-8",
    "UNICODE": "utf-16",
    "UNICODE UTF-8": "utf-8",
    "UNICODE UTF-16": "utf-16",
    "UNICODE UTF-32": "utf-32",
    "GB 18030-2000": "gb18030",
    "KS X 1001": "euc_kr",
    "BIG-5": "big5",
    # Non-standard spellings seen in the field.
    "UTF-8": "utf-8",
    "UTF8": "utf-8",
    "ISO-8859-1": "iso8859-1",
    "ISO-8859-15": "iso8859-15",
    "LATIN1": "iso8859-1",
    "CP1252": "cp1252",
    "WINDOWS-1252": "cp1252",
}

# Codecs in which the ASCII bytes of "MSH|" mean "MSH|": the only ones a byte-level
# header reader can have been right about.
_ASCII_COMPATIBLE_SINGLE_BYTE = frozenset(
    {"iso8859-1", "iso8859-2", "iso8859-3", "iso8859-4", "iso8859-5", "iso8859-6"}
    | {"iso8859-7", "iso8859-8", "iso8859-9", "iso8859-15", "cp1252"}
)
_ASCII_COMPATIBLE_MULTI_BYTE = frozenset(
    {"shift_jis", "iso2022_jp", "iso2022_jp_2", "gb18030", "euc_kr", "big5"}
)

# Codecs whose bytes can contain ASCII delimiter values inside a multi-byte character,
# so a message must be decoded before it is split.
SPLIT_AFTER_DECODING = frozenset({"shift_jis", "gb18030", "big5"})


def codec_for(character_set: str) -> str | None:
    """The Python codec for one MSH-18 value, or None when it is not in the table."""
    return CHARACTER_SETS.get(character_set.strip().upper())


def resolve_codec(raw: bytes, character_set: str) -> str:
    """The codec to read ``raw`` with, given MSH-18's first repetition (may be empty).

    A declared character set wins when the bytes agree with it. Otherwise (no MSH-18,
    an unknown value, or bytes that contradict it): ASCII if the bytes are ASCII,
    UTF-8 if they are valid UTF-8, else cp1252 (latin-1 when cp1252 cannot decode them).
    Pure-ASCII messages never pay for more than ``bytes.isascii``.
    """
    declared = codec_for(character_set) if character_set else None
    if declared is not None:
        if declared in _ASCII_COMPATIBLE_SINGLE_BYTE or declared in _ASCII_COMPATIBLE_MULTI_BYTE:
            return declared
        if raw.isascii():
            return declared if declared in ("ascii", "utf-8") else "ascii"
        if declared == "utf-8" and _is_utf8(raw):
            return declared
    elif raw.isascii():
        return "ascii"
    if _is_utf8(raw):
        return "utf-8"
    try:
        raw.decode("cp1252")
    except UnicodeDecodeError:
        return "iso8859-1"
    return "cp1252"


def _is_utf8(raw: bytes) -> bool:
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True
