"""Compiled set and rename_code steps agree with the same steps spelled out path by path.

The references below are the steps as first written, with ``locations``, ``get`` and
``set`` for each place; the compiled steps take shorter ways and must end in the same
message, or fail with the same error.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from channels.hooks import HookLoader, StepFailed
from channels.transforms import RenameCodeStep, SetStep, TransformStep, compile_transformer
from profiles.hl7.delimiters import Delimiters
from profiles.hl7.edit import EditableMessage, EditError
from profiles.hl7.path import Path
from tests.profiles.test_edit_equivalence import PROPERTY, messages, parse_text

STEPS = TypeAdapter(list[TransformStep])


def _with_index(path: Path, k: int) -> Path:
    return Path(path.segment, path.field, k, path.repetition, path.component, path.subcomponent)


def _component(location: Path, component: int) -> Path:
    return Path(location.segment, location.field, location.segment_index, location.repetition,
                component)


def _rename_code_reference(step: RenameCodeStep, message: EditableMessage) -> None:
    """rename_code: every candidate place whose code (and system) match gets the new parts;
    a code written without delimiters is looked for only in segments that mention it."""
    path = Path.parse(step.rename_code)
    old, new = step.from_, step.to
    d = message.delimiters
    if path.segment_index is not None or not old.code or any(
            ch in old.code for ch in (d.field, d.component, d.repetition, d.escape,
                                      d.subcomponent)):
        candidates = message.locations(path)
    else:
        candidates = [location for k in message.mentioning(path.segment, old.code)
                      for location in message.locations(_with_index(path, k))]
    for location in candidates:
        if message.get(_component(location, 1)) != old.code:
            continue
        if old.system and message.get(_component(location, 3)) != old.system:
            continue
        for component, value in [(1, new.code), (2, new.text), (3, new.system)]:
            if value is not None:
                message.set(_component(location, component), value)


def _set_reference(step: SetStep, message: EditableMessage) -> None:
    """set: the path in every segment of its name, or appended (by policy) when none."""
    path = Path.parse(step.set)
    if path.segment_index is not None:
        targets = [path]
    else:
        targets = [_with_index(path, k) for k in range(1, message.count(path.segment) + 1)]
    if not targets:
        message.set(path, step.value, missing=step.missing_segment)
    for target in targets:
        message.set(target, step.value)


def _outcome(run: Callable[[], Any], message: EditableMessage) -> str:
    """The message's text after ``run``, or the error it failed with."""
    try:
        run()
    except StepFailed as failed:
        return failed.traceback.strip().splitlines()[-1]
    except EditError as error:
        return f"profiles.hl7.edit.EditError: {error}"
    return message.text


def _compare(step_data: dict[str, Any], reference: Callable[[Any, EditableMessage], None],
             message: tuple[str, Delimiters]) -> None:
    step = STEPS.validate_python([step_data])[0]
    transform = compile_transformer([step], {}, HookLoader())
    compiled, spelled_out = parse_text(*message), parse_text(*message)
    assert _outcome(lambda: transform(compiled), compiled) == _outcome(
        lambda: reference(step, spelled_out), spelled_out)


codes = st.sampled_from(["A", "15", "150", "A&B", "X", "1^a^X", "A^^X", "15^^MDC", "|^^X"])
targets = st.sampled_from(["Z", "Z^^LN", "59408-5^Oxygen^LN", "N^", "M^^", "a|b^^X"])
rename_paths = st.one_of(st.just("OBX-3"), st.sampled_from(
    ["OBX-3[2]", "OBX[2]-3", "OBX-4", "PID-3", "MSH-1", "MSH-9", "ZZZ-1"]))


@PROPERTY
@given(message=messages(), path=rename_paths, old=codes, new=targets)
def test_rename_code_agrees_with_the_place_by_place_step(
    message: tuple[str, Delimiters], path: str, old: str, new: str
) -> None:
    """The compiled rename_code step recodes what the spelled-out one recodes."""
    _compare({"rename_code": path, "from": old, "to": new}, _rename_code_reference, message)


set_paths = st.sampled_from(["MSH-5", "MSH-9.2", "MSH-2", "PID-3", "PID-3[2].1", "OBX-5",
                             "OBX[2]-3.1", "OBX[3]-4", "ZZZ-1.2", "ZZZ[2]-1"])


@PROPERTY
@given(message=messages(), path=set_paths, value=st.sampled_from(["V", "", "a|b", "x\x01"]),
       missing=st.sampled_from(["append", "skip", "error"]))
def test_set_agrees_with_the_place_by_place_step(
    message: tuple[str, Delimiters], path: str, value: str, missing: str
) -> None:
    """The compiled set step writes what the spelled-out one writes, or fails alike."""
    _compare({"set": path, "value": value, "missing_segment": missing}, _set_reference,
             message)
