"""HL7 v2 escape sequences (chapter 2.7): decoding values read, encoding values written."""

from __future__ import annotations

import re
from functools import lru_cache

from profiles.hl7.delimiters import DEFAULT_DELIMITERS, Delimiters

# Formatting commands (FT data) rendered as plain text: line breaks stay line breaks,
# layout hints (fill, indent, highlight) carry no meaning without a renderer.
_FORMATTING = {".br": "\n", ".ce": "\n", ".fi": "", ".nf": "", "H": "", "N": ""}
_FORMATTING_PREFIXES = (".in", ".ti", ".sk")


def unescape(text: str, delimiters: Delimiters, codec: str = "iso8859-1") -> str:
    """Decode escape sequences in one value; unknown or malformed sequences stay as written.

    ``codec`` decodes ``\\Xhh..\\`` hex data, which is in the message's own character set.
    """
    esc = delimiters.escape
    if esc not in text:
        return text
    out: list[str] = []
    pos = 0
    length = len(text)
    while pos < length:
        start = text.find(esc, pos)
        if start < 0:
            out.append(text[pos:])
            break
        end = text.find(esc, start + 1)
        if end < 0:
            out.append(text[pos:])
            break
        out.append(text[pos:start])
        out.append(_decode_sequence(text[start + 1 : end], delimiters, codec, esc))
        pos = end + 1
    return "".join(out)


def _decode_sequence(body: str, d: Delimiters, codec: str, esc: str) -> str:
    simple = {"F": d.field, "S": d.component, "T": d.subcomponent, "R": d.repetition, "E": esc}
    if body in simple:
        return simple[body]
    if body == "P" and d.truncation:
        return d.truncation
    if body in _FORMATTING:
        return _FORMATTING[body]
    if body.startswith(".sp"):
        count = body[3:].strip()
        if not count:
            return "\n"
        if count.isdigit():
            return "\n" * min(int(count), 100)
    if body.startswith(_FORMATTING_PREFIXES):
        return ""
    if body[:1] == "X" and len(body) > 1 and len(body) % 2 == 1:
        try:
            return bytes.fromhex(body[1:]).decode(codec, "replace")
        except (ValueError, LookupError):
            pass
    return esc + body + esc


def _table(delimiters: Delimiters) -> dict[int, str]:
    esc = delimiters.escape
    table = {
        ord(esc): f"{esc}E{esc}",
        ord(delimiters.field): f"{esc}F{esc}",
        ord(delimiters.component): f"{esc}S{esc}",
        ord(delimiters.subcomponent): f"{esc}T{esc}",
        ord(delimiters.repetition): f"{esc}R{esc}",
        ord("\r"): f"{esc}X0D{esc}",
        ord("\n"): f"{esc}X0A{esc}",
    }
    if delimiters.truncation:
        table[ord(delimiters.truncation)] = f"{esc}P{esc}"
    return table


Escaper = tuple[dict[int, str], re.Pattern[str]]
"""A translation table and a pattern finding the characters it changes."""


def _escaper_for(delimiters: Delimiters) -> Escaper:
    table = _table(delimiters)
    return table, re.compile("[" + re.escape("".join(chr(code) for code in table)) + "]")


_escaper = lru_cache(maxsize=64)(_escaper_for)
_DEFAULT_ESCAPER = _escaper_for(DEFAULT_DELIMITERS)


def escape(text: str, delimiters: Delimiters) -> str:
    """Encode ``text`` so it can sit in one (sub-)component without changing the structure."""
    if text.isalnum() or not text:  # the common case: ids and codes need no escaping
        return text
    table, special = (_DEFAULT_ESCAPER if delimiters is DEFAULT_DELIMITERS
                      else _escaper(delimiters))
    return text.translate(table) if special.search(text) else text
