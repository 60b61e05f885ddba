"""Transformer steps: YAML shapes, where each step applies, failures, tables, output formats."""

from __future__ import annotations

import json
from pathlib import Path as FilePath
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter

from channels.configfile import ConfigError, load_model
from channels.hooks import HookError, HookLoader, StepFailed
from channels.transforms import (
    CopyStep,
    LookupTables,
    RenameCodeStep,
    TransformStep,
    UnknownTable,
    check_hooks,
    check_tables,
    compile_transformer,
    render,
    step_id,
    to_json_document,
)
from profiles.hl7.edit import EditableMessage
from profiles.hl7.header import HeaderError
from profiles.hl7.message import Message
from profiles.hl7.path import Path
from tests.profiles.corpus import corpus_files, file_id, read

PHILIPS = read("pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7")
SAMPLES = "tests.channels.hook_samples"
ADT = (
    "MSH|^~\\&|ADT|HOSP|EHR|HOSP|20240101120000||ADT^A01|7|P|2.5\r"
    "PID|1||123^^^MRN~456^^^SSN||Doe^Jo||19700101|M\r"
    "PV1|1|I|3W^12^A~4E^1^B\r"
    "NTE|1||first note\r"
    "NTE|2||second note\r"
)
STEPS = TypeAdapter(list[TransformStep])


class Channel(BaseModel):
    """A stand-in for the channel file model: tables and a transformer."""

    model_config = ConfigDict(extra="forbid")
    tables: LookupTables = {}
    transformer: list[TransformStep]


def apply(
    steps: list[Any], raw: bytes | str = ADT, tables: dict[str, dict[str, str]] | None = None
) -> EditableMessage:
    """Validate plain step data, compile it and run it on a fresh message."""
    transform = compile_transformer(STEPS.validate_python(steps), tables or {}, HookLoader())
    return transform(EditableMessage.parse(raw))


def test_every_documented_shape_loads_and_applies(tmp_path: FilePath) -> None:
    """The YAML of the module docstring loads from a file and transforms a PCD-01 message."""
    path = tmp_path / "channel.yaml"
    path.write_text(
        """
tables:
  wards: {"3W": WARD3, 4: WARD4}
transformer:
  - set: PID-8
    value: F
  - copy: PID-3.1
    to: PID-2.1
  - delete: PID-5.3
  - map: PV1-3.1
    table: wards
    default: keep
  - drop_segments: [NTE, ZXX]
  - keep_segments: [MSH, PID, OBR, OBX]
  - rename_code: OBX-3
    from: "150456^MDC_PULS_OXIM_SAT_O2^MDC"
    to: "59408-5^Oxygen saturation^LN"
  - python: tests.channels.hook_samples:tag_ward
    id: my-step
"""
    )
    channel = load_model(Channel, path)
    assert channel.tables == {"wards": {"3W": "WARD3", "4": "WARD4"}}
    message = compile_transformer(channel.transformer, channel.tables, HookLoader())(
        EditableMessage.parse(PHILIPS)
    )
    assert message.get("PID-8") == "F"
    assert message.get("PID-2.1") == "HO2009001"
    assert message.get("PID-5") == "Hon^Albert^^^^^L"
    assert message.get("OBX[16]-3") == "59408-5^Oxygen saturation^LN"
    assert message.segment_names()[-1] == "PV1"
    assert message.get("PV1-3.1") == "HOOKED"


def test_set_applies_to_every_segment_unless_indexed() -> None:
    """set without a segment index writes every NTE; with one, only that NTE."""
    message = apply([{"set": "NTE-3", "value": "redacted"}])
    assert message.get_all("NTE-3") == ["redacted", "redacted"]
    message = apply([{"set": "NTE[2]-3", "value": "x"}])
    assert message.get_all("NTE-3") == ["first note", "x"]


def test_set_missing_segment_policy() -> None:
    """A missing segment is appended by default, skipped or an error on request."""
    assert apply([{"set": "ZXX-1", "value": "a"}]).segment_names()[-1] == "ZXX"
    assert apply([{"set": "ZXX-1", "value": "a", "missing_segment": "skip"}]).count("ZXX") == 0
    with pytest.raises(StepFailed) as caught:
        apply([{"set": "ZXX-1", "value": "a", "missing_segment": "error", "id": "need-zxx"}])
    assert str(caught.value) == "step need-zxx failed: EditError"


def test_set_escapes_values() -> None:
    """A value with delimiters is escaped, so it stays one value."""
    message = apply([{"set": "PID-5.1", "value": "O'Brien|Smith^Jr"}])
    assert message.get("PID-5.1") == "O'Brien|Smith^Jr"
    assert message.get("PID-5.2") == "Jo"


def test_copy_keeps_structure_and_escapes() -> None:
    """copy moves text as written: a composite stays composite, escapes stay escapes."""
    raw = ADT.replace("Doe^Jo", "D\\S\\oe^Jo")
    message = apply([{"copy": "PID-3", "to": "PID-2"}, {"copy": "PID-5.1", "to": "PID-6.1"}], raw)
    assert message.get("PID-2.4") == "MRN"
    assert message.get("PID-6.1") == "D^oe"
    assert message.get("PID-6.2") == ""


def test_copy_into_a_deeper_level_escapes_structure() -> None:
    """A composite copied into a component cannot shift later components."""
    message = apply([{"copy": "PID-3", "to": "PID-5.1"}])
    assert message.get("PID-5.2") == "Jo"
    assert message.get("PID-5.1.1") == "123^^^MRN"


def test_copy_per_segment_within_the_same_segment_type() -> None:
    """OBX-3.2 to OBX-3.9 copies within each OBX, not the first OBX's text everywhere."""
    message = apply([{"copy": "OBX-3.2", "to": "OBX-3.9"}], PHILIPS)
    assert message.get_all("OBX-3.9") == message.get_all("OBX-3.2")
    assert len(set(message.get_all("OBX-3.9"))) > 5


def test_copy_of_an_empty_source_clears_the_target() -> None:
    """Copying nothing leaves the target empty rather than stale."""
    message = apply([{"copy": "PID-19", "to": "PID-8"}])
    assert message.get("PID-8") == ""
    assert apply([{"copy": "PID-19", "to": "ZZZ-1"}]).count("ZZZ") == 0


def test_delete_applies_to_every_segment() -> None:
    """delete clears the path in each segment of its name; indexed, only one."""
    assert apply([{"delete": "NTE-3"}]).get_all("NTE-3") == ["", ""]
    assert apply([{"delete": "NTE[1]-3"}]).get_all("NTE-3") == ["", "second note"]
    assert apply([{"delete": "PID-3"}]).get_all("PID-3") == [""]


TABLES = {"wards": {"3W": "WARD3", "4E": "WARD4"}, "sex": {"M": "male", "": "unknown"}}


def test_map_visits_every_repetition() -> None:
    """map replaces the value in every repetition through the table."""
    message = apply([{"map": "PV1-3.1", "table": "wards"}], tables=TABLES)
    assert message.get_all("PV1-3.1") == ["WARD3", "WARD4"]
    assert message.get("PV1-3[2].2") == "1"


@pytest.mark.parametrize(
    ("default", "expected"),
    [("keep", ["3W", "WARD4"]), ("empty", ["", "WARD4"]), ("UNKNOWN", ["UNKNOWN", "WARD4"])],
)
def test_map_defaults(default: str, expected: list[str]) -> None:
    """Values missing from the table are kept, emptied or replaced by a literal."""
    tables = {"wards": {"4E": "WARD4"}}
    message = apply([{"map": "PV1-3.1", "table": "wards", "default": default}], tables=tables)
    assert message.get_all("PV1-3.1") == expected


def test_map_default_error_names_no_value() -> None:
    """default: error fails the step with UnmappedValue; the value is not in the text."""
    with pytest.raises(StepFailed) as caught:
        apply([{"map": "PV1-3.1", "table": "wards", "default": "error"}], tables={"wards": {}})
    assert str(caught.value) == "step transformer[0] map failed: UnmappedValue"
    assert "table 'wards' has no entry for the value at PV1[1]-3[1].1" in caught.value.traceback
    assert "3W" not in caught.value.traceback


def test_map_leaves_empty_values_unless_the_table_maps_them() -> None:
    """Absent values stay absent, except where the table has an entry for ''."""
    message = apply([{"map": "PID-9", "table": "wards", "default": "error"}], tables=TABLES)
    assert message.get("PID-9") == ""
    message = apply(
        [{"map": "PID-9", "table": "sex"}, {"map": "PID-8", "table": "sex"}], tables=TABLES
    )
    assert message.get("PID-9") == "unknown"
    assert message.get("PID-8") == "male"


def test_rename_code_matches_code_and_system_not_text() -> None:
    """from's text is not compared; its system is; to replaces the parts it names."""
    message = apply(
        [
            {"rename_code": "OBX-3", "from": "150456^whatever^MDC", "to": "59408-5^SpO2^LN"},
            {"rename_code": "OBX-3", "from": "150022^^LN", "to": "nope"},
            {"rename_code": "OBX-3", "from": "150023", "to": "8478-0"},
            {"rename_code": "OBX-3", "from": {"code": 147842}, "to": "8867-4^^LN"},
        ],
        PHILIPS,
    )
    codes = message.get_all("OBX-3")
    assert "59408-5^SpO2^LN" in codes
    assert "150022^MDC_PRESS_BLD_NONINV_DIA^MDC" in codes
    assert "8478-0^MDC_PRESS_BLD_NONINV_MEAN^MDC" in codes
    assert "8867-4^^LN" in codes


def test_rename_code_in_every_repetition() -> None:
    """A repeating coded field is recoded in each repetition."""
    raw = ADT + "OBX|1|CE|A^a^X~A^b^X~B^c^X\r"
    message = apply([{"rename_code": "OBX-3", "from": "A^^X", "to": "Z^^Y"}], raw)
    assert message.get_all("OBX-3") == ["Z^^Y", "Z^^Y", "B^c^X"]


def test_rename_code_finds_codes_that_are_escaped_or_only_a_prefix_elsewhere() -> None:
    """A code written with escapes is still found, and a code that merely starts another
    segment's code is not renamed there."""
    raw = ADT + "OBX|1|CE|A\\T\\B^amp^X\rOBX|2|CE|15^n^X\rOBX|3|CE|150^m^X\r"
    message = apply([{"rename_code": "OBX-3", "from": {"code": "A&B", "system": "X"},
                      "to": "C^^X"},
                     {"rename_code": "OBX-3", "from": "15^^X", "to": "16^^X"}], raw)
    assert message.get_all("OBX-3.1") == ["C", "16", "150"]


def test_code_reads_back_as_written() -> None:
    """A rename step serialises to the code^text^system notation it was written in."""
    step = STEPS.validate_python([{"rename_code": "OBX-3", "from": "1^a^B", "to": {"code": "2"}}])[
        0
    ]
    assert isinstance(step, RenameCodeStep)
    assert str(step.from_) == "1^a^B"
    assert step.model_dump(by_alias=True, exclude_none=True)["to"] == "2"


def test_drop_and_keep_segments() -> None:
    """drop_segments and keep_segments filter by name; MSH always stays."""
    assert apply([{"drop_segments": ["NTE"]}]).segment_names() == ["MSH", "PID", "PV1"]
    assert apply([{"drop_segments": "NTE"}]).count("NTE") == 0
    assert apply([{"keep_segments": ["PID"]}]).segment_names() == ["MSH", "PID"]


def test_python_steps_edit_or_replace() -> None:
    """A hook edits in place (returns None) or returns a new message that later steps see."""
    message = apply([{"python": f"{SAMPLES}:tag_ward"}])
    assert message.get("PV1-3.1") == "HOOKED"
    message = apply([{"python": f"{SAMPLES}:replace_message"}, {"set": "PID-8", "value": "F"}])
    assert message.segment_names() == ["MSH", "PID"]
    assert (message.get("MSH-5"), message.get("PID-8")) == ("REPLACED", "F")


def test_python_step_failures_become_step_failed() -> None:
    """A wrong return type or an exception fails the step by id, content kept out of str()."""
    with pytest.raises(StepFailed) as caught:
        apply([{"set": "PID-8", "value": "F"}, {"python": f"{SAMPLES}:returns_number"}])
    assert str(caught.value) == "step transformer[1] python failed: TypeError"
    with pytest.raises(StepFailed) as caught:
        apply([{"python": f"{SAMPLES}:leaky_failure", "id": "enrich"}])
    assert str(caught.value) == "step enrich failed: ValueError"
    assert "Doe" in caught.value.traceback


def test_transformer_edits_in_place() -> None:
    """The compiled transformer returns the message it was given when no hook replaces it."""
    transform = compile_transformer(
        STEPS.validate_python([{"set": "PID-8", "value": "F"}]), {}, HookLoader()
    )
    message = EditableMessage.parse(ADT)
    assert transform(message) is message


def test_undefined_tables_are_reported_by_step_index() -> None:
    """check_tables lists every map step with an unknown table; compile refuses them."""
    steps = STEPS.validate_python(
        [
            {"map": "PV1-3.1", "table": "wards"},
            {"set": "PID-8", "value": "F"},
            {"map": "PID-8", "table": "sexes"},
        ]
    )
    assert check_tables(steps, TABLES) == [
        (2, "table 'sexes' is not defined (defined: sex, wards)")
    ]
    assert check_tables(steps, {}) == [
        (0, "table 'wards' is not defined (the channel defines no tables)"),
        (2, "table 'sexes' is not defined (the channel defines no tables)"),
    ]
    with pytest.raises(UnknownTable, match=r"transformer\[2\]: table 'sexes'"):
        compile_transformer(steps, TABLES, HookLoader())


def test_unloadable_hooks_are_reported_by_step_index() -> None:
    """check_hooks lists python steps whose hooks fail to load; compile raises HookError."""
    steps = STEPS.validate_python(
        [{"python": f"{SAMPLES}:tag_ward"}, {"python": f"{SAMPLES}:NOT_CALLABLE"}]
    )
    problems = check_hooks(steps, HookLoader())
    assert [index for index, _ in problems] == [1]
    assert "not a function" in problems[0][1]
    with pytest.raises(HookError):
        compile_transformer(steps, {}, HookLoader())


def test_step_ids() -> None:
    """A step is named by its id, or by its place and kind."""
    steps = STEPS.validate_python(
        [{"copy": "PID-3", "to": "PID-2"}, {"delete": "PID-3", "id": "x"}]
    )
    assert isinstance(steps[0], CopyStep)
    assert [step_id(i, s) for i, s in enumerate(steps)] == ["transformer[0] copy", "x"]


BAD = """\
transformer:
  - set: PID.8
    value: F
  - set: PID-8
  - copy: PID-3.1
    too: PID-2.1
  - delete: PID-19
    value: x
  - drop_segments: [MSH]
  - keep_segments: [pid]
  - rename_code: OBX-3.1
    from: a^b^c^d
    to: yes
  - python: nope
  - {sett: PID-8}
  - PID-8 == F
  - set: PID-8
    value: F
    missing_segment: create
"""


def test_every_mistake_is_reported_where_it_was_written(tmp_path: FilePath) -> None:
    """Each bad step yields located issues that say what is wrong."""
    path = tmp_path / "channel.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as caught:
        load_model(Channel, path)
    issues = [(i.line, i.column, i.where, i.message) for i in caught.value.issues]
    expected = [
        (2, 10, "transformer[0].set", "bad path 'PID.8'"),
        (4, 5, "transformer[1].value", "Field required"),
        (5, 5, "transformer[2].to", "Field required"),
        (6, 5, "transformer[2]", "unknown key 'too'"),
        (8, 5, "transformer[3]", "unknown key 'value'"),
        (9, 20, "transformer[4].drop_segments", "MSH cannot be dropped"),
        (10, 20, "transformer[5].keep_segments", "'pid' is not a segment name"),
        (11, 18, "transformer[6].rename_code", "not a component"),
        (12, 11, "transformer[6].from", "a code is written code, code^text or code^text^system"),
        (13, 9, "transformer[6].to", "YAML read this as a boolean"),
        (14, 13, "transformer[7].python", "package.module:function"),
        (15, 5, "transformer[8]", "a transformer step has exactly one of set, copy, delete, map"),
        (16, 5, "transformer[9]", "a transformer step is a mapping"),
        (19, 22, "transformer[10].missing_segment", "'append', 'skip' or 'error'"),
    ]
    assert len(issues) == len(expected)
    for got, (line, column, where, text) in zip(issues, expected, strict=True):
        assert got[:3] == (line, column, where), got
        assert text in got[3], got


def test_render_hl7_is_the_encoded_message() -> None:
    """hl7 output is exactly EditableMessage.encode()."""
    message = apply([{"set": "PID-8", "value": "F"}])
    assert render(message, "hl7") == message.encode()
    with pytest.raises(ValueError, match="unknown output format 'xml'"):
        render(message, "xml")  # type: ignore[arg-type]


def test_render_json_shape() -> None:
    """JSON output: header facts, MSH numbering, repetitions, components, sub-components."""
    raw = ADT.replace("Doe^Jo", "D\\S\\oe^Jö&x") + "ZZZ|\r"
    message = EditableMessage.parse(raw)
    document = json.loads(render(message, "json").decode("utf-8"))
    assert document["format"] == "hl7v2+json/1"
    assert document["delimiters"] == "|^~\\&"
    assert document["header"]["message_type"] == "ADT"
    assert document["header"]["trigger_event"] == "A01"
    assert document["header"]["control_id"] == "7"
    assert document["header"]["sending_application"] == "ADT"
    msh, pid = document["segments"][0], document["segments"][1]
    assert msh["fields"][0] == [["|"]]
    assert msh["fields"][1] == [["^~\\&"]]
    assert msh["fields"][8] == [["ADT", "A01"]]
    assert pid["name"] == "PID"
    assert pid["fields"][1] == []
    assert pid["fields"][2] == [["123", "", "", "MRN"], ["456", "", "", "SSN"]]
    assert pid["fields"][4] == [["D^oe", ["Jö", "x"]]]
    assert document["segments"][-1] == {"name": "ZZZ", "fields": [[]]}


def _readable_files() -> list[FilePath]:
    files = []
    for path in corpus_files():
        try:
            Message.parse(path.read_bytes())
        except HeaderError:
            continue
        files.append(path)
    return files


@pytest.mark.parametrize("path", _readable_files(), ids=file_id)
def test_json_agrees_with_field_access(path: FilePath) -> None:
    """Every leaf of the JSON document equals Message.get at the same path."""
    raw = path.read_bytes()
    message = Message.parse(raw)
    document = to_json_document(EditableMessage.parse(raw))
    counts: dict[str, int] = {}
    for segment in document["segments"]:
        name = segment["name"]
        counts[name] = index = counts.get(name, 0) + 1
        if len(name) != 3 or not name.isalnum() or not name.isupper():
            continue
        for number, field in enumerate(segment["fields"], start=1):
            if name == "MSH" and number <= 2:
                continue
            for r, repetition in enumerate(field, start=1):
                for c, component in enumerate(repetition, start=1):
                    parts = component if isinstance(component, list) else [component]
                    for s, value in enumerate(parts, start=1):
                        leaf = Path(name, number, index, r, c, s)
                        assert message.get(leaf) == value, leaf
