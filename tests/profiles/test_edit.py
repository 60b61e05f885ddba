"""EditableMessage: corpus round trips, agreement with Message and python-hl7, edit rules."""

from __future__ import annotations

import re
from pathlib import Path as FilePath

import hl7
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.hl7.batch import BatchError, split_batch
from profiles.hl7.edit import EditableMessage, EditError, FieldReader
from profiles.hl7.header import HeaderError
from profiles.hl7.message import Message
from profiles.hl7.path import Path, PathError
from tests.profiles.corpus import corpus_files, file_id, read

PHILIPS = "pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7"
BRACE = "edge/hapi-bar-p01-custom-subcomponent-brace.hl7"
PLAIN = "MSH|^~\\&|MON|ICU|EHR|HOSP|20240101120000||ORU^R01|42|P|2.6\rPID|1||123^^^MRN||Doe^Jo\r"


def _messages(path: FilePath) -> list[bytes]:
    """The readable messages in one corpus file (batches split, broken envelopes skipped)."""
    raw = path.read_bytes()
    try:
        parts = split_batch(raw)
    except BatchError:
        parts = [raw]
    readable = []
    for part in parts:
        try:
            Message.parse(part)
        except HeaderError:
            continue
        readable.append(part)
    return readable


def _segments_of(raw: bytes) -> list[bytes]:
    """Segments of raw bytes split the naive way: any line ending, blank lines dropped."""
    body = raw.lstrip(b"\xef\xbb\xbf \t\r\n\x0b\x0c")
    return [s for s in re.split(rb"\r\n|\r|\n", body) if s.strip()]


ALL_FILES = [p for p in corpus_files() if _messages(p)]
# No deadline: a shared, loaded machine must not turn slowness into failures.
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.parametrize("path", ALL_FILES, ids=file_id)
def test_untouched_message_encodes_to_the_input_segments(path: FilePath) -> None:
    """Encoding an unedited message gives back every input segment byte for byte."""
    for raw in _messages(path):
        message = EditableMessage.parse(raw)
        assert _segments_of(message.encode()) == _segments_of(raw)
        assert message.encode().endswith(b"\r")


@pytest.mark.parametrize("path", ALL_FILES, ids=file_id)
def test_reads_agree_with_message_on_every_path(path: FilePath) -> None:
    """get and get_all answer exactly as the read-only Message does, at every level."""
    for raw in _messages(path):
        message = Message.parse(raw)
        editable = EditableMessage.parse(raw)
        reader: FieldReader = editable
        d = message.delimiters
        for name in dict.fromkeys(s.name for s in message.segments()):
            if not re.fullmatch(r"[A-Z][A-Z0-9]{2}", name):
                continue
            for index, segment in enumerate(message.segments(name), start=1):
                for field in range(1, segment.field_count() + 2):
                    paths = [Path(name, field), Path(name, field, index)]
                    for r, rep in enumerate(segment.repetitions(field), start=1):
                        for c, comp in enumerate(rep.split(d.component), start=1):
                            paths.append(Path(name, field, index, r, c))
                            paths.append(Path(name, field, None, None, c))
                            for s in range(1, comp.count(d.subcomponent) + 3):
                                paths.append(Path(name, field, index, r, c, s))
                    for p in paths:
                        assert reader.get(p) == message.get(p), p
                        assert reader.get_all(p) == message.get_all(p), p


def test_edits_agree_with_python_hl7() -> None:
    """After edits, python-hl7 parsing the encoded text reads the values that were set."""
    message = EditableMessage.parse(read(PHILIPS))
    edits = {
        Path.parse("MSH-5"): "EHR",
        Path.parse("PID-8"): "F",
        Path.parse("PID-3[2].1"): "A-99",
        Path.parse("PID-3[2].4.2"): "1.2.3",
        Path.parse("OBX[2]-5"): "7 | 8 ^ 9 & 10 ~ 11 \\ 12",
        Path.parse("PV1-3.2"): "Bed 4",
        Path.parse("ZZZ-2.3"): "appended",
    }
    for path, value in edits.items():
        message.set(path, value)
    parsed = hl7.parse(message.encode().decode(message.codec))
    for path, value in edits.items():
        found = parsed.extract_field(
            path.segment,
            path.segment_index or 1,
            path.field,
            path.repetition or 1,
            path.component or 1,
            path.subcomponent or 1,
        )
        assert found == value, path
        assert message.get(path) == value
    assert str(parsed.segment("OBX")[3]) == message.get_raw("OBX-3")


def test_untouched_segments_are_emitted_as_written() -> None:
    """Editing PID leaves every other segment's text identical, OBX spacing and all."""
    raw = read(PHILIPS)
    before = _segments_of(raw)
    message = EditableMessage.parse(raw)
    message.set("PID-8", "F")
    after = _segments_of(message.encode())
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert [before[i][:3] for i in changed] == [b"PID"]


@PROPERTY
@given(
    value=st.text(),
    path=st.sampled_from(["PID-5", "PID-3.4", "PID-3[2].4.2", "OBX[2]-5[3].1", "ZXY-1.2.3"]),
)
def test_set_then_get_returns_the_value(value: str, path: str) -> None:
    """Any text, delimiters and control characters included, reads back as it was set."""
    message = EditableMessage.parse(PLAIN)
    message.set(path, value)
    assert message.get(path) == value
    assert EditableMessage.parse(message.encode()).get(path) == value
    assert Message.parse(message.encode()).get(path) == value
    assert message.get("PID-3.1") == "123"


@PROPERTY
@given(value=st.text())
def test_set_then_get_with_custom_delimiters(value: str) -> None:
    """With '}' as sub-component separator, values are escaped with the message's own."""
    message = EditableMessage.parse(read(BRACE))
    message.set("PID-11.1.2", value)
    assert message.get("PID-11.1.2") == value
    assert Message.parse(message.encode()).get("PID-11.1.2") == value


def test_whole_field_and_first_repetition_rules() -> None:
    """A field path replaces all repetitions; a component path edits the first one."""
    message = EditableMessage.parse(PLAIN + "NK1|1|A~B~C\r")
    message.set("NK1-2", "Z")
    assert message.get_all("NK1-2") == ["Z"]
    message.set("NK1-2[3]", "third")
    assert message.get_raw("NK1-2[3]") == "third"
    assert message.get_all("NK1-2") == ["Z", "", "third"]
    message.set("NK1-2.2", "two")
    assert message.get_all("NK1-2") == ["Z^two", "", "third"]


def test_set_creates_missing_parts_and_trims_trailing_empties() -> None:
    """Missing fields and components are padded; cleared trailing parts are dropped."""
    message = EditableMessage.parse(PLAIN)
    message.set("PID-10.3", "x")
    assert message.segments("PID")[0].text == "PID|1||123^^^MRN||Doe^Jo|||||^^x"
    message.set("PID-3.4", "")
    assert message.get("PID-3") == "123"
    message.set("PID-3.2.2", "s")
    assert message.get_raw("PID-3") == "123^&s"


def test_missing_segment_policy() -> None:
    """set appends a missing segment by default, or skips, or raises EditError."""
    message = EditableMessage.parse(PLAIN)
    message.set("ZXX-1", "a", missing="skip")
    assert message.count("ZXX") == 0
    with pytest.raises(EditError, match=r"ZXX-1: the message has no such segment"):
        message.set("ZXX-1", "a", missing="error")
    message.set("OBX[2]-3", "b")
    assert message.segment_names() == ["MSH", "PID", "OBX", "OBX"]
    assert message.get("OBX[1]-3") == ""
    assert message.get("OBX[2]-3") == "b"
    with pytest.raises(EditError, match="exactly one MSH"):
        message.set("MSH[2]-3", "x")


def test_delete_clears_and_leaves_absent_values_alone() -> None:
    """delete clears a field or component; absent targets change nothing, not even text."""
    message = EditableMessage.parse(PLAIN + "NK1|1|~B\r")
    message.delete("PID-3.4")
    assert message.get_raw("PID-3") == "123"
    message.delete("NK1-2")
    assert message.segments("NK1")[0].text == "NK1|1|"
    message.delete("PID-30")
    message.delete("ZZZ-1")
    message.delete("PID-5.7")
    assert message.segment_names() == ["MSH", "PID", "NK1"]
    assert message.segments("PID")[0].text == "PID|1||123||Doe^Jo"


def test_msh_delimiter_fields_cannot_be_edited() -> None:
    """MSH-1 and MSH-2 are the delimiters: set and delete refuse them, other MSH fields work."""
    message = EditableMessage.parse(PLAIN)
    for path in ("MSH-1", "MSH-2", "MSH-2.1"):
        with pytest.raises(EditError, match="hold the delimiters"):
            message.set(path, "x")
        with pytest.raises(EditError):
            message.delete(path)
    message.set("MSH-5", "NEW")
    message.set("MSH-9.3", "ORU_R01")
    assert message.text.startswith("MSH|^~\\&|MON|ICU|NEW|HOSP|20240101120000||ORU^R01^ORU_R01|")
    assert message.get("MSH-1") == "|"
    assert message.get("MSH-2") == "^~\\&"


def test_drop_and_keep_segments() -> None:
    """drop_segments removes named segments; keep_segments keeps the named ones plus MSH."""
    raw = read(PHILIPS)
    message = EditableMessage.parse(raw)
    message.drop_segments(["OBX", "PV1"])
    assert message.segment_names() == ["MSH", "PID", "OBR"]
    with pytest.raises(EditError, match="MSH cannot be dropped"):
        message.drop_segments(["MSH"])
    kept = EditableMessage.parse(raw)
    kept.keep_segments(["PID"])
    assert kept.segment_names() == ["MSH", "PID"]
    kept.keep_segments("PID")
    assert kept.segment_names() == ["MSH", "PID"]
    kept.drop_segments("PID")
    assert kept.segment_names() == ["MSH"]


def test_copy_is_independent() -> None:
    """Editing a copy leaves the original unchanged, and the other way round."""
    original = EditableMessage.parse(PLAIN)
    original.set("PID-8", "M")
    duplicate = original.copy()
    duplicate.set("PID-8", "F")
    duplicate.set("PID-5.1", "Roe")
    duplicate.drop_segments(["PID"])
    original.set("MSH-10", "43")
    assert original.get("PID-8") == "M"
    assert original.get("PID-5.1") == "Doe"
    assert duplicate.count("PID") == 0
    assert duplicate.get("MSH-10") == "42"


def test_set_raw_keeps_escapes_and_fits_structure() -> None:
    """set_raw keeps escape sequences; separators above the target level are escaped."""
    message = EditableMessage.parse(PLAIN)
    message.set_raw("PID-2", message.get_raw("PID-3"))
    assert message.get("PID-2.4") == "MRN"
    message.set_raw("PID-4.1", "a^b&c~d\\T\\e")
    assert message.get("PID-4.1.1") == "a^b"
    assert message.get("PID-4.1.2") == "c~d&e"
    assert message.get("PID-4.2") == ""
    message.set_raw("PID-6", "x~y")
    assert message.get_all("PID-6") == ["x", "y"]


def test_control_characters_are_escaped() -> None:
    """MLLP framing bytes and line breaks in a value never reach the wire unescaped."""
    message = EditableMessage.parse(PLAIN)
    message.set("PID-5.1", "a\x0bb\x1cc\rd\ne\tf")
    encoded = message.encode()
    assert b"\x0b" not in encoded
    assert b"\x1c" not in encoded
    assert encoded.count(b"\r") == 2
    assert Message.parse(encoded).get("PID-5.1") == "a\x0bb\x1cc\rd\ne\tf"


def test_encode_uses_the_declared_character_set() -> None:
    """MSH-18 8859/1 writes Latin-1 bytes; characters it cannot hold raise without the value."""
    raw = PLAIN.replace("2.6", "2.6||||||8859/1")
    message = EditableMessage.parse(raw)
    message.set("PID-5.1", "Müller")
    assert b"M\xfcller" in message.encode()
    message.set("PID-5.2", "€uro")
    with pytest.raises(EditError) as caught:
        message.encode()
    assert "segment 2 (PID)" in str(caught.value)
    assert "uro" not in str(caught.value)
    message.set("MSH-18", "UNICODE UTF-8")
    assert message.codec == "utf-8"
    assert "€uro".encode() in message.encode()


def test_encode_without_declared_character_set_falls_back_to_utf8() -> None:
    """An ASCII message with no MSH-18 is written as UTF-8 once a value needs it."""
    message = EditableMessage.parse(PLAIN)
    assert message.codec == "ascii"
    message.set("PID-5.1", "Nächname")
    encoded = message.encode()
    assert "Nächname".encode() in encoded
    assert Message.parse(encoded).get("PID-5.1") == "Nächname"


def test_latin1_message_keeps_its_bytes() -> None:
    """A Latin-1 message edited elsewhere keeps its non-ASCII bytes as they were."""
    raw = read("edge/ipf-adt-a40-latin1-bytes-in-msh.hl7")
    message = EditableMessage.parse(raw)
    message.set("PID-8", "F")
    assert Message.parse(message.encode()).get("MSH-5") == "BLÄH"
    assert _segments_of(message.encode())[0] == _segments_of(raw)[0]


def test_segments_snapshot_and_bad_paths() -> None:
    """segments() reflects edits; malformed paths raise PathError; repr shows no content."""
    message = EditableMessage.parse(PLAIN)
    message.set("PID-8", "F")
    pid = message.segments("PID")[0]
    assert pid.field(8) == "F"
    assert [s.name for s in message.segments()] == ["MSH", "PID"]
    with pytest.raises(PathError):
        message.set("PID.8", "x")
    with pytest.raises(PathError):
        message.get("pid-8")
    assert "Doe" not in repr(message)


def test_set_refuses_non_text_values() -> None:
    """A hook passing a number instead of text gets a clear EditError."""
    message = EditableMessage.parse(PLAIN)
    with pytest.raises(EditError, match="must be text, not int"):
        message.set("PID-8", 5)  # type: ignore[arg-type]


def test_locations_expand_segments_and_repetitions() -> None:
    """locations lists one path per segment and repetition unless the path pins them."""
    message = EditableMessage.parse(PLAIN + "OBX|1||A~B\rOBX|2||C\r")
    assert [str(p) for p in message.locations("OBX-3.1")] == [
        "OBX[1]-3[1].1",
        "OBX[1]-3[2].1",
        "OBX[2]-3[1].1",
    ]
    assert [str(p) for p in message.locations("OBX[2]-3")] == ["OBX[2]-3[1]"]
    assert [str(p) for p in message.locations("OBX-3[2]")] == ["OBX[1]-3[2]", "OBX[2]-3[2]"]
    assert message.locations("OBX[3]-3") == []
    assert message.locations("ZZZ-1") == []


def test_reads_stay_right_after_structural_edits() -> None:
    """Values read before a copy, a drop or an append never go stale afterwards."""
    message = EditableMessage.parse(PLAIN + "OBX|1||A\rOBX|2||B\r")
    assert message.get_all("OBX-3") == ["A", "B"]
    duplicate = message.copy()
    duplicate.set("OBX[2]-3", "changed")
    assert message.get("OBX[2]-3") == "B"
    message.drop_segments(["PID"])
    assert message.get("OBX[2]-3") == "B"
    assert message.get("PID-3.1") == ""
    message.set("OBX[3]-3", "C")
    assert message.get_all("OBX-3") == ["A", "B", "C"]
    message.keep_segments(["OBX"])
    assert message.segment_names() == ["MSH", "OBX", "OBX", "OBX"]
    assert duplicate.get_all("OBX-3") == ["A", "changed"]
    assert duplicate.get("PID-3.1") == "123"
