"""A mutable HL7 v2 message for transformers, lazy so untouched segments cost nothing.

Each segment is kept as the text it arrived with until an edit touches it; only then is it
split into fields. ``encode`` joins untouched segments exactly as written, so a transformer
that sets two PID fields of a 60-segment PCD-01 message re-splits one segment.

Reading follows ``Message`` exactly (see ``profiles.hl7.message``): ``get`` decodes escape
sequences at leaves and returns composites as written; a field path without a repetition
index means its first repetition for ``get`` and every repetition for ``get_all``.

Writing (``set``, ``delete``) addresses one location:

- the segment is the first of its name unless indexed (``OBX[3]-5``); ``set`` on a segment
  the message lacks appends it at the end (``missing="append"``, the default), or skips,
  or raises ``EditError``;
- a path that stops at the field without a repetition index (``PID-8``) means the whole
  field, all repetitions; with a component (``PID-3.1``) the first repetition;
- values are escaped with the message's delimiters (control characters as ``\\Xhh\\``),
  so any text fits in one leaf and reads back unchanged;
- trailing empty repetitions, components and sub-components of an edited field are dropped.

MSH-1 and MSH-2 hold the delimiters and cannot be edited. ``encode`` writes the message in
the character set MSH-18 names (re-read at encode time if MSH-18 was set); a message that
declares no character set is written in its detected codec, or UTF-8 when an edit added
characters that codec cannot hold.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Literal, Protocol

from profiles.hl7.charsets import codec_for
from profiles.hl7.delimiters import Delimiters
from profiles.hl7.escape import escape
from profiles.hl7.message import Message, Segment, component_value, select_part, value_at
from profiles.hl7.path import Path

MissingSegment = Literal["append", "skip", "error"]

_NONE: list[int] = []

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class FieldReader(Protocol):
    """What a filter needs: ``Message`` and ``EditableMessage`` both provide it."""

    def get(self, path: str | Path) -> str:
        """The value at ``path`` ('' when absent)."""
        ...

    def get_all(self, path: str | Path) -> list[str]:
        """Every value at ``path``."""
        ...


class EditError(ValueError):
    """An edit the message cannot take; the text names paths and rules, never values."""


def _path(path: str | Path) -> Path:
    return path if isinstance(path, Path) else Path.parse(path)


def _trimmed(parts: list[str]) -> list[str]:
    end = len(parts)
    while end > 1 and not parts[end - 1]:
        end -= 1
    return parts[:end]


def _put(text: str, separator: str, index: int, value: str) -> str:
    """``text`` with its ``index``-th (1-based) part replaced, padded and trimmed."""
    return _put_parts(text, separator, ((index, value),))


def _put_parts(text: str, separator: str, values: Iterable[tuple[int, str]]) -> str:
    """``text`` with each (index, value) part replaced, padded and trimmed once: the same as
    one ``_put`` after another, since trimming only drops what padding would restore."""
    parts = text.split(separator)
    for index, value in values:
        if index > len(parts):
            parts.extend([""] * (index - len(parts)))
        parts[index - 1] = value
    return separator.join(_trimmed(parts))


class EditableMessage:
    """A message that transformers change in place; see the module docstring for the rules."""

    __slots__ = ("_by_name", "_charset", "_codec", "_names", "_segments", "_split", "delimiters")

    def __init__(
        self, segments: Iterable[str], delimiters: Delimiters, codec: str, charset: str = ""
    ) -> None:
        """Segments as written (no terminators); ``charset`` is MSH-18's first repetition."""
        self.delimiters = delimiters
        self._codec = codec
        # MSH-18 as the codec was chosen from it; None: as MSH-18 reads until it is edited.
        self._charset: str | None = charset
        texts = list(segments)
        field = delimiters.field
        self._names = [text.partition(field)[0] for text in texts]
        self._segments: list[str | list[str]] = [*texts]
        self._split: dict[int, list[str]] = {}  # fields of untouched segments already read
        self._by_name: dict[str, list[int]] | None = None

    @classmethod
    def from_message(cls, message: Message) -> EditableMessage:
        """An editable copy of ``message``, with its delimiters and character set."""
        new = cls(message.segment_texts(), message.delimiters, message.codec)
        new._charset = None  # the codec is MSH-18's: read it only if an edit changes it
        return new

    @classmethod
    def parse(cls, raw: bytes | str) -> EditableMessage:
        """Parse ``raw`` as ``Message.parse`` does; raises HeaderError for an unreadable MSH."""
        return cls.from_message(Message.parse(raw))

    def __repr__(self) -> str:
        return f"<EditableMessage {len(self._segments)} segments>"

    def copy(self) -> EditableMessage:
        """An independent copy; untouched segments are shared, since strings never change."""
        new = object.__new__(EditableMessage)
        new.delimiters = self.delimiters
        new._codec = self._codec
        new._charset = self._charset
        new._segments = [s if type(s) is str else list(s) for s in self._segments]
        new._names = list(self._names)
        new._split = dict(self._split)
        new._by_name = self._by_name
        return new

    # -- reading -----------------------------------------------------------------------

    def segment_names(self) -> list[str]:
        """Segment names in order."""
        return list(self._names)

    def count(self, name: str) -> int:
        """How many segments are named ``name``."""
        return self._names.count(name)

    def segments(self, name: str | None = None) -> list[Segment]:
        """Read-only snapshots of the segments (all, or those named ``name``) as they are now."""
        d = self.delimiters
        return [
            Segment(self._segment_text(i), d)
            for i, n in enumerate(self._names)
            if name is None or n == name
        ]

    def get(self, path: str | Path) -> str:
        """The value at ``path`` ('' when absent), exactly as ``Message.get`` reads it."""
        path = _path(path)
        raw = self._raw(path)
        return "" if raw is None else value_at(raw, path, self.delimiters, self._codec)

    def get_all(self, path: str | Path) -> list[str]:
        """Every value at ``path``: all matching segments and repetitions unless indexed."""
        path = _path(path)
        indices = self._indices(path.segment)
        if path.segment_index is not None:
            indices = indices[path.segment_index - 1 : path.segment_index]
        d, codec = self.delimiters, self._codec
        values: list[str] = []
        for i in indices:
            reps = self._repetitions(i, path.segment, path.field)
            if path.repetition is not None:
                reps = reps[path.repetition - 1 : path.repetition]
            values += [value_at(rep, path, d, codec) for rep in reps]
        return values

    def get_raw(self, path: str | Path) -> str:
        """The text at ``path`` as written, escape sequences and separators kept."""
        path = _path(path)
        raw = self._raw(path)
        if raw is None:
            return ""
        if path.segment == "MSH" and path.field in (1, 2):
            return raw if (path.component or 1, path.subcomponent or 1) == (1, 1) else ""
        d = self.delimiters
        component = select_part(raw, d.component, path.component)
        return select_part(component, d.subcomponent, path.subcomponent)

    def mentioning(self, name: str, text: str) -> list[int]:
        """Numbers (1-based, among segments named ``name``) of those whose text as written
        contains ``text``: a cheap first pass before reading fields one by one."""
        segments, field = self._segments, self.delimiters.field
        found = []
        for k, i in enumerate(self._indices(name), 1):
            segment = segments[i]
            if text in (segment if type(segment) is str else field.join(segment)):
                found.append(k)
        return found

    def locations(self, path: str | Path) -> list[Path]:
        """Each single place ``path`` covers now, one per segment and repetition.

        A segment or repetition index in ``path`` pins that level; otherwise every segment
        of the name and every repetition present is listed, e.g. ``OBX-3`` gives
        ``OBX[1]-3[1]``, ``OBX[2]-3[1]``, ``OBX[2]-3[2]``, ...
        """
        path = _path(path)
        indices = self._indices(path.segment)
        if path.segment_index is None:
            numbers: Iterable[int] = range(1, len(indices) + 1)
        else:
            numbers = [path.segment_index] if path.segment_index <= len(indices) else []
        name, field, c, s = path.segment, path.field, path.component, path.subcomponent
        out = []
        for k in numbers:
            if path.repetition is not None:
                out.append(Path(name, field, k, path.repetition, c, s))
                continue
            count = len(self._repetitions(indices[k - 1], name, field))
            out.extend(Path(name, field, k, r, c, s) for r in range(1, count + 1))
        return out

    @property
    def text(self) -> str:
        """The message as text, every segment terminated by CR."""
        field = self.delimiters.field
        texts = [s if type(s) is str else field.join(s) for s in self._segments]
        return "\r".join(texts) + "\r" if texts else ""

    @property
    def codec(self) -> str:
        """The codec ``encode`` uses: MSH-18's, re-read if an edit changed MSH-18."""
        if self._charset is None:  # MSH-18 never edited
            return self._codec
        charset = self.get("MSH-18")
        if charset == self._charset:
            return self._codec
        return codec_for(charset) or ("ascii" if self.text.isascii() else "utf-8")

    def encode(self) -> bytes:
        """The message as bytes in its character set; raises EditError if a value cannot fit."""
        text = self.text
        codec = self.codec
        try:
            return text.encode(codec)
        except UnicodeEncodeError as exc:
            charset = self.get("MSH-18")
            if codec_for(charset) != codec:  # nothing declared it: pick what readers detect
                return text.encode("utf-8")
            number = text.count("\r", 0, exc.start)
            name = self._names[number] if number < len(self._names) else "?"
            raise EditError(
                f"segment {number + 1} ({name}) holds a character that MSH-18's "
                f"character set ({codec}) cannot encode"
            ) from None

    # -- writing -----------------------------------------------------------------------

    def set(self, path: str | Path, value: str, *, missing: MissingSegment = "append") -> None:
        """Write ``value``, escaped, at ``path``; ``missing``: what to do without the segment."""
        path = _path(path)
        self._write(path, self._escape(value), missing)

    def set_raw(self, path: str | Path, text: str, *, missing: MissingSegment = "append") -> None:
        """Write already-encoded ``text`` at ``path``, keeping escape sequences as they are.

        Separators that have no place at the path's level (components written into a
        component, say) are escaped, so the message's structure never shifts.
        """
        path = _path(path)
        self._write(path, self._fit(text, path), missing)

    def delete(self, path: str | Path) -> None:
        """Clear what ``path`` addresses; an absent segment or value is left alone."""
        path = _path(path)
        self._refuse_delimiter_fields(path)
        indices = self._indices(path.segment)
        k = path.segment_index or 1
        if k > len(indices):
            return
        whole_field = path.repetition is None and path.component is None
        present = (
            self._field(indices[k - 1], path.segment, path.field)
            if whole_field
            else self.get_raw(path)
        )
        if present:
            self._write(path, "", "skip")

    def recode(
        self,
        path: str | Path,
        code: str,
        system: str | None,
        replacement: tuple[str | None, str | None, str | None],
        *,
        within: Iterable[int] | None = None,
    ) -> int:
        """Give coded values (``code^text^system``, as CE/CWE/CNE write them) new parts.

        Every place ``path`` covers (see ``locations``) whose code (component 1) reads as
        ``code`` and, when ``system`` is given, whose coding system (component 3) reads as
        ``system`` has each part of ``replacement`` (code, text, system) that is not None
        written in, escaped as ``set`` escapes. The result is that of ``get`` and ``set``
        place by place, in one pass over the segments; returns how many places changed.

        ``within`` names the segments to visit (1-based among those of the path's name, as
        ``mentioning`` gives them) for a path without a segment index.
        """
        path = _path(path)
        name, number = path.segment, path.field
        indices = self._indices(name)
        if within is not None:
            if path.segment_index is not None:
                raise ValueError(f"{path}: give a segment index or within, not both")
            numbers: Iterable[int] = [k for k in within if 1 <= k <= len(indices)]
        elif path.segment_index is None:
            numbers = range(1, len(indices) + 1)
        else:
            numbers = [path.segment_index] if path.segment_index <= len(indices) else []
        if name == "MSH" and number in (1, 2):  # a delimiter field: ``get`` and ``set`` rules
            return self._recode_each(path, numbers, code, system, replacement)
        parts = [(c, self._escape(v)) for c, v in enumerate(replacement, 1) if v is not None]
        if not parts:
            return 0
        changed = 0
        for k in numbers:
            index = indices[k - 1]
            reps = self._repetitions(index, name, number)
            for r in range(1, len(reps) + 1) if path.repetition is None else [path.repetition]:
                text = reps[r - 1] if r <= len(reps) else ""
                if self._has_code(text, code, system):
                    text = _put_parts(text, self.delimiters.component, parts)
                    self._put_repetition(index, name, number, r, text)
                    reps = self._repetitions(index, name, number)
                    changed += 1
        return changed

    def _has_code(self, text: str, code: str, system: str | None) -> bool:
        """One repetition's code (and system, when given) read as ``get`` reads them."""
        d, codec = self.delimiters, self._codec
        return component_value(text, 1, d, codec) == code and (
            not system or component_value(text, 3, d, codec) == system)

    def _put_repetition(self, index: int, name: str, number: int, r: int, text: str) -> None:
        """Write ``text`` (encoded) as repetition ``r`` of field ``number`` of segment ``index``."""
        segment, position = self._fields_for_edit(index, name, number)
        segment[position] = _put(segment[position], self.delimiters.repetition, r, text)

    def _recode_each(
        self,
        path: Path,
        numbers: Iterable[int],
        code: str,
        system: str | None,
        replacement: tuple[str | None, str | None, str | None],
    ) -> int:
        """``recode`` spelled out with ``get`` and ``set``, for MSH-1 and MSH-2."""
        changed = 0
        name, number = path.segment, path.field
        for k in numbers:
            count = len(self._repetitions(self._indices(name)[k - 1], name, number))
            for r in range(1, count + 1) if path.repetition is None else [path.repetition]:
                if self.get(Path(name, number, k, r, 1)) != code:
                    continue
                if system and self.get(Path(name, number, k, r, 3)) != system:
                    continue
                values = [(c, v) for c, v in enumerate(replacement, 1) if v is not None]
                for component, value in values:
                    self.set(Path(name, number, k, r, component), value)
                changed += bool(values)
        return changed

    def drop_segments(self, names: Iterable[str]) -> None:
        """Remove every segment named in ``names``; MSH cannot be dropped."""
        drop = {names} if isinstance(names, str) else set(names)
        if "MSH" in drop:
            raise EditError("MSH cannot be dropped")
        self._retain([n not in drop for n in self._names])

    def keep_segments(self, names: Iterable[str]) -> None:
        """Remove every segment not named in ``names``; MSH is always kept."""
        keep = {names, "MSH"} if isinstance(names, str) else {*names, "MSH"}
        self._retain([n in keep for n in self._names])

    # -- internals ---------------------------------------------------------------------

    def _retain(self, flags: list[bool]) -> None:
        self._segments = [s for s, keep in zip(self._segments, flags, strict=True) if keep]
        self._names = [n for n, keep in zip(self._names, flags, strict=True) if keep]
        self._split = {}
        self._by_name = None

    def _segment_text(self, index: int) -> str:
        segment = self._segments[index]
        return segment if type(segment) is str else self.delimiters.field.join(segment)

    def _indices(self, name: str) -> list[int]:
        """Positions of the segments named ``name`` (do not mutate the list returned)."""
        by_name = self._by_name
        if by_name is None:
            by_name = self._by_name = {}
            for i, n in enumerate(self._names):
                by_name.setdefault(n, []).append(i)
        return by_name.get(name, _NONE)

    def _field(self, index: int, name: str, number: int) -> str:
        """Field ``number`` of segment ``index`` as written; MSH-1 is the separator itself.

        An untouched segment is split once and its fields kept in ``_split``.
        """
        if name == "MSH":
            if number == 1:
                return self.delimiters.field
            number -= 1
        parts = self._segments[index]
        if type(parts) is str:
            split = self._split.get(index)
            if split is None:
                split = self._split[index] = parts.split(self.delimiters.field)
            parts = split
        return parts[number] if number < len(parts) else ""

    def _repetitions(self, index: int, name: str, number: int) -> list[str]:
        text = self._field(index, name, number)
        if name == "MSH" and number in (1, 2):
            return [text]
        return text.split(self.delimiters.repetition)

    def _raw(self, path: Path) -> str | None:
        """The repetition ``path`` names, as written; None when segment or repetition is absent."""
        indices = self._indices(path.segment)
        k = path.segment_index or 1
        if k > len(indices):
            return None
        reps = self._repetitions(indices[k - 1], path.segment, path.field)
        r = path.repetition or 1
        return reps[r - 1] if r <= len(reps) else None

    def _escape(self, value: str) -> str:
        if not isinstance(value, str):
            raise EditError(f"a value must be text, not {type(value).__name__}")
        text = escape(value, self.delimiters)
        if not text.isprintable() and _CONTROL.search(text):  # isprintable: a quick no
            esc = self.delimiters.escape
            text = _CONTROL.sub(lambda m: f"{esc}X{ord(m.group()):02X}{esc}", text)
        return text

    def _fit(self, text: str, path: Path) -> str:
        """Escape the separators that would change structure above ``path``'s level."""
        d = self.delimiters
        esc = d.escape
        banned = [(d.field, "F"), ("\r", "X0D"), ("\n", "X0A")]
        if path.subcomponent is not None or path.component is not None:
            banned.append((d.repetition, "R"))
            if path.subcomponent is not None:
                banned += [(d.component, "S"), (d.subcomponent, "T")]
            else:
                banned.append((d.component, "S"))
        elif path.repetition is not None:
            banned.append((d.repetition, "R"))
        for char, code in banned:
            if char in text:
                text = text.replace(char, f"{esc}{code}{esc}")
        return text

    @staticmethod
    def _refuse_delimiter_fields(path: Path) -> None:
        if path.segment == "MSH" and path.field in (1, 2):
            raise EditError(f"{path}: MSH-1 and MSH-2 hold the delimiters and cannot be edited")

    def _locate(self, path: Path, missing: MissingSegment) -> int | None:
        indices = self._indices(path.segment)
        k = path.segment_index or 1
        if k <= len(indices):
            return indices[k - 1]
        if missing == "skip":
            return None
        if missing == "error":
            raise EditError(f"{path}: the message has no such segment")
        if path.segment == "MSH":
            raise EditError(f"{path}: a message has exactly one MSH")
        for _ in range(k - len(indices)):
            self._segments.append([path.segment])
            self._names.append(path.segment)
        self._by_name = None
        return len(self._segments) - 1

    def _fields_for_edit(self, index: int, name: str, number: int) -> tuple[list[str], int]:
        """Segment ``index`` as its editable list of fields, long enough to hold field
        ``number``, and that field's position in the list."""
        if number == 18 and name == "MSH" and self._charset is None:
            self._charset = self.get("MSH-18")  # as it was, for ``codec`` to compare
        segment = self._segments[index]
        if type(segment) is str:
            parts = self._split.pop(index, None)
            segment = self._segments[index] = (
                segment.split(self.delimiters.field) if parts is None else list(parts))
        position = number - 1 if name == "MSH" else number
        if position >= len(segment):
            segment.extend([""] * (position + 1 - len(segment)))
        return segment, position

    def _write(self, path: Path, encoded: str, missing: MissingSegment) -> None:
        self._refuse_delimiter_fields(path)
        index = self._locate(path, missing)
        if index is None:
            return
        d = self.delimiters
        segment, position = self._fields_for_edit(index, path.segment, path.field)
        if path.repetition is None and path.component is None:
            segment[position] = encoded
            return
        repetition = path.repetition or 1
        if path.component is not None:
            reps = segment[position].split(d.repetition)
            current = reps[repetition - 1] if repetition <= len(reps) else ""
            if path.subcomponent is not None:
                components = current.split(d.component)
                c = path.component
                inner = components[c - 1] if c <= len(components) else ""
                encoded = _put(inner, d.subcomponent, path.subcomponent, encoded)
            encoded = _put(current, d.component, path.component, encoded)
        segment[position] = _put(segment[position], d.repetition, repetition, encoded)
