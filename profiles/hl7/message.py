"""A lazy, read-only view of one HL7 v2 message.

Segments are split on first access and fields only for segments that are touched, so a
filter reading three fields of a 60-segment message splits one or two segments.

Values: ``get`` returns the value at the addressed level with escape sequences decoded.
When the addressed element still has structure below it (``PID-3`` of a CX with
components, ``PID-3.4`` of an HD with sub-components) it is returned as written, escape
sequences included, because decoding would make an escaped ``\\S\\`` indistinguishable
from a real component separator. A field without a repetition index means its first
repetition for ``get`` and every repetition for ``get_all``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from profiles.hl7.delimiters import Delimiters
from profiles.hl7.escape import unescape
from profiles.hl7.header import Header, read_header, start_of_msh
from profiles.hl7.path import Path

if TYPE_CHECKING:
    import hl7


class Segment:
    """One segment; its fields are split the first time one is asked for."""

    __slots__ = ("_fields", "delimiters", "name", "text")

    def __init__(self, text: str, delimiters: Delimiters) -> None:
        self.text = text
        self.delimiters = delimiters
        self.name = text.split(delimiters.field, 1)[0]
        self._fields: list[str] | None = None

    def __repr__(self) -> str:
        return f"<Segment {self.name}>"

    def field(self, number: int) -> str:
        """Field ``number`` (1-based) as written; MSH-1 is the field separator itself."""
        fields = self._fields
        if fields is None:
            fields = self._fields = self.text.split(self.delimiters.field)
        if self.name == "MSH":
            if number == 1:
                return self.delimiters.field
            number -= 1
        return fields[number] if 0 < number < len(fields) else ""

    def field_count(self) -> int:
        """Number of fields present (trailing empty ones included as written)."""
        self.field(1)
        assert self._fields is not None
        return len(self._fields) - (0 if self.name == "MSH" else 1)

    def repetitions(self, number: int) -> list[str]:
        """The repetitions of field ``number`` as written (an empty field has one, empty)."""
        text = self.field(number)
        if self.name == "MSH" and number in (1, 2):
            return [text]
        return text.split(self.delimiters.repetition)


def select_part(text: str, separator: str, index: int | None) -> str:
    """Part `index` (1-based) of `text` split on `separator`; all of it for None."""
    if index is None:
        return text
    if separator not in text:
        return text if index == 1 else ""
    parts = text.split(separator)
    return parts[index - 1] if index <= len(parts) else ""


def component_value(text: str, component: int, d: Delimiters, codec: str) -> str:
    """Component ``component`` (1-based) of one repetition's ``text``, as ``value_at`` reads
    a path that stops at a component (outside MSH-1 and MSH-2): decoded unless it has
    sub-components."""
    if d.component in text:
        parts = text.split(d.component, component)  # no further than the one wanted
        text = parts[component - 1] if component <= len(parts) else ""
    elif component != 1:
        return ""
    if d.subcomponent in text or d.escape not in text:
        return text
    return unescape(text, d, codec)


def value_at(text: str, path: Path, d: Delimiters, codec: str) -> str:
    """The value `path` addresses inside one repetition's `text` (see the module docstring:
    decoded at the leaf, as written where structure remains)."""
    if path.segment == "MSH" and path.field in (1, 2):
        deeper = (path.component or 1, path.subcomponent or 1)
        return text if deeper == (1, 1) else ""
    if path.subcomponent is None and path.component is not None:
        return component_value(text, path.component, d, codec)
    text = select_part(text, d.component, path.component)
    text = select_part(text, d.subcomponent, path.subcomponent)
    if path.subcomponent is None and d.subcomponent in text:
        return text
    if path.component is None and d.component in text:
        return text
    return unescape(text, d, codec)


class Message:
    """Read-only access to a message by analyst paths; see the module docstring for values."""

    __slots__ = ("_segments", "_text", "_texts", "codec", "delimiters", "header")

    def __init__(self, text: str, header: Header) -> None:
        self._text = text
        self.header = header
        self.delimiters = header.delimiters
        self.codec = header.codec
        self._texts: tuple[str, ...] | None = None
        self._segments: list[Segment] | None = None

    @classmethod
    def parse(cls, raw: bytes | str) -> Message:
        """View ``raw``; raises HeaderError when its MSH cannot be read.

        Bytes are decoded with MSH-18's character set, or detected (UTF-8, else cp1252)
        when MSH-18 is empty, exactly as ``read_header`` decides.
        """
        if isinstance(raw, str):
            raw = raw.lstrip("\ufeff \t\r\n\x0b\x0c").encode("utf-8", "surrogatepass")
        header = read_header(raw)
        text = raw[start_of_msh(raw) :].decode(header.codec, "replace")
        return cls(text, header)

    @property
    def text(self) -> str:
        """The message with every segment terminated by CR, blank lines dropped."""
        return "".join(text + "\r" for text in self.segment_texts())

    def segment_texts(self) -> tuple[str, ...]:
        """Each segment as written, without its terminator; blank lines dropped."""
        texts = self._texts
        if texts is None:
            text = self._text
            if "\n" in text:
                text = text.replace("\r\n", "\r").replace("\n", "\r")
            texts = self._texts = tuple([s for s in text.split("\r") if s.strip()])
        return texts

    def segments(self, name: str | None = None) -> list[Segment]:
        """All segments in order, or those named ``name``."""
        segments = self._segments
        if segments is None:
            d = self.delimiters
            segments = self._segments = [Segment(s, d) for s in self.segment_texts()]
        if name is None:
            return list(segments)
        return [segment for segment in segments if segment.name == name]

    def get(self, path: str | Path) -> str:
        """The value at ``path`` ('' when absent)."""
        path = path if isinstance(path, Path) else Path.parse(path)
        segments = self.segments(path.segment)
        index = path.segment_index or 1
        if index > len(segments):
            return ""
        repetition = path.repetition or 1
        reps = segments[index - 1].repetitions(path.field)
        if repetition > len(reps):
            return ""
        return self._value(reps[repetition - 1], path)

    def get_all(self, path: str | Path) -> list[str]:
        """Every value at ``path``: all matching segments and repetitions unless indexed."""
        path = path if isinstance(path, Path) else Path.parse(path)
        segments = self.segments(path.segment)
        if path.segment_index is not None:
            segments = segments[path.segment_index - 1 : path.segment_index]
        values: list[str] = []
        for segment in segments:
            reps = segment.repetitions(path.field)
            if path.repetition is not None:
                reps = reps[path.repetition - 1 : path.repetition]
            values.extend(self._value(rep, path) for rep in reps)
        return values

    def _value(self, text: str, path: Path) -> str:
        return value_at(text, path, self.delimiters, self.codec)

    def to_hl7(self) -> hl7.Message:
        """A python-hl7 ``Message`` of the same text, for building or editing."""
        import hl7

        return hl7.parse(self.text)
