"""An optional channel preprocessor: fixes raw bytes before anything parses them.

For senders whose bytes need repair first (stray NULs, LF line ends, a vendor quirk). Steps
(YAML), applied in order; every step may carry ``id:``, which names it in errors
(otherwise ``preprocess[<index>] <kind>``)::

    preprocess:
      - normalize: line_endings          # CRLF and LF become CR
      - strip: ["\\x00"]                 # remove every occurrence of each text
      - replace: "\\rZZZ[^\\r]*"         # a regular expression over the raw bytes
        with: ""                         # \\1 or \\g<name> insert groups
        count: 0                         # how many matches to replace; 0 means all
      - python: package.module:function  # function(raw: bytes) -> bytes

Patterns and texts are encoded as UTF-8 and work on the bytes as received, whatever the
message's character set; ``\\d``, ``\\s`` and ``\\w`` match ASCII only, and ``^``/``$``
with ``(?m)`` see LF, not CR, as a line end. The store keeps the message as received; the
preprocessed bytes are what the channel parses, filters and transforms.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, PlainValidator, model_validator
from pydantic_core import PydanticCustomError

from channels.hooks import HookLoader, HookSpec, run_step
from channels.rules import Regex, Text
from channels.steps import pick_step

Preprocessor = Callable[[bytes], bytes]

_GROUP_REFERENCE = re.compile(r"\\(?:g<([^>]*)>|(\d{1,2}))")


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str | None = None


class ReplaceStep(_Step):
    """``{replace: <regex>, with: <text>}``: regular-expression substitution on the bytes."""

    replace: Regex
    with_: Text = Field(alias="with")
    count: Annotated[int, Field(ge=0)] = 0

    @model_validator(mode="after")
    def _groups_exist(self) -> ReplaceStep:
        pattern = re.compile(self.replace.encode("utf-8"))
        for match in _GROUP_REFERENCE.finditer(self.with_):
            name, number = match.groups()
            known = (
                int(number) <= pattern.groups if number is not None else name in pattern.groupindex
            )
            if not known:
                raise PydanticCustomError(
                    "replace",
                    "'with' refers to group {group}, which the pattern does not define",
                    {"group": match.group()},
                )
        return self


def _texts(value: Any) -> Any:
    return [value] if isinstance(value, str) else value


def _non_empty_texts(values: Any) -> tuple[str, ...]:
    values = _texts(values)
    if not isinstance(values, list | tuple) or not values:
        raise PydanticCustomError("strip", 'strip takes a list of texts, e.g. ["\\x00"]')
    if not all(isinstance(v, str) and v for v in values):
        raise PydanticCustomError("strip", "every text to strip is a non-empty string")
    return tuple(values)


class StripStep(_Step):
    """``{strip: ["\\x00"]}``: remove every occurrence of each text."""

    strip: Annotated[tuple[str, ...], PlainValidator(_non_empty_texts)]


class NormalizeStep(_Step):
    """``{normalize: line_endings}``: CRLF and lone LF become the CR HL7 requires."""

    normalize: Literal["line_endings"]


class PythonStep(_Step):
    """``{python: package.module:function}``: a hook from bytes to bytes."""

    python: HookSpec


_STEPS: dict[str, type[_Step]] = {
    "replace": ReplaceStep,
    "strip": StripStep,
    "normalize": NormalizeStep,
    "python": PythonStep,
}


def _validate_step(value: Any) -> _Step:
    """Pick the step kind from its key, so errors stay at the place they were written."""
    return pick_step(value, _STEPS, _Step, "preprocess step", "{normalize: line_endings}")


PreprocessStep = Annotated[
    ReplaceStep | StripStep | NormalizeStep | PythonStep,
    PlainValidator(_validate_step),
    PlainSerializer(lambda step: step.model_dump(by_alias=True, exclude_none=True)),
]
"""One preprocessor step in a channel file; use ``list[PreprocessStep]`` as a field type."""


def _kind(step: _Step) -> str:
    return next(key for key, model in _STEPS.items() if type(step) is model)


def _line_endings(raw: bytes) -> bytes:
    return raw.replace(b"\r\n", b"\r").replace(b"\n", b"\r")


def _compile_step(step: _Step, hooks: HookLoader) -> Preprocessor:
    if isinstance(step, ReplaceStep):
        pattern = re.compile(step.replace.encode("utf-8"))
        template, count = step.with_.encode("utf-8"), step.count
        return lambda raw: pattern.sub(template, raw, count=count)
    if isinstance(step, StripStep):
        texts = [text.encode("utf-8") for text in step.strip]

        def strip(raw: bytes) -> bytes:
            for text in texts:
                raw = raw.replace(text, b"")
            return raw

        return strip
    if isinstance(step, NormalizeStep):
        return _line_endings
    if isinstance(step, PythonStep):
        function = hooks.load(step.python)

        def call(raw: bytes) -> bytes:
            result = function(raw)
            if isinstance(result, bytearray | memoryview):
                return bytes(result)
            if not isinstance(result, bytes):
                raise TypeError(f"a preprocess hook returns bytes, not {type(result).__name__}")
            return result

        return call
    raise TypeError(f"not a preprocess step: {type(step).__name__}")


def compile_preprocessor(steps: Sequence[PreprocessStep], hooks: HookLoader) -> Preprocessor:
    """One function applying ``steps`` in order; hooks load now (HookError if they cannot).

    At run time a failing step raises StepFailed naming the step, never the bytes.
    """
    validated = [_validate_step(step) for step in steps]
    compiled = [
        (step.id or f"preprocess[{index}] {_kind(step)}", _compile_step(step, hooks))
        for index, step in enumerate(validated)
    ]

    def preprocess(raw: bytes) -> bytes:
        for identifier, function in compiled:
            raw = run_step(identifier, function, raw)
        return raw

    return preprocess
