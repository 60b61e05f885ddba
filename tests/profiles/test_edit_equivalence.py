"""One-pass reads and edits agree with the path-by-path ones they stand in for.

``recode``, ``component_value`` and ``escape`` each replace a longer way of reaching the
same answer; these tests generate messages full of delimiters, escape sequences,
repetitions and short segments and compare both ways on them.
"""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from profiles.hl7.charsets import codec_for
from profiles.hl7.delimiters import DEFAULT_DELIMITERS, Delimiters
from profiles.hl7.edit import EditableMessage, EditError
from profiles.hl7.escape import escape, unescape
from profiles.hl7.message import Message, component_value, select_part, value_at
from profiles.hl7.path import Path

PROPERTY = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
OTHER = Delimiters("#", "$", "*", "!", "%")
_TO_OTHER = str.maketrans("|^~\\&", "#$*!%")

# Pieces of a component: codes, prefixes of codes, escape sequences, sub-components.
PIECES = ["", "A", "B", "15", "150", "150456", "MDC", "LN", "X", "\\T\\", "\\S\\", "\\E\\",
          "\\X31\\", "\\H\\", "&", "a b", "\\F\\"]
# Whole components as codes and systems are written, plainly and with escapes.
WHOLE = ["", "A", "15", "150456", "X", "MDC", "A\\T\\B", "1\\X35\\", "A&B"]
component_text = st.one_of(st.sampled_from(WHOLE),
                           st.lists(st.sampled_from(PIECES), max_size=3).map("".join))
repetition_text = st.lists(component_text, min_size=1, max_size=4).map("^".join)
coded_text = st.tuples(st.sampled_from(["A", "15", "1\\X35\\", "A\\T\\B", "A&B"]),
                       component_text,
                       st.sampled_from(["X", "MDC", "", "M\\X44\\C"])).map("^".join)
field_text = st.lists(st.one_of(coded_text, repetition_text), min_size=1,
                      max_size=3).map("~".join)
obx = st.one_of(
    st.just("OBX"),
    st.just("OBX|1"),
    field_text.map(lambda field: f"OBX|1|CE|{field}"),
    field_text.map(lambda field: f"OBX|2|CE|{field}|x|{field}"),
)
MSH = "MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.6"


@st.composite
def messages(draw: st.DrawFn) -> tuple[str, Delimiters]:
    """Text of a message with OBX segments (some short, some without OBX-3), and its
    delimiters: the usual ones or an unusual set."""
    segments = [MSH, "PID|1||" + draw(field_text), *draw(st.lists(obx, max_size=6))]
    text = "\r".join(segments) + "\r"
    if draw(st.booleans()):
        return text, DEFAULT_DELIMITERS
    return text.translate(_TO_OTHER), OTHER


def parse_text(text: str, d: Delimiters) -> EditableMessage:
    """An editable message of generated text (CR-terminated segments)."""
    return EditableMessage(text.split("\r")[:-1], d, "utf-8")


codes = st.one_of(st.sampled_from(["A", "15"]),
                  st.sampled_from(["150", "150456", "A&B", "", "|", "X"]))
systems = st.one_of(st.none(), st.sampled_from(["", "X", "MDC", "LN"]))
parts = st.sampled_from([None, "", "Z", "59408-5", "a|b", "N^M", "\\", "\x01"])
paths = st.one_of(st.just("OBX-3"),
                  st.sampled_from(["OBX-3[2]", "OBX[2]-3", "OBX[2]-3[1]", "OBX-4", "OBX-9",
                                   "PID-3", "MSH-1", "MSH-2", "MSH-9", "ZZZ-1"]))


def _recode_place_by_place(
    message: EditableMessage, path: Path, code: str, system: str | None,
    replacement: tuple[str | None, str | None, str | None],
) -> int:
    """What ``recode`` promises, spelled out with locations, get and set."""
    changed = 0
    for location in message.locations(path):
        at = [Path(location.segment, location.field, location.segment_index,
                   location.repetition, c) for c in (1, 2, 3)]
        if message.get(at[0]) != code:
            continue
        if system and message.get(at[2]) != system:
            continue
        written = False
        for component, value in zip(at, replacement, strict=True):
            if value is not None:
                message.set(component, value)
                written = True
        changed += written
    return changed


def _outcome(edit: Callable[[], int]) -> int | str:
    try:
        return edit()
    except EditError as error:
        return f"EditError: {error}"


@PROPERTY
@given(message=messages(), path=paths, code=codes, system=systems,
       replacement=st.tuples(parts, parts, parts))
def test_recode_agrees_with_get_and_set_place_by_place(
    message: tuple[str, Delimiters], path: str, code: str, system: str | None,
    replacement: tuple[str | None, str | None, str | None],
) -> None:
    """recode changes the same places to the same text, and fails the same way."""
    text, d = message
    one_pass, reference = parse_text(text, d), parse_text(text, d)
    parsed = Path.parse(path)
    got = _outcome(lambda: one_pass.recode(parsed, code, system, replacement))
    expected = _outcome(lambda: _recode_place_by_place(reference, parsed, code, system,
                                                       replacement))
    assert got == expected
    assert one_pass.text == reference.text


def _component_by_parts(text: str, component: int, d: Delimiters, codec: str) -> str:
    """A component read the long way: split out, then decoded unless sub-components remain."""
    text = select_part(text, d.component, component)
    return text if d.subcomponent in text else unescape(text, d, codec)


@PROPERTY
@given(repetition=repetition_text, component=st.integers(1, 5),
       d=st.sampled_from([DEFAULT_DELIMITERS, OTHER]))
def test_component_value_reads_a_component_as_splitting_it_out(
    repetition: str, component: int, d: Delimiters
) -> None:
    """component_value (and value_at, which uses it) read one component as splitting the
    repetition and decoding the part would."""
    if d is OTHER:
        repetition = repetition.translate(_TO_OTHER)
    expected = _component_by_parts(repetition, component, d, "utf-8")
    assert component_value(repetition, component, d, "utf-8") == expected
    assert value_at(repetition, Path("OBX", 3, None, None, component), d, "utf-8") == expected


def _escape_by_table(text: str, d: Delimiters) -> str:
    """Escaping spelled out: every special character replaced, whether or not any is there."""
    esc = d.escape
    table = {esc: "E", d.field: "F", d.component: "S", d.subcomponent: "T",
             d.repetition: "R", "\r": "X0D", "\n": "X0A"}
    if d.truncation:
        table[d.truncation] = "P"
    return "".join(f"{esc}{table[c]}{esc}" if c in table else c for c in text)


@PROPERTY
@given(text=st.text(st.sampled_from("ab1 _-|^~\\&#$*!%\r\n\x01é")),
       d=st.sampled_from([DEFAULT_DELIMITERS, OTHER, Delimiters(truncation="#")]))
def test_escape_agrees_with_replacing_every_special_character(text: str,
                                                              d: Delimiters) -> None:
    """escape skips the copy when nothing needs escaping, with the same result."""
    assert escape(text, d) == _escape_by_table(text, d)


charsets = st.sampled_from(["", "UNICODE UTF-8", "8859/1", "ASCII", "~UNICODE UTF-8", "x"])


@PROPERTY
@given(msh18=charsets, edits=st.lists(st.tuples(
    st.sampled_from(["MSH-18", "MSH-18[2]", "MSH-18.1", "MSH-5", "PID-3", "MSH-17"]), charsets),
    max_size=4), copied=st.booleans())
def test_codec_is_re_read_only_when_msh18_changes(
    msh18: str, edits: list[tuple[str, str]], copied: bool
) -> None:
    """codec answers as comparing MSH-18 now with MSH-18 as parsed would answer."""
    raw = f"MSH|^~\\&|A|B|C|D|20240101||ORU^R01|1|P|2.6|||||{msh18}\rPID|1||é\r"
    message = EditableMessage.parse(raw.encode("utf-8"))
    original = Message.parse(raw.encode("utf-8"))
    for path, value in edits:
        message.set(path, value)
        if copied:
            message = message.copy()
    charset = message.get("MSH-18")
    if charset == original.get("MSH-18"):
        expected = original.codec
    else:
        expected = codec_for(charset) or ("ascii" if message.text.isascii() else "utf-8")
    assert message.codec == expected
