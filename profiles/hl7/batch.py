"""Splitting HL7 batch files (FHS/BHS ... BTS/FTS) and back-to-back messages.

Each message comes back as the exact bytes it had in the input, terminators included,
so what is stored is what was received.
"""

from __future__ import annotations

import re

_TERMINATOR = re.compile(rb"\r\n|\r|\n")
_HEADERS = frozenset({b"FHS", b"BHS", b"MSH"})
_TRAILERS = frozenset({b"BTS", b"FTS"})
_BOM = b"\xef\xbb\xbf"


class BatchError(ValueError):
    """The envelope is malformed; ``reason`` names the segment position, never content."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def is_batch(raw: bytes) -> bool:
    """True for FHS/BHS envelopes and for more than one MSH in a row.

    Every message that arrives is asked this, so the scan is kept to one pass in the
    usual case: searching backwards tests the rare CR first (about twice as fast as a
    forward search over device data full of digits and capitals), and a second pass for
    LF-terminated segments is made only when the message contains an LF at all.
    """
    head = raw.lstrip(b" \t\r\n")
    if head.startswith(_BOM):
        head = head[3:]
    if head[:3] in (b"FHS", b"BHS"):
        return True
    if raw.rfind(b"\rMSH") >= 0:
        return True
    return raw.find(b"\n") >= 0 and raw.rfind(b"\nMSH") >= 0


def _lines(raw: bytes) -> list[tuple[int, int]]:
    """(start, end) of every line, the end including its terminator."""
    spans: list[tuple[int, int]] = []
    pos = 0
    length = len(raw)
    while pos < length:
        match = _TERMINATOR.search(raw, pos)
        end = match.end() if match else length
        spans.append((pos, end))
        pos = end
    return spans


def _kind(line: bytes) -> bytes:
    """The segment name when ``line`` starts with one followed by a separator."""
    name = line[:3]
    if name in _HEADERS or name in _TRAILERS:
        fourth = line[3:4]
        if not fourth or not (fourth.isalnum() or fourth in b"\r\n"):
            return name
        if name in _TRAILERS and fourth in b"\r\n":
            return name
    return b""


def _count(line: bytes, separator: bytes) -> int | None:
    """BTS-1 / FTS-1 as a number, or None when absent or not numeric."""
    parts = line.rstrip(b"\r\n").split(separator)
    if len(parts) > 1 and parts[1].strip().isdigit():
        return int(parts[1])
    return None


class _Splitter:
    """One pass over the lines with the envelope state; raises at the first broken rule."""

    def __init__(self, raw: bytes) -> None:
        self.raw = raw
        self.messages: list[bytes] = []
        self.message_start: int | None = None
        self.in_file = False
        self.file_closed = False
        self.in_batch = False
        self.batches = 0
        self.in_this_batch = 0
        self.separator = b"|"
        self.seen_segment = False

    def close_message(self, end: int) -> None:
        if self.message_start is not None:
            self.messages.append(self.raw[self.message_start : end])
            self.message_start = None
            self.in_this_batch += 1

    def line(self, number: int, start: int, end: int) -> None:
        text = self.raw[start:end]
        if not text.strip():
            return
        if self.file_closed:
            raise BatchError(f"segment {number} follows FTS, which must end the file")
        kind = _kind(text)
        first = not self.seen_segment
        self.seen_segment = True
        if kind in _HEADERS:
            self.separator = text[3:4] or self.separator
        if kind == b"FHS":
            if not first:
                raise BatchError(f"FHS at segment {number}: a file header must come first")
            self.in_file = True
        elif kind == b"BHS":
            self.bhs(number, start)
        elif kind == b"MSH":
            self.close_message(start)
            self.message_start = start
        elif kind == b"BTS":
            self.bts(number, start, text)
        elif kind == b"FTS":
            self.fts(number, start, text)
        elif self.message_start is None:
            raise BatchError(f"segment {number} is outside any message (no MSH before it)")

    def bhs(self, number: int, start: int) -> None:
        if self.in_batch:
            raise BatchError(f"BHS at segment {number} opens a batch inside an open batch")
        if (self.messages or self.message_start is not None) and not self.batches:
            raise BatchError(f"BHS at segment {number} follows messages outside a batch")
        self.close_message(start)
        self.in_batch = True
        self.batches += 1
        self.in_this_batch = 0

    def bts(self, number: int, start: int, text: bytes) -> None:
        if not self.in_batch:
            raise BatchError(f"BTS at segment {number} closes a batch that was never opened")
        self.close_message(start)
        self.in_batch = False
        declared = _count(text, self.separator)
        if declared is not None and declared != self.in_this_batch:
            raise BatchError(
                f"BTS at segment {number} declares {declared} messages, "
                f"the batch holds {self.in_this_batch}"
            )

    def fts(self, number: int, start: int, text: bytes) -> None:
        if not self.in_file:
            raise BatchError(f"FTS at segment {number} closes a file that was never opened")
        if self.in_batch:
            raise BatchError(f"FTS at segment {number} arrives before the open batch's BTS")
        self.close_message(start)
        self.file_closed = True
        declared = _count(text, self.separator)
        if declared is not None and declared != self.batches:
            raise BatchError(
                f"FTS at segment {number} declares {declared} batches, the file holds "
                f"{self.batches}"
            )

    def finish(self) -> list[bytes]:
        self.close_message(len(self.raw))
        if not self.seen_segment:
            raise BatchError("no segments in input")
        if self.in_batch:
            raise BatchError("batch is not closed by BTS")
        if self.in_file and not self.file_closed:
            raise BatchError("file is not closed by FTS")
        return self.messages


def split_batch(raw: bytes) -> list[bytes]:
    """The messages of a batch, file or run of messages, each exactly as received.

    A single plain message yields itself. An empty but well-formed batch yields [].
    Raises BatchError for a broken envelope (nested or misplaced headers, segments
    outside a message, missing or miscounting trailers).
    """
    splitter = _Splitter(raw)
    begin = 3 if raw.startswith(_BOM) else 0
    for number, (start, end) in enumerate(_lines(raw), start=1):
        splitter.line(number, max(start, begin), end)
    return splitter.finish()
