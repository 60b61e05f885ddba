"""HL7 v2 delimiters as declared by MSH-1 and MSH-2, and the rules that make them valid."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

SEGMENT_TERMINATOR = "\r"


@dataclass(frozen=True, slots=True)
class Delimiters:
    """The separators one message uses; ACKs are written with the same ones."""

    field: str = "|"
    component: str = "^"
    repetition: str = "~"
    escape: str = "\\"
    subcomponent: str = "&"
    truncation: str = ""

    @property
    def encoding_characters(self) -> str:
        """MSH-2 as it must be written back (4 characters, 5 with a truncation character)."""
        return self.component + self.repetition + self.escape + self.subcomponent + self.truncation


DEFAULT_DELIMITERS = Delimiters()


class DelimiterError(ValueError):
    """MSH-1/MSH-2 break the standard's rules; the reason names the rule, never the data."""

    def __init__(self, reason: str, field: int) -> None:
        super().__init__(reason)
        self.reason = reason
        self.field = field


_cache: dict[tuple[str, str, bool], Delimiters | DelimiterError] = {}


def _usable(char: str) -> bool:
    """A delimiter must be visible ASCII punctuation so it can never be confused with data."""
    return "!" <= char <= "~" and not char.isalnum()


def _build(field: str, msh2: str, truncation_allowed: bool) -> Delimiters:
    if not _usable(field):
        raise DelimiterError("MSH-1 field separator is not an ASCII punctuation character", 1)
    if not msh2:
        raise DelimiterError("MSH-2 encoding characters are missing", 2)
    count = len(msh2)
    if count < 4:
        raise DelimiterError(f"MSH-2 has {count} encoding characters; 4 are required", 2)
    if count > 5:
        raise DelimiterError(f"MSH-2 has {count} encoding characters; at most 5 are allowed", 2)
    if count == 5 and not truncation_allowed:
        raise DelimiterError("MSH-2 has a 5th (truncation) character before HL7 v2.7", 2)
    if not all(_usable(c) for c in msh2):
        raise DelimiterError("MSH-2 contains a character that is not ASCII punctuation", 2)
    if len(set(msh2 + field)) != count + 1:
        raise DelimiterError("MSH-1/MSH-2 use the same character for two roles", 2)
    found = Delimiters(field, msh2[0], msh2[1], msh2[2], msh2[3], msh2[4] if count == 5 else "")
    return DEFAULT_DELIMITERS if found == DEFAULT_DELIMITERS else found


def read_delimiters(field: str, msh2: str, version: str) -> Delimiters:
    """Delimiters from MSH-1/MSH-2; a 5th character is the truncation character from v2.7 on.

    ``version`` is MSH-12.1; when it is empty a 5th character is accepted, since nothing
    says the message predates v2.7 and MSH-12 being empty is reported on its own.
    Results (and failures) are cached: a sender uses one set of delimiters for years.
    """
    truncation_allowed = len(msh2) == 5 and (not version or version_tuple(version) >= (2, 7))
    key = (field, msh2, truncation_allowed)
    found = _cache.get(key)
    if found is None:
        try:
            found = _build(field, msh2, truncation_allowed)
        except DelimiterError as error:
            found = error
        if len(_cache) < 256:
            _cache[key] = found
    if isinstance(found, DelimiterError):
        raise DelimiterError(found.reason, found.field)
    return found


@lru_cache(maxsize=256)
def version_tuple(version: str) -> tuple[int, ...]:
    """'2.5.1' -> (2, 5, 1); anything unreadable sorts before every real version."""
    parts: list[int] = []
    for part in version.strip().split("."):
        if not part.isdigit():
            return ()
        parts.append(int(part))
    return tuple(parts)
