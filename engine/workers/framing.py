"""Frames between the engine and its pipeline workers: a 4-byte length, then a pickle.

Sans-IO like the MLLP codec: `encode` is a pure function and `FrameReader` turns bytes in
into objects out, whatever way the bytes were split. Pickle is safe here only because both
ends are this engine's own code, in a parent process and the child it started; nothing
read from the network is ever unpickled.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any

_LENGTH = struct.Struct(">I")
MAX_FRAME_BYTES = 1 << 31
"""A frame longer than this is a broken stream, not a message (the length is 4 bytes)."""


class BrokenStream(Exception):
    """The bytes cannot be frames: the other end is not a pipeline worker (or is broken)."""


def encode(obj: Any) -> bytes:
    """One object as one frame."""
    body = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    if len(body) >= MAX_FRAME_BYTES:
        raise BrokenStream(f"frame of {len(body)} bytes is too large")
    return _LENGTH.pack(len(body)) + body


class FrameReader:
    """Collects bytes and hands back every whole frame's object, in order."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes) -> list[Any]:
        """Objects of the frames completed by `data` (possibly none)."""
        buffer = self._buffer
        buffer += data
        objects = []
        start = 0
        while len(buffer) - start >= _LENGTH.size:
            (length,) = _LENGTH.unpack_from(buffer, start)
            end = start + _LENGTH.size + length
            if len(buffer) < end:
                break
            with memoryview(buffer) as view, view[start + _LENGTH.size:end] as body:
                objects.append(pickle.loads(body))
            start = end
        if start:
            del buffer[:start]
        return objects

    @property
    def pending(self) -> int:
        """Bytes of a frame not yet complete."""
        return len(self._buffer)
