"""Control ids for the messages the engine itself writes (ACKs): unique and short."""

from __future__ import annotations

import string

_ALPHABET = string.digits + string.ascii_uppercase


def _base36(n: int) -> str:
    out = ""
    while True:
        n, r = divmod(n, 36)
        out = _ALPHABET[r] + out
        if n == 0:
            return out


class ControlIdSource:
    """`<prefix><counter>` ids that fit MSH-10's 20 characters in every version.

    The prefix is the start time in base 36, so ids from one run never repeat those of an
    earlier run; the counter keeps them ordered within the run.
    """

    def __init__(self, start_seconds: float, prefix: str = "IL") -> None:
        self._prefix = prefix + _base36(int(start_seconds))
        self._counter = 0

    def __call__(self) -> str:
        self._counter += 1
        return f"{self._prefix}{self._counter}"
