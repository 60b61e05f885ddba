"""MLLP framing as a sans-IO codec: bytes in, frozen events out, no sockets.

A frame is ``SB payload EB CR`` (0x0B ... 0x1C 0x0D). The decoder is lenient the way
real senders need: an EB without its CR still ends a frame, a new SB inside a frame
abandons the partial one, and bytes outside frames are reported as junk (with a bounded
head, so a flood costs no memory).

The event list is independent of how the stream is split into chunks: feeding a stream
whole or one byte at a time, then calling :meth:`Decoder.close`, yields equal lists.
Only *when* an event is returned may differ, never which events or in what order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final, TypeAlias

SB: Final = b"\x0b"
EB: Final = b"\x1c"
CR: Final = b"\r"
_CR_BYTE: Final = 0x0D

JUNK_HEAD_BYTES: Final = 256
"""Bytes of a junk run kept for diagnostics; the rest is only counted."""

FRAME_HEAD_BYTES: Final = 64 * 1024
"""Bytes of a refused or broken frame kept, enough to salvage MSH-10 for a NAK."""

DEFAULT_MAX_FRAME_BYTES: Final = 16 * 1024 * 1024


def encode(payload: bytes) -> bytes:
    """Wrap one payload in an MLLP frame."""
    return SB + payload + EB + CR


@dataclass(frozen=True, slots=True)
class Frame:
    """One complete frame body."""

    payload: bytes


@dataclass(frozen=True, slots=True)
class JunkDiscarded:
    """Bytes outside any frame; ``data`` is the first 256 bytes of a run of ``size``.

    A run is reported once, when it ends: at the next start block or at close.
    """

    data: bytes
    size: int


@dataclass(frozen=True, slots=True)
class FrameAbandoned:
    """A start block arrived inside a frame: the sender gave up on the partial frame.

    ``head`` is its first ``min(64 KiB, max_frame_bytes)`` bytes, ``size`` its length.
    """

    head: bytes
    size: int


@dataclass(frozen=True, slots=True)
class FrameTooLarge:
    """The frame body grew past ``limit``; the decoder is finished after this event.

    ``head`` is the first ``min(64 KiB, limit)`` bytes of the body, for a NAK.
    """

    head: bytes
    limit: int


@dataclass(frozen=True, slots=True)
class ClosedMidFrame:
    """The stream ended inside a frame of ``size`` bytes (``head`` as for abandoned)."""

    head: bytes
    size: int


Event: TypeAlias = Frame | JunkDiscarded | FrameAbandoned | FrameTooLarge | ClosedMidFrame


class Decoder:
    """Turns a byte stream into MLLP events.

    Each byte is searched once (``bytes.find`` over the new chunk only), and a frame
    that arrives in one chunk is sliced out without an intermediate buffer.

    A frame is returned as soon as its EB arrives; whether the next byte is the CR of
    the trailer (consumed) or the start of something else is decided when it arrives.
    A sender that ends frames with a bare EB is therefore answered without delay.
    """

    __slots__ = (
        "_after_eb",
        "_body",
        "_finished",
        "_head_limit",
        "_in_frame",
        "_junk_head",
        "_junk_size",
        "max_frame_bytes",
    )

    def __init__(self, max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES) -> None:
        if max_frame_bytes < 1:
            raise ValueError(f"max_frame_bytes must be positive, got {max_frame_bytes}")
        self.max_frame_bytes = max_frame_bytes
        self._head_limit = min(FRAME_HEAD_BYTES, max_frame_bytes)
        self._body = bytearray()
        self._in_frame = False
        self._after_eb = False
        self._junk_head = bytearray()
        self._junk_size = 0
        self._finished = False

    @property
    def in_frame(self) -> bool:
        """True between a start block and its end block."""
        return self._in_frame

    @property
    def frame_bytes(self) -> int:
        """Bytes of the unfinished frame received so far."""
        return len(self._body)

    @property
    def junk_pending(self) -> int:
        """Size of the current junk run, not reported yet because it has not ended."""
        return self._junk_size

    @property
    def finished(self) -> bool:
        """True after close() or a FrameTooLarge: every later feed returns []."""
        return self._finished

    def feed(self, data: bytes) -> list[Event]:
        """Consume the next chunk of the stream and return the events it completes."""
        if self._finished or not data:
            return []
        if type(data) is not bytes:
            data = bytes(data)
        events: list[Event] = []
        pos = 0
        end = len(data)
        while pos < end:
            if not self._in_frame:
                if self._after_eb:
                    self._after_eb = False
                    if data[pos] == _CR_BYTE:
                        pos += 1
                        continue
                start = data.find(SB, pos)
                if start == -1:
                    self._add_junk(data, pos, end)
                    break
                if start > pos:
                    self._add_junk(data, pos, start)
                if self._junk_size:
                    events.append(self._take_junk())
                self._in_frame = True
                pos = start + 1
            else:
                pos = self._feed_in_frame(data, pos, end, events)
                if self._finished:
                    break
        return events

    def close(self) -> list[Event]:
        """End of stream: report a pending junk run or the unfinished frame."""
        if self._finished:
            return []
        self._finished = True
        if self._in_frame:
            body = self._body
            self._body = bytearray()
            return [ClosedMidFrame(bytes(body[: self._head_limit]), len(body))]
        if self._junk_size:
            return [self._take_junk()]
        return []

    def _feed_in_frame(self, data: bytes, pos: int, end: int, events: list[Event]) -> int:
        """Consume frame bytes from ``data[pos:end]``; return the next position."""
        eb = data.find(EB, pos)
        stop = end if eb == -1 else eb
        sb = data.find(SB, pos, stop)
        if sb != -1:
            stop = sb
        size = len(self._body) + stop - pos
        if size > self.max_frame_bytes:
            head = bytes(self._body[: self._head_limit])
            if len(head) < self._head_limit:
                head += data[pos : pos + self._head_limit - len(head)]
            events.append(FrameTooLarge(head, self.max_frame_bytes))
            self._body = bytearray()
            self._in_frame = False
            self._finished = True
            return end
        if sb != -1:
            self._body += data[pos:sb]
            body = self._body
            self._body = bytearray()
            events.append(FrameAbandoned(bytes(body[: self._head_limit]), len(body)))
            return sb + 1
        if eb == -1:
            self._body += data[pos:end]
            return end
        if self._body:
            self._body += data[pos:eb]
            payload = bytes(self._body)
            self._body = bytearray()
        else:
            payload = data[pos:eb]
        events.append(Frame(payload))
        self._in_frame = False
        self._after_eb = True
        return eb + 1

    def _add_junk(self, data: bytes, start: int, stop: int) -> None:
        self._junk_size += stop - start
        room = JUNK_HEAD_BYTES - len(self._junk_head)
        if room > 0:
            self._junk_head += data[start : min(stop, start + room)]

    def _take_junk(self) -> JunkDiscarded:
        event = JunkDiscarded(bytes(self._junk_head), self._junk_size)
        self._junk_head = bytearray()
        self._junk_size = 0
        return event
