"""Transformer steps as channel files write them, compiled into one function per channel.

Steps (YAML), applied in order to an ``EditableMessage``; every step may carry ``id:``,
which names it in errors (otherwise ``transformer[<index>] <kind>``)::

    - set: PID-8                 # write a value (escaped with the message's delimiters)
      value: F
      missing_segment: append    # append (default) | skip | error, when the segment is absent
    - copy: PID-3.1              # copy as written, structure and escapes kept
      to: PID-2.1
    - delete: PID-19             # clear
    - map: PV1-3.1               # look the value up in a channel table
      table: wards
      default: keep              # keep (default) | empty | error | any other text
    - drop_segments: [NTE, ZXX]
    - keep_segments: [PID, OBR, OBX]   # MSH is always kept
    - rename_code: OBX-3         # recode a coded field (CE/CWE: code^text^system)
      from: 150456^MDC_PULS_OXIM_SAT_O2^MDC
      to: 59408-5^Oxygen saturation^LN
    - python: package.module:function  # function(message) -> None or EditableMessage

Where a step applies (paths as in ``profiles.hl7.path``):

- ``set``, ``delete``, ``map`` and ``rename_code`` act on every segment of the path's name
  unless the path has a segment index (``OBX[2]-5``); ``set`` appends the segment when the
  message has none. ``map`` and ``rename_code`` also visit every repetition unless indexed.
- A path that stops at the field (``PID-8``) means the whole field for ``set``/``delete``.
- ``copy`` copies the first value found to the first target, except when source and
  target are in the same segment type and neither has an index (``OBX-3.2`` to ``OBX-3.9``):
  then every segment copies its own value. An empty source clears the target.
- ``map`` works on decoded values; point it at a component (``PV1-3.1``) when the field
  has components. Empty values are left alone unless the table has an entry for "".
- ``rename_code`` matches on the code (component 1) and, when ``from`` names one, the
  coding system (component 3); the text is for readers and never compared. ``to`` replaces
  the parts it gives: ``59408-5`` changes only the code, ``59408-5^^LN`` also clears the
  text and sets the system. Both also take a mapping: ``{code: .., text: .., system: ..}``.
  ``^`` separates the parts in the channel file whatever the message's delimiters are.

Output formats, chosen per destination: ``hl7`` is ``EditableMessage.encode()``; ``json`` is
UTF-8 JSON of this shape (version 1)::

    {"format": "hl7v2+json/1",
     "delimiters": "|^~\\\\&",
     "header": {"message_type": "ORU", "trigger_event": "R01", "message_structure": "ORU_R01",
                "control_id": "..", "version": "2.6", "timestamp": "2024..",
                "processing_id": "P", "sending_application": "..", "sending_facility": "..",
                "receiving_application": "..", "receiving_facility": "..",
                "character_set": ""},
     "segments": [...,
                  {"name": "PID",                                # PID|1||123^^^MRN&1.2~456
                   "fields": [[["1"]],                           # PID-1
                              [],                                # PID-2, empty
                              [["123", "", "", ["MRN", "1.2"]],  # PID-3, repetition 1
                               ["456"]]]},                       # PID-3, repetition 2
                  ...]}

``fields[n-1]`` is field n (for MSH too: ``fields[0]`` is MSH-1, ``fields[1]`` MSH-2 as
written). A field is a list of repetitions (``[]`` when empty), a repetition a list of
components, a component a string, or a list of strings when it has sub-components. Values
are decoded (escape sequences resolved). Header facts are read from the message as it is
after the transformer (applications and facilities: their namespace id, component 1).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator
from pydantic_core import PydanticCustomError

from channels.hooks import HookError, HookLoader, HookSpec, run_step
from channels.rules import BOOLEAN_HINT, FieldPath, Text
from channels.steps import pick_step
from profiles.hl7.delimiters import DEFAULT_DELIMITERS, Delimiters
from profiles.hl7.edit import EditableMessage, MissingSegment
from profiles.hl7.escape import unescape
from profiles.hl7.path import Path

OutputFormat = Literal["hl7", "json"]
Transformer = Callable[[EditableMessage], EditableMessage]
LookupTables = dict[str, dict[Text, Text]]
"""Channel-level lookup tables (``tables: {wards: {"3W": "WARD3"}}``) as a pydantic type."""

_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


def _segment_names(names: Any) -> tuple[str, ...]:
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list | tuple) or not names:
        raise PydanticCustomError("segments", "name at least one segment, e.g. [NTE, ZXX]")
    for name in names:
        if not (isinstance(name, str) and _SEGMENT_NAME.fullmatch(name)):
            raise PydanticCustomError(
                "segments",
                "{name} is not a segment name (3 characters, capitals and digits, e.g. NTE)",
                {"name": repr(name)[:24]},
            )
    return tuple(names)


SegmentNames = Annotated[tuple[str, ...], PlainValidator(_segment_names)]


def _no_component(path: str) -> str:
    parsed = Path.parse(path)
    if parsed.component is not None:
        raise PydanticCustomError(
            "rename_code", "rename_code takes a coded field such as OBX-3, not a component"
        )
    return path


def _no_msh(names: tuple[str, ...]) -> tuple[str, ...]:
    if "MSH" in names:
        raise PydanticCustomError("segments", "MSH cannot be dropped")
    return names


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None

    def __repr_args__(self) -> Any:
        """Only the keys that were given, so a repr reads like the YAML it came from."""
        return [(k, v) for k, v in super().__repr_args__() if v is not None]


class SetStep(_Step):
    """``{set: PID-8, value: F}``: write a value."""

    set: FieldPath
    value: Text
    missing_segment: MissingSegment = "append"


class CopyStep(_Step):
    """``{copy: PID-3.1, to: PID-2.1}``: copy a value as written."""

    copy_: FieldPath = Field(alias="copy")
    to: FieldPath
    missing_segment: MissingSegment = "append"


class DeleteStep(_Step):
    """``{delete: PID-19}``: clear a field, repetition, component or sub-component."""

    delete: FieldPath


class MapStep(_Step):
    """``{map: PV1-3.1, table: wards, default: keep}``: replace values through a table."""

    map: FieldPath
    table: Annotated[str, Field(min_length=1)]
    default: Text = "keep"


class DropSegmentsStep(_Step):
    """``{drop_segments: [NTE]}``: remove segments by name."""

    drop_segments: Annotated[SegmentNames, AfterValidator(_no_msh)]


class KeepSegmentsStep(_Step):
    """``{keep_segments: [PID, OBX]}``: remove every other segment except MSH."""

    keep_segments: SegmentNames


class Code(BaseModel):
    """A coded value in a channel file: ``code^text^system`` or a mapping of the parts."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    code: Annotated[Text, Field(min_length=1)]
    text: Text | None = None
    system: Text | None = None

    @classmethod
    def _from_text(cls, value: Any) -> Any:
        if isinstance(value, bool):
            raise PydanticCustomError("yaml_boolean", BOOLEAN_HINT)
        if isinstance(value, int | float):
            value = str(value)
        if not isinstance(value, str):
            return value
        parts = value.split("^")
        if len(parts) > 3:
            raise PydanticCustomError(
                "code", "a code is written code, code^text or code^text^system"
            )
        keys = ("code", "text", "system")
        return dict(zip(keys, parts, strict=False))

    def __str__(self) -> str:
        parts = [self.code, self.text, self.system]
        while parts and parts[-1] is None:
            parts.pop()
        return "^".join(p or "" for p in parts)


def _code(value: Any) -> Code:
    if isinstance(value, Code):
        return value
    return Code.model_validate(Code._from_text(value))


CodeValue = Annotated[Code, PlainValidator(_code), PlainSerializer(str)]


class RenameCodeStep(_Step):
    """``{rename_code: OBX-3, from: .., to: ..}``: recode a coded field."""

    rename_code: Annotated[FieldPath, AfterValidator(_no_component)]
    from_: CodeValue = Field(alias="from")
    to: CodeValue


class PythonStep(_Step):
    """``{python: package.module:function}``: a hook that edits or replaces the message."""

    python: HookSpec


_STEPS: dict[str, type[_Step]] = {
    "set": SetStep,
    "copy": CopyStep,
    "delete": DeleteStep,
    "map": MapStep,
    "drop_segments": DropSegmentsStep,
    "keep_segments": KeepSegmentsStep,
    "rename_code": RenameCodeStep,
    "python": PythonStep,
}


def _validate_step(value: Any) -> _Step:
    """Pick the step kind from its key, so errors stay at the place they were written."""
    return pick_step(value, _STEPS, _Step, "transformer step", "{set: PID-8, value: F}")


def _dump(step: _Step) -> Any:
    return step.model_dump(by_alias=True, exclude_none=True)


TransformStep = Annotated[
    SetStep
    | CopyStep
    | DeleteStep
    | MapStep
    | DropSegmentsStep
    | KeepSegmentsStep
    | RenameCodeStep
    | PythonStep,
    PlainValidator(_validate_step),
    PlainSerializer(_dump),
]
"""One transformer step in a channel file; use ``list[TransformStep]`` as a field type."""


def step_kind(step: _Step) -> str:
    """The YAML key that names the step's kind (``set``, ``map``, ...)."""
    return next(key for key, model in _STEPS.items() if type(step) is model)


def step_id(index: int, step: _Step) -> str:
    """The step's own id, or ``transformer[<index>] <kind>``."""
    return step.id or f"transformer[{index}] {step_kind(step)}"


# -- load-time checks ------------------------------------------------------------------


class UnknownTable(ValueError):
    """A map step names a table the channel does not define."""


def check_tables(
    steps: Sequence[Any], tables: Mapping[str, Mapping[str, str]]
) -> list[tuple[int, str]]:
    """Every map step whose table is not defined, as (step index, problem)."""
    problems = []
    for index, raw in enumerate(steps):
        step = _validate_step(raw)
        if isinstance(step, MapStep) and step.table not in tables:
            known = ", ".join(sorted(tables)) if tables else "the channel defines no tables"
            defined = f"defined: {known}" if tables else known
            problems.append((index, f"table {step.table!r} is not defined ({defined})"))
    return problems


def check_hooks(steps: Sequence[Any], hooks: HookLoader) -> list[tuple[int, str]]:
    """Every python step whose hook cannot be loaded, as (step index, problem)."""
    problems = []
    for index, raw in enumerate(steps):
        step = _validate_step(raw)
        if isinstance(step, PythonStep):
            try:
                hooks.load(step.python)
            except HookError as error:
                problems.append((index, str(error)))
    return problems


# -- compilation -----------------------------------------------------------------------


class UnmappedValue(LookupError):
    """A map step with ``default: error`` met a value its table lacks (the value is not named)."""


StepFunction = Callable[[EditableMessage], "EditableMessage | None"]


def _occurrences(message: EditableMessage, path: Path) -> list[Path]:
    """``path`` in each segment of its name, or just ``path`` when it has a segment index."""
    if path.segment_index is not None:
        return [path]
    return [_occurrence(path, k) for k in range(1, message.count(path.segment) + 1)]


def _occurrence(path: Path, k: int) -> Path:
    """``path`` in the ``k``-th segment of its name."""
    return Path(path.segment, path.field, k, path.repetition, path.component, path.subcomponent)


def _set(step: SetStep) -> StepFunction:
    path = Path.parse(step.set)
    value, missing = step.value, step.missing_segment
    first = _occurrence(path, 1)

    def run(message: EditableMessage) -> None:
        count = message.count(path.segment) if path.segment_index is None else -1
        if count == 0:
            message.set(path, value, missing=missing)
        elif count == 1:
            message.set(first, value)  # most messages have one segment of the name
        else:
            for target in _occurrences(message, path):
                message.set(target, value)

    return run


def _copy_one(
    message: EditableMessage, source: Path, target: Path, missing: MissingSegment
) -> None:
    text = message.get_raw(source)
    if text:
        message.set_raw(target, text, missing=missing)
    else:
        message.delete(target)


def _copy(step: CopyStep) -> StepFunction:
    source, target = Path.parse(step.copy_), Path.parse(step.to)
    missing = step.missing_segment
    per_segment = (
        source.segment == target.segment
        and source.segment_index is None
        and target.segment_index is None
    )

    def run(message: EditableMessage) -> None:
        if not per_segment:
            _copy_one(message, source, target, missing)
            return
        pairs = zip(_occurrences(message, source), _occurrences(message, target), strict=True)
        for one_source, one_target in pairs:
            _copy_one(message, one_source, one_target, missing)

    return run


def _delete(step: DeleteStep) -> StepFunction:
    path = Path.parse(step.delete)

    def run(message: EditableMessage) -> None:
        for target in _occurrences(message, path):
            message.delete(target)

    return run


def _map(step: MapStep, table: Mapping[str, str]) -> StepFunction:
    path = Path.parse(step.map)
    default, name = step.default, step.table
    lookup = dict(table)
    map_empty = "" in lookup

    def run(message: EditableMessage) -> None:
        for location in message.locations(path):
            value = message.get(location)
            if not value and not map_empty:
                continue
            mapped = lookup.get(value)
            if mapped is None:
                if default == "keep":
                    continue
                if default == "error":
                    raise UnmappedValue(f"table {name!r} has no entry for the value at {location}")
                mapped = "" if default == "empty" else default
            if mapped != value:
                message.set(location, mapped)

    return run


def _rename_code(step: RenameCodeStep) -> StepFunction:
    path = Path.parse(step.rename_code)
    old, new = step.from_, step.to
    replacement = (new.code, new.text, new.system)

    def literal(d: Delimiters) -> bool:
        """The code is written as itself (no delimiter or escape character in it), so
        only the segments whose text mentions it are read field by field."""
        return path.segment_index is None and bool(old.code) and not any(
            ch in old.code
            for ch in (d.field, d.component, d.repetition, d.escape, d.subcomponent))

    usual = literal(DEFAULT_DELIMITERS)

    def run(message: EditableMessage) -> None:
        d = message.delimiters
        if not (usual if d is DEFAULT_DELIMITERS else literal(d)):
            message.recode(path, old.code, old.system, replacement)
            return
        within = message.mentioning(path.segment, old.code)
        if within:
            message.recode(path, old.code, old.system, replacement, within=within)

    return run


def _python(step: PythonStep, hooks: HookLoader) -> StepFunction:
    function = hooks.load(step.python)

    def run(message: EditableMessage) -> EditableMessage | None:
        result = function(message)
        if result is not None and not isinstance(result, EditableMessage):
            kind = type(result).__name__
            raise TypeError(f"a transformer hook returns None or an EditableMessage, not {kind}")
        return result

    return run


def _compile_step(
    step: _Step, tables: Mapping[str, Mapping[str, str]], hooks: HookLoader
) -> StepFunction:
    if isinstance(step, SetStep):
        return _set(step)
    if isinstance(step, CopyStep):
        return _copy(step)
    if isinstance(step, DeleteStep):
        return _delete(step)
    if isinstance(step, MapStep):
        return _map(step, tables[step.table])
    if isinstance(step, DropSegmentsStep):
        names = step.drop_segments
        return lambda message: message.drop_segments(names)
    if isinstance(step, KeepSegmentsStep):
        kept = step.keep_segments
        return lambda message: message.keep_segments(kept)
    if isinstance(step, RenameCodeStep):
        return _rename_code(step)
    if isinstance(step, PythonStep):
        return _python(step, hooks)
    raise TypeError(f"not a transformer step: {type(step).__name__}")


def compile_transformer(
    steps: Sequence[TransformStep],
    tables: Mapping[str, Mapping[str, str]],
    hooks: HookLoader,
) -> Transformer:
    """One function applying ``steps`` in order; it edits the message it is given in place.

    Raises UnknownTable (see ``check_tables``) or HookError at compile time. At run time any
    failing step raises StepFailed naming the step. Give each destination its own copy.
    """
    validated = [_validate_step(step) for step in steps]
    problems = check_tables(validated, tables)
    if problems:
        raise UnknownTable("; ".join(f"transformer[{i}]: {text}" for i, text in problems))
    compiled = [(step_id(i, s), _compile_step(s, tables, hooks)) for i, s in enumerate(validated)]

    def transform(message: EditableMessage) -> EditableMessage:
        for identifier, function in compiled:
            result = run_step(identifier, function, message)
            if result is not None:
                message = result
        return message

    return transform


# -- output ----------------------------------------------------------------------------


def render(message: EditableMessage, fmt: OutputFormat) -> bytes:
    """The message as a destination receives it: HL7 v2 or the JSON shape documented above."""
    if fmt == "hl7":
        return message.encode()
    if fmt == "json":
        document = to_json_document(message)
        return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    raise ValueError(f"unknown output format {fmt!r}; use hl7 or json")


def to_json_document(message: EditableMessage) -> dict[str, Any]:
    """The JSON output as Python data (see the module docstring for its shape)."""
    d = message.delimiters
    codec = message.codec

    def leaf(text: str) -> str:
        return unescape(text, d, codec) if d.escape in text else text

    def component(text: str) -> str | list[str]:
        if d.subcomponent in text:
            return [leaf(part) for part in text.split(d.subcomponent)]
        return leaf(text)

    def field(text: str) -> list[list[str | list[str]]]:
        if not text:
            return []
        return [[component(c) for c in rep.split(d.component)] for rep in text.split(d.repetition)]

    segments = []
    for segment in message.segments():
        parts = segment.text.split(d.field)[1:]
        if segment.name == "MSH":
            fields = [[[d.field]], [[parts[0] if parts else ""]], *(field(p) for p in parts[1:])]
        else:
            fields = [field(p) for p in parts]
        segments.append({"name": segment.name, "fields": fields})
    get = message.get
    return {
        "format": "hl7v2+json/1",
        "delimiters": d.field + d.encoding_characters,
        "header": {
            "message_type": get("MSH-9.1"),
            "trigger_event": get("MSH-9.2"),
            "message_structure": get("MSH-9.3"),
            "control_id": get("MSH-10"),
            "version": get("MSH-12.1"),
            "timestamp": get("MSH-7.1"),
            "processing_id": get("MSH-11.1"),
            "sending_application": get("MSH-3.1"),
            "sending_facility": get("MSH-4.1"),
            "receiving_application": get("MSH-5.1"),
            "receiving_facility": get("MSH-6.1"),
            "character_set": get("MSH-18"),
        },
        "segments": segments,
    }
