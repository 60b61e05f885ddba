"""Field paths as interface analysts write them: ``OBX[2]-5[1].1.2``, 1-based everywhere."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

_PATH = re.compile(
    r"(?P<segment>[A-Z][A-Z0-9]{2})(?:\[(?P<segment_index>\d+)\])?"
    r"-(?P<field>\d+)(?:\[(?P<repetition>\d+)\])?"
    r"(?:\.(?P<component>\d+)(?:\.(?P<subcomponent>\d+))?)?"
)
_MAX_INDEX = 100_000


class PathError(ValueError):
    """A path that does not follow ``SEG[n]-F[r].C.S``; the message says what is wrong."""


@dataclass(frozen=True, slots=True)
class Path:
    """One location in a message; ``None`` means "not given" (first, or all for get_all)."""

    segment: str
    field: int
    segment_index: int | None = None
    repetition: int | None = None
    component: int | None = None
    subcomponent: int | None = None

    @staticmethod
    def parse(text: str) -> Path:
        """Parse ``PID-3``, ``PID-3.1.2``, ``PID-3[2].1``, ``OBX[2]-5``, ``MSH-9.2``."""
        if not isinstance(text, str):
            raise PathError("a path must be a string")
        return _parse(text)

    def __str__(self) -> str:
        out = self.segment
        if self.segment_index is not None:
            out += f"[{self.segment_index}]"
        out += f"-{self.field}"
        if self.repetition is not None:
            out += f"[{self.repetition}]"
        if self.component is not None:
            out += f".{self.component}"
        if self.subcomponent is not None:
            out += f".{self.subcomponent}"
        return out


def _explain(text: str) -> str:
    """Name the most likely mistake, so a config error points at the fix."""
    if not text:
        return "empty path"
    head = text[:3]
    if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", head):
        return "a path starts with a 3-character segment name in capitals, e.g. PID-3"
    rest = text[3:]
    if rest.startswith("[") and not re.match(r"\[\d+\]", rest):
        return "a segment index is a number in brackets, e.g. OBX[2]-5"
    rest = re.sub(r"^\[\d+\]", "", rest)
    if not rest:
        return "a path needs a field number, e.g. PID-3"
    if rest[0] in "._":
        return "separate segment and field with '-', e.g. PID-3.1 (not PID.3.1)"
    if rest[0] != "-":
        return "expected '-' and a field number after the segment name"
    return "expected SEG[n]-F[r].C.S with positive numbers, e.g. PID-3[2].1"


@lru_cache(maxsize=1024)
def _parse(text: str) -> Path:
    match = _PATH.fullmatch(text.strip())
    if match is None:
        raise PathError(f"bad path {text[:40]!r}: {_explain(text.strip())}")
    numbers = {
        key: int(value)
        for key, value in match.groupdict().items()
        if key != "segment" and value is not None
    }
    for key, value in numbers.items():
        if not 1 <= value <= _MAX_INDEX:
            raise PathError(f"bad path {text[:40]!r}: {key} must be between 1 and {_MAX_INDEX}")
    return Path(match["segment"], **numbers)
