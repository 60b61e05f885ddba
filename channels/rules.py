"""Filter conditions as channel files write them, and their compilation into predicates.

A condition is one of (YAML)::

    MSH-9.1 == ORU                      # ==, !=, in [..], not in [..], matches <regex>,
    PID-8 exists                        # exists, not exists, >, >=, <, <= (numbers)
    {field: PID-8, equals: F}           # equals, not_equals, in, not_in, matches,
    {field: OBX-5, gt: 90}              # exists: true|false, gt, ge, lt, le
    {all: [<condition>, ...]}           # every one holds
    {any: [<condition>, ...]}           # at least one holds
    {not: <condition>}
    {python: package.module:function}   # function(message) -> bool; optional id
    {pcd: "metric(MDC_PULS_OXIM_SAT_O2).value < 90"}   # device data: see channels.pcd
    {pcd_metric: ..}, {pcd_device: ..}, {pcd_alarm_priority: ..}, {pcd_profile: ..}

What a field test means, for analysts:

- A path that occurs several times (``OBX-3.1`` over every OBX, every repetition) holds if
  ANY of its values matches. The negative tests are exact negations: ``!=``/``not_equals``
  and ``not in``/``not_in`` hold when NO value matches, and so does ``exists: false``.
- ``exists`` means some value is non-empty; HL7's explicit null ``""`` counts as empty.
- Comparisons are exact text (case and spaces count); ``matches`` searches with a Python
  regular expression (anchor with ``^``/``$``); ``>``, ``>=``, ``<``, ``<=`` compare numbers,
  and a value that is not a number never matches.
- YAML turns unquoted ``yes``/``no``/``on``/``off``/``true``/``false`` into booleans and
  ``007`` into 7: quote such values. Numbers in ``equals``/``in`` are compared as text.

Every mistake (unknown operator, bad path, bad regex, unknown key) fails validation at the
place it was written, so ``channels.configfile`` reports it with file, line and column.
"""

from __future__ import annotations

import math
import operator
import re
from collections.abc import Callable
from typing import Annotated, Any

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic_core import PydanticCustomError

from channels.hooks import HookLoader, HookSpec, run_step
from channels.pcd import (
    PCD_FORMS,
    AlarmPriorityTest,
    DeviceTest,
    MetricTest,
    ProfileTest,
    compile_pcd_condition,
    validate_pcd_condition,
)
from profiles.hl7.edit import FieldReader
from profiles.hl7.path import Path, PathError

Predicate = Callable[[FieldReader], bool]

_NUMBER = re.compile(r"\s*[+-]?(?:\d+(?:\.\d*)?|\.\d+)\s*")
BOOLEAN_HINT = 'YAML read this as a boolean; quote it to mean the text (e.g. "Y", "no", "on")'


# -- value types shared by filters, transformers and preprocessors --------------------


def _field_path(text: Any) -> str:
    if not isinstance(text, str):
        raise PydanticCustomError("hl7_path", "a field path is text, e.g. PID-3.1")
    try:
        Path.parse(text)
    except PathError as error:
        raise PydanticCustomError("hl7_path", "{reason}", {"reason": str(error)}) from None
    return text.strip()


def _text(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("yaml_boolean", BOOLEAN_HINT)
    if isinstance(value, int | float):
        return str(value)
    return value


def _regex(text: str) -> str:
    try:
        re.compile(text)
    except re.error as error:
        raise PydanticCustomError(
            "regex", "bad regular expression: {reason}", {"reason": _regex_reason(error)}
        ) from None
    return text


def _regex_reason(error: re.error) -> str:
    where = f" at position {error.pos}" if error.pos is not None else ""
    return f"{error.msg}{where}"


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number", "expected a number, not a boolean")
    if isinstance(value, int | float) and not math.isfinite(value):
        raise PydanticCustomError("number", "expected a finite number")
    return value


FieldPath = Annotated[str, AfterValidator(_field_path)]
"""An analyst path (``OBX[2]-5[1].1.2``), checked when the file loads."""
Text = Annotated[str, BeforeValidator(_text)]
"""A text value; YAML numbers become their text, YAML booleans are refused with a hint."""
Regex = Annotated[str, AfterValidator(_regex)]
"""A Python regular expression, compiled once when the file loads to catch mistakes."""
Number = Annotated[float, BeforeValidator(_number)]


def _non_empty(items: tuple[Any, ...]) -> tuple[Any, ...]:
    if not items:
        raise PydanticCustomError("empty_list", "the list needs at least one entry")
    return items


Choices = Annotated[tuple[Text, ...], AfterValidator(_non_empty)]

_Frozen = ConfigDict(extra="forbid", frozen=True)


# -- the condition models --------------------------------------------------------------


class _ConditionModel(BaseModel):
    model_config = _Frozen

    def __repr_args__(self) -> Any:
        """Only the keys that were given, so a repr reads like the YAML it came from."""
        return [(k, v) for k, v in super().__repr_args__() if v is not None]


_OPERATORS = ("equals", "not_equals", "in", "not_in", "matches", "exists", "gt", "ge", "lt", "le")


class FieldTest(_ConditionModel):
    """One test of the values at one path: ``{field: PID-8, equals: F}``."""

    field: FieldPath
    equals: Text | None = None
    not_equals: Text | None = None
    in_: Choices | None = Field(None, alias="in")
    not_in: Choices | None = None
    matches: Regex | None = None
    exists: bool | None = None
    gt: Number | None = None
    ge: Number | None = None
    lt: Number | None = None
    le: Number | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_operator(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [key for key in _OPERATORS if key in data]
            if len(given) != 1:
                found = ", ".join(given) if given else "none"
                raise PydanticCustomError(
                    "field_test",
                    "a field test takes exactly one of {operators} (found: {found})",
                    {"operators": ", ".join(_OPERATORS), "found": found},
                )
            if data[given[0]] is None:
                raise PydanticCustomError(
                    "field_test",
                    "'{key}' needs a value (write \"\" for empty text)",
                    {"key": given[0]},
                )
        return data

    @property
    def operator(self) -> str:
        """The one operator this test uses (its YAML key)."""
        return next(key for key in _OPERATORS if getattr(self, _attr(key)) is not None)


def _attr(key: str) -> str:
    return "in_" if key == "in" else key


class AllOf(_ConditionModel):
    """Every condition holds: ``{all: [...]}``."""

    all_: Annotated[tuple[Condition, ...], AfterValidator(_non_empty)] = Field(alias="all")


class AnyOf(_ConditionModel):
    """At least one condition holds: ``{any: [...]}``."""

    any_: Annotated[tuple[Condition, ...], AfterValidator(_non_empty)] = Field(alias="any")


class Not(_ConditionModel):
    """The condition does not hold: ``{not: ...}``."""

    not_: Condition = Field(alias="not")


class PythonCondition(_ConditionModel):
    """A hook ``function(message) -> bool``: ``{python: package.module:function}``."""

    python: HookSpec
    id: str | None = None


_FORMS: dict[str, type[_ConditionModel]] = {
    "field": FieldTest,
    "all": AllOf,
    "any": AnyOf,
    "not": Not,
    "python": PythonCondition,
}


def _validate_condition(value: Any) -> _ConditionModel | PcdTest:
    """Pick the form from the mapping's key (or parse a string), so errors keep their place."""
    if isinstance(value, _ConditionModel | MetricTest | DeviceTest | AlarmPriorityTest
                  | ProfileTest):
        return value
    if isinstance(value, str):
        return parse_expression(value)
    if isinstance(value, dict):
        forms = [key for key in (*_FORMS, "pcd", *PCD_FORMS) if key in value]
        if len(forms) != 1:
            keys = ", ".join(str(k) for k in value) or "none"
            message = (
                "a condition mapping has exactly one of field, all, any, not, python "
                "(found keys: {keys}); for device data: pcd, pcd_metric, pcd_device, "
                "pcd_alarm_priority, pcd_profile"
            )
            raise PydanticCustomError("condition", message, {"keys": keys})
        if forms[0] not in _FORMS:
            return validate_pcd_condition(value)
        return _FORMS[forms[0]].model_validate(value)
    raise PydanticCustomError(
        "condition",
        "a condition is an expression such as 'MSH-9.1 == ORU' or a mapping, not {kind}",
        {"kind": "a list" if isinstance(value, list) else type(value).__name__},
    )


def _dump(value: Any) -> Any:
    return value.model_dump(by_alias=True, exclude_none=True)


PcdTest = MetricTest | DeviceTest | AlarmPriorityTest | ProfileTest

Condition = Annotated[
    FieldTest | AllOf | AnyOf | Not | PythonCondition | PcdTest,
    PlainValidator(_validate_condition),
    PlainSerializer(_dump),
]
"""A filter condition: an expression string or a mapping; use it as a field type."""

for _model in (AllOf, AnyOf, Not):
    _model.model_rebuild()

_ADAPTER: TypeAdapter[FieldTest | AllOf | AnyOf | Not | PythonCondition | PcdTest] = (
    TypeAdapter(Condition))


def parse_condition(data: Any) -> FieldTest | AllOf | AnyOf | Not | PythonCondition | PcdTest:
    """Validate plain data (a string or mapping from YAML) into a condition."""
    return _ADAPTER.validate_python(data)


# -- the expression language -----------------------------------------------------------

_SYMBOLIC = re.compile(r"(?P<path>[^\s=!<>]+)\s*(?P<op>==|!=|>=|<=|>|<|=)\s*(?P<operand>.*)", re.S)
_WORDS = re.compile(
    r"(?P<path>\S+)\s+(?P<op>not\s+in|in|matches|not\s+exists|exists)\b\s*(?P<operand>.*)",
    re.S | re.I,
)
_SYMBOL_KEYS = {"==": "equals", "!=": "not_equals", ">": "gt", ">=": "ge", "<": "lt", "<=": "le"}
_SYNTAX = (
    "expected '<path> <operator> <value>', e.g. 'MSH-9.1 == ORU'; operators: ==, !=, in [..], "
    "not in [..], matches <regex>, exists, not exists, >, >=, <, <="
)


def _syntax_error(detail: str) -> PydanticCustomError:
    return PydanticCustomError("condition_syntax", "{detail}", {"detail": detail})


def _unquote(text: str) -> str:
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "'\"":
        return text[1:-1]
    return text


def _list_operand(text: str, op: str) -> list[str]:
    if not (text.startswith("[") and text.endswith("]")):
        raise _syntax_error(f"'{op}' takes a list in brackets, e.g. OBX-3.1 {op} [150456, 147842]")
    try:
        items = yaml.safe_load(text)
    except yaml.YAMLError:
        raise _syntax_error(
            f"the list after '{op}' cannot be read; quote items that hold commas"
        ) from None
    if not items:
        raise _syntax_error(f"the list after '{op}' is empty")
    out = []
    for item in items:
        if isinstance(item, bool):
            raise _syntax_error(f"the list after '{op}': {BOOLEAN_HINT}")
        if not isinstance(item, str | int | float):
            raise _syntax_error(f"the list after '{op}' holds plain values only")
        out.append(str(item))
    return out


def parse_expression(text: str) -> FieldTest:
    """Parse one expression such as ``OBX-5 > 90`` into the field test it stands for."""
    stripped = text.strip()
    words = _WORDS.fullmatch(stripped)
    symbolic = None if words else _SYMBOLIC.fullmatch(stripped)
    if words:
        path, op, operand = words["path"], " ".join(words["op"].lower().split()), words["operand"]
    elif symbolic:
        path, op, operand = symbolic["path"], symbolic["op"], symbolic["operand"].strip()
    else:
        raise _syntax_error(_SYNTAX)
    if op == "=":
        raise _syntax_error("compare with '==' (a single '=' is not an operator)")
    data: dict[str, Any] = {"field": path}
    if op in ("exists", "not exists"):
        if operand:
            raise _syntax_error(f"'{op}' takes no value")
        data["exists"] = op == "exists"
    elif op in ("in", "not in"):
        data["in" if op == "in" else "not_in"] = _list_operand(operand, op)
    elif not operand:
        raise _syntax_error(f"'{op}' needs a value after it (write \"\" for empty text)")
    elif op == "matches":
        data["matches"] = _unquote(operand)
    elif op in ("==", "!="):
        data[_SYMBOL_KEYS[op]] = _unquote(operand)
    else:
        if not _NUMBER.fullmatch(operand):
            raise _syntax_error(f"'{op}' compares numbers; {operand[:40]!r} is not a number")
        data[_SYMBOL_KEYS[op]] = float(operand)
    try:
        return FieldTest.model_validate(data)
    except ValidationError as error:
        raise _syntax_error("; ".join(e["msg"] for e in error.errors())) from None


# -- compilation -----------------------------------------------------------------------


def number_or_none(value: str) -> float | None:
    """An HL7 NM value as a float, or None when the text is not a plain decimal number."""
    return float(value) if _NUMBER.fullmatch(value) else None


def _nonempty(value: str) -> bool:
    return bool(value) and value != '""'


_COMPARE = {"gt": operator.gt, "ge": operator.ge, "lt": operator.lt, "le": operator.le}


def _compile_test(test: FieldTest) -> Predicate:
    path = Path.parse(test.field)
    op = test.operator
    if op == "equals":
        wanted = test.equals
        return lambda m: wanted in m.get_all(path)
    if op == "not_equals":
        unwanted = test.not_equals
        return lambda m: unwanted not in m.get_all(path)
    if op in ("in", "not_in"):
        choices = frozenset(test.in_ if op == "in" else test.not_in or ())
        if op == "in":
            return lambda m: not choices.isdisjoint(m.get_all(path))
        return lambda m: choices.isdisjoint(m.get_all(path))
    if op == "matches":
        search = re.compile(test.matches or "").search
        return lambda m: any(search(v) for v in m.get_all(path))
    if op == "exists":
        if test.exists:
            return lambda m: any(_nonempty(v) for v in m.get_all(path))
        return lambda m: not any(_nonempty(v) for v in m.get_all(path))
    compare = _COMPARE[op]
    limit = getattr(test, op)

    def numeric(message: FieldReader) -> bool:
        for value in message.get_all(path):
            number = number_or_none(value)
            if number is not None and compare(number, limit):
                return True
        return False

    return numeric


def _compile_hook(condition: PythonCondition, hooks: HookLoader) -> Predicate:
    function = hooks.load(condition.python)
    step_id = condition.id or f"filter python {condition.python}"

    def checked(message: FieldReader) -> bool:
        result = function(message)
        if not isinstance(result, bool):
            raise TypeError(f"a filter hook returns True or False, not {type(result).__name__}")
        return result

    return lambda message: run_step(step_id, checked, message)


def compile_condition(condition: Condition, hooks: HookLoader) -> Predicate:
    """A predicate for ``condition``: paths and regexes prepared once, hooks loaded now.

    Plain data (an expression string or a mapping) is validated first.

    Raises HookError when a hook cannot be loaded. At run time a hook that raises (or
    returns something other than a bool) raises StepFailed.
    """
    condition = _validate_condition(condition)
    if isinstance(condition, FieldTest):
        return _compile_test(condition)
    if isinstance(condition, AllOf):
        parts = tuple(compile_condition(c, hooks) for c in condition.all_)
        return lambda m: all(p(m) for p in parts)
    if isinstance(condition, AnyOf):
        parts = tuple(compile_condition(c, hooks) for c in condition.any_)
        return lambda m: any(p(m) for p in parts)
    if isinstance(condition, Not):
        inner = compile_condition(condition.not_, hooks)
        return lambda m: not inner(m)
    if isinstance(condition, PythonCondition):
        return _compile_hook(condition, hooks)
    if isinstance(condition, MetricTest | DeviceTest | AlarmPriorityTest | ProfileTest):
        return compile_pcd_condition(condition)
    raise TypeError(f"not a condition: {type(condition).__name__}")


def condition_hooks(condition: Any) -> list[str]:
    """Every hook spec a condition uses, for checking them all at deploy time."""
    condition = _validate_condition(condition)
    if isinstance(condition, PythonCondition):
        return [condition.python]
    if isinstance(condition, AllOf | AnyOf):
        children = condition.all_ if isinstance(condition, AllOf) else condition.any_
        return [spec for child in children for spec in condition_hooks(child)]
    if isinstance(condition, Not):
        return condition_hooks(condition.not_)
    return []
