"""Filter conditions: YAML shapes, ANY-value semantics, located config errors, hooks."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from channels.configfile import ConfigError, load_model
from channels.hooks import HookError, HookLoader, StepFailed
from channels.rules import (
    AllOf,
    Condition,
    FieldTest,
    Not,
    PythonCondition,
    compile_condition,
    condition_hooks,
    number_or_none,
    parse_condition,
    parse_expression,
)
from profiles.hl7.edit import EditableMessage
from profiles.hl7.message import Message
from tests.profiles.corpus import read

PHILIPS = read("pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7")
SAMPLES = "tests.channels.hook_samples"


class Channel(BaseModel):
    """A stand-in for the channel file model: a filter is one field among others."""

    model_config = ConfigDict(extra="forbid")
    filter: Condition


def holds(condition: object, raw: bytes | str = PHILIPS) -> bool:
    """Compile a condition from plain data and evaluate it on a parsed message."""
    return compile_condition(parse_condition(condition), HookLoader())(Message.parse(raw))


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "channel.yaml"
    path.write_text(text)
    return path


def test_every_documented_shape_loads_from_yaml(tmp_path: Path) -> None:
    """Each YAML shape in the module docstring validates and holds on the Philips PCD-01."""
    path = write(
        tmp_path,
        """
filter:
  all:
    - MSH-9.1 == ORU
    - MSH-9.2 != R02
    - OBX-3.1 in [150456, 69965]
    - PID-3.1 matches ^HO20
    - PID-8 exists
    - OBX-5 > 90
    - {field: PID-8, equals: M}
    - {field: OBX-3.1, in: [150456, "150021"]}
    - {field: PID-3.1, matches: "^HO"}
    - {field: PID-19, exists: false}
    - {field: OBX-5, gt: 90}
    - any: [PID-8 == F, PID-8 == M]
    - not: PID-8 == U
    - python: tests.channels.hook_samples:Namespace.is_male
""",
    )
    channel = load_model(Channel, path)
    assert isinstance(channel.filter, AllOf)
    assert len(channel.filter.all_) == 14
    predicate = compile_condition(channel.filter, HookLoader())
    assert predicate(Message.parse(PHILIPS)) is True
    assert predicate(EditableMessage.parse(PHILIPS)) is True


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("MSH-9.1 == ORU", True),
        ("MSH-9.1 == ADT", False),
        ("MSH-9.1==ORU", True),
        ('PID-5.2 == "Albert"', True),
        ("MSH-9.2 != R01", False),
        ("MSH-9.2 != R02", True),
        ("OBX-3.1 in [150021, 1]", True),
        ("OBX-3.1 in ['1', 2]", False),
        ("OBX-3.1 not in [150021]", False),
        ("OBX-3.1 not in [1]", True),
        ("PID-3.1 matches ^HO", True),
        ("PID-3.1 matches '^O2'", False),
        ("PID-3.1 matches O2", True),
        ("PID-8 exists", True),
        ("PID-19 exists", False),
        ("PID-19 not exists", True),
        ("ZZZ-1 not exists", True),
        ("OBX[4]-5 >= 117", True),
        ("OBX[4]-5 > 117", False),
        ("OBX[4]-5 <= 117", True),
        ("OBX[4]-5 < 117.5", True),
        ("OBX-5 > 1000000", False),
        ("OBX-5 < -1", False),
    ],
)
def test_expressions(expression: str, expected: bool) -> None:
    """Each operator of the expression language, on real PCD-01 values."""
    assert holds(expression) is expected


def test_repeating_path_matches_if_any_value_matches() -> None:
    """OBX-3.1 over every OBX: == and in look for any; != and not in hold when none match."""
    codes = Message.parse(PHILIPS).get_all("OBX-3.1")
    assert "150456" in codes
    assert codes[0] != "150456"
    assert holds("OBX-3.1 == 150456")
    assert not holds("OBX-3.1 != 150456")
    assert holds({"field": "OBX-3.1", "not_equals": "nope"})
    assert holds({"field": "OBX-3.1", "not_in": ["nope", "other"]})


def test_numeric_comparisons_skip_non_numbers() -> None:
    """Values that are not plain decimals never match >, >=, <, <=."""
    raw = "MSH|^~\\&|A|B|||1||ORU^R01|1|P|2.5\rOBX|1|NM|x||<5\rOBX|2|ST|y||high\rOBX|3|NM|z||+7.5\r"
    assert holds("OBX-5 > 7", raw)
    assert not holds("OBX-5 > 8", raw)
    assert not holds("OBX-5 < 5", raw)
    assert holds({"field": "OBX-5", "le": 7.5}, raw)
    assert holds({"field": "OBX-5", "ge": 7.5}, raw)
    assert number_or_none(" 12 ") == 12.0
    assert number_or_none("1e3") is None
    assert number_or_none("nan") is None
    assert number_or_none("") is None


def test_exists_treats_explicit_null_as_empty() -> None:
    """HL7's "" (explicit null) does not count as a value for exists."""
    raw = 'MSH|^~\\&|A|B|||1||ADT^A08|1|P|2.5\rPID|1||123||""\r'
    assert not holds("PID-5 exists", raw)
    assert holds({"field": "PID-5", "exists": False}, raw)
    assert holds("PID-5 == '\"\"'", raw)
    assert holds('PID-6 == ""', raw)
    assert not holds('PID-5 == ""', raw)


def test_numbers_in_yaml_compare_as_text(tmp_path: Path) -> None:
    """YAML numbers become their text, so codes written bare still match."""
    path = write(tmp_path, "filter: {field: OBX-3.1, equals: 150456}\n")
    channel = load_model(Channel, path)
    assert isinstance(channel.filter, FieldTest)
    assert channel.filter.equals == "150456"
    assert compile_condition(channel.filter, HookLoader())(Message.parse(PHILIPS))


def test_nested_any_all_not() -> None:
    """Combinators nest to any depth."""
    condition = {
        "any": [
            {"all": ["PID-8 == F", "MSH-9.1 == ORU"]},
            {"not": {"any": ["MSH-9.1 == ORU", "PID-8 == M"]}},
        ]
    }
    assert holds(condition) is False
    assert holds({"not": condition}) is True


def test_python_condition_with_and_without_id() -> None:
    """A hook decides; its failures become StepFailed named by id or by spec."""
    assert holds({"python": f"{SAMPLES}:is_female"}) is False
    with pytest.raises(StepFailed) as caught:
        holds({"python": f"{SAMPLES}:leaky_failure", "id": "screen"})
    assert str(caught.value) == "step screen failed: ValueError"
    with pytest.raises(StepFailed) as caught:
        holds({"all": ["PID-8 == M", {"python": f"{SAMPLES}:returns_text"}]})
    assert caught.value.step_id == f"filter python {SAMPLES}:returns_text"
    assert caught.value.kind == "TypeError"
    assert "not str" in caught.value.traceback


def test_hooks_load_at_compile_time() -> None:
    """An unloadable hook fails compile_condition, before any message is seen."""
    with pytest.raises(HookError, match="has no attribute 'nope'"):
        compile_condition(parse_condition({"python": f"{SAMPLES}:nope"}), HookLoader())


def test_condition_hooks_lists_every_spec() -> None:
    """condition_hooks walks the tree so a deploy can check every hook at once."""
    condition = parse_condition(
        {"all": [{"python": "a.b:c"}, {"not": {"any": ["PID-8 exists", {"python": "d:e"}]}}]}
    )
    assert condition_hooks(condition) == ["a.b:c", "d:e"]


def test_models_are_frozen_and_forbid_extras() -> None:
    """Conditions are immutable values; unknown keys are errors."""
    test = parse_expression("PID-8 == F")
    with pytest.raises(ValidationError):
        test.equals = "M"  # type: ignore[misc]
    assert test.operator == "equals"
    assert repr(test) == "FieldTest(field='PID-8', equals='F')"
    assert isinstance(parse_condition({"not": "PID-8 exists"}), Not)
    assert isinstance(parse_condition({"python": "a:b", "id": "x"}), PythonCondition)


def test_serialises_back_to_the_yaml_shape() -> None:
    """model_dump by alias gives the mapping form an analyst would write."""
    channel = Channel.model_validate(
        {"filter": {"all": ["OBX-3.1 in [1, 2]", {"not": "PID-8 exists"}]}}
    )
    assert channel.model_dump(by_alias=True) == {
        "filter": {
            "all": (
                {"field": "OBX-3.1", "in": ("1", "2")},
                {"not": {"field": "PID-8", "exists": True}},
            )
        }
    }


BAD = """\
filter:
  all:
    - MSH-9.1 = ORU
    - PID.3 exists
    - PID-3.1 matches ^(MRN
    - OBX-5 > high
    - {field: PID-8, equals: yes}
    - {field: PID-8, equals: F, colour: red}
    - {field: PID-8}
    - {field: PID-8, exists: true, equals: F}
    - any: []
    - not: {field: "pid-3", equals: x}
    - python: not a spec
    - {feld: PID-8, equals: F}
    - [1, 2]
    - OBX-3.1 in 150456
    - {field: OBX-5, gt: true}
    - {field: PID-3.1, matches: "(x"}
    - PID-8 exists now
    - PID-8 ==
    - OBX-3.1 in []
    - OBX-3.1 in [a, [b]]
"""


def test_every_mistake_is_reported_where_it_was_written(tmp_path: Path) -> None:
    """Each bad condition yields one issue at its own line and column with a clear reason."""
    with pytest.raises(ConfigError) as caught:
        load_model(Channel, write(tmp_path, BAD))
    issues = [(i.line, i.column, i.where, i.message) for i in caught.value.issues]
    expected = [
        (3, 7, "filter.all[0]", "compare with '=='"),
        (4, 7, "filter.all[1]", "bad path 'PID.3': separate segment and field with '-'"),
        (5, 7, "filter.all[2]", "bad regular expression: missing ), unterminated subpattern"),
        (6, 7, "filter.all[3]", "'>' compares numbers; 'high' is not a number"),
        (7, 30, "filter.all[4].equals", "YAML read this as a boolean; quote it"),
        (8, 33, "filter.all[5]", "unknown key 'colour'"),
        (9, 7, "filter.all[6]", "a field test takes exactly one of equals, not_equals"),
        (10, 7, "filter.all[7]", "(found: equals, exists)"),
        (11, 12, "filter.all[8].any", "the list needs at least one entry"),
        (12, 20, "filter.all[9].not.field", "bad path 'pid-3': a path starts with"),
        (13, 15, "filter.all[10].python", "a hook is written 'package.module:function'"),
        (14, 7, "filter.all[11]", "exactly one of field, all, any, not, python (found keys: feld"),
        (15, 7, "filter.all[12]", "not a list"),
        (16, 7, "filter.all[13]", "'in' takes a list in brackets"),
        (17, 26, "filter.all[14].gt", "expected a number, not a boolean"),
        (18, 33, "filter.all[15].matches", "bad regular expression"),
        (19, 7, "filter.all[16]", "'exists' takes no value"),
        (20, 7, "filter.all[17]", "'==' needs a value after it"),
        (21, 7, "filter.all[18]", "the list after 'in' is empty"),
        (22, 7, "filter.all[19]", "the list after 'in' holds plain values only"),
    ]
    assert len(issues) == len(expected)
    for got, (line, column, where, text) in zip(issues, expected, strict=True):
        assert got[:3] == (line, column, where), got
        assert text in got[3], got


def test_compile_accepts_plain_data() -> None:
    """compile_condition validates a string or mapping itself, for code that builds rules."""
    predicate = compile_condition("MSH-9.1 == ORU", HookLoader())  # type: ignore[arg-type]
    assert predicate(Message.parse(PHILIPS))
