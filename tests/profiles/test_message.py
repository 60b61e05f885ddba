"""The lazy message view: real values from the corpus, and agreement with python-hl7."""

from __future__ import annotations

from pathlib import Path as FilePath

import hl7
import pytest

from profiles.hl7.header import HeaderError, read_header
from profiles.hl7.message import Message
from profiles.hl7.path import Path, PathError
from tests.profiles.corpus import corpus_files, file_id, read

PHILIPS = "pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7"


def test_philips_monitor_values() -> None:
    """OBX codes, values and units of the TF PCD-01 example read as printed."""
    m = Message.parse(read(PHILIPS))
    assert m.get("MSH-9") == "ORU^R01^ORU_R01"
    assert m.get("MSH-9.2") == "R01"
    assert m.get("PID-3.1") == "HO2009001"
    assert m.get("PID-5.2") == "Albert"
    assert m.get("OBX-3.1") == "69965"
    assert m.get("OBX[4]-3") == "150021^MDC_PRESS_BLD_NONINV_SYS^MDC"
    assert m.get("OBX[4]-3.2") == "MDC_PRESS_BLD_NONINV_SYS"
    assert m.get("OBX[4]-5") == "117"
    assert m.get("OBX[4]-6.2") == "MDC_DIM_MMHG"
    assert m.get("OBX[4]-7") == "90-160"
    assert m.get_all("OBX-3.1")[:6] == ["69965", "70686", "70675", "150021", "150022", "150023"]
    assert len(m.segments("OBX")) == len(m.get_all("OBX-1"))
    assert [s.name for s in m.segments()[:4]] == ["MSH", "PID", "PV1", "OBR"]


def test_msh1_and_msh2_follow_the_standard() -> None:
    """MSH-1 is the field separator itself and MSH-2 the encoding characters, unsplit."""
    m = Message.parse(read(PHILIPS))
    assert m.get("MSH-1") == "|"
    assert m.get("MSH-2") == "^~\\&"
    assert m.get("MSH-2.2") == ""
    assert m.get("MSH-3") == "PAT_DEVICE_PHILIPS_C"
    assert m.get("MSH-10") == "HP0122182658686QQ000CND119C0WS61"


def test_repetitions_and_subcomponents() -> None:
    """Repetition and sub-component indices pick exactly what the probe message holds."""
    m = Message.parse(read("edge/pythonhl7-repetition-subcomponent-probe.hl7"))
    assert m.get("PID-1") == "Field1"
    assert m.get("PID-2.2") == "Component2"
    assert m.get("PID-3.2") == "Sub-Component1&Sub-Component2"
    assert m.get("PID-3.2.2") == "Sub-Component2"
    assert m.get("PID-4") == "Repeat1"
    assert m.get("PID-4[2]") == "Repeat2"
    assert m.get_all("PID-4") == ["Repeat1", "Repeat2"]
    assert m.get("PID-4[3]") == ""
    assert m.get("PID-99") == ""
    assert m.get("ZZZ-1") == ""


def test_repeating_obx5_and_multiple_segments() -> None:
    """get_all walks every OBX and every repetition; indices select one."""
    m = Message.parse(read("general/ipf-oru-r01-v24-repeating-obx5.hl7"))
    assert m.get_all("OBX[1]-5") == ["100", "200", "300"]
    assert m.get("OBX-5") == "100"
    assert m.get("OBX-5[3]") == "300"
    assert m.get_all("OBX-5[2]") == ["200"]
    assert m.get_all("OBX-3.1") == ["25026500", "50060710", "50061100"]
    assert m.get("PID-3[2]") == "ID2"
    assert m.get("MSH-18[2]") == "code2"
    assert m.get("ZBE-2") == "2"


def test_hd_subcomponents_in_pid3() -> None:
    """Sub-components of an assigning authority are reachable by S index."""
    m = Message.parse(read("edge/ipf-adt-a40-latin1-bytes-in-msh.hl7"))
    assert m.get_all("PID-3.1") == ["305014", "7200117317", "7200117355"]
    assert m.get("PID-3[2].4.1") == "BBB"
    assert m.get("PID-3[2].4.2") == "2.16.840.1.113883.3.37.4.1.1.2.611.1"
    assert m.get("MRG-1[2].1") == "7200117359"
    assert m.get("MSH-5") == "BLÄH"


def test_utf8_umlauts_without_msh18() -> None:
    """Names with UTF-8 umlauts and no MSH-18 decode correctly."""
    m = Message.parse(read("edge/ipf-adt-a01-utf8-umlauts-no-msh18.hl7"))
    assert m.get("PID-5.1") == "Nächname"
    assert m.get("PID-5.2") == "Vörname"
    assert m.get("PID-11.1") == "Blöhplatz 1"


def test_lf_separated_message() -> None:
    """LF-only segment terminators split into the right segments."""
    m = Message.parse(read("edge/hapi-adt-a03-lf-separators.hl7"))
    assert [s.name for s in m.segments()] == ["MSH", "EVN", "PID", "PV1", "PR1"]
    assert m.get_all("PID-3.5") == ["PK", "CF", "SSN", "TEAM"]
    assert m.get("PR1-3.2") == "Mastoplastica"


def test_custom_delimiters() -> None:
    """A message with '}' as sub-component separator is split with it."""
    m = Message.parse(read("edge/hapi-bar-p01-custom-subcomponent-brace.hl7"))
    assert m.get("PID-3.1") == "429314294"
    assert m.get("PID-11.1") == "2146 E HARRIS"
    assert m.get("MSH-2") == "^~\\}"


def test_escape_sequences_decode_on_leaf_access() -> None:
    """Leaves decode escapes; composites stay as written so structure is not lost."""
    raw = "MSH|^~\\&|A|B|||20240101||ORU^R01|1|P|2.5\rNTE|1||a\\S\\b^c\\F\\d\\.br\\e\r"
    m = Message.parse(raw)
    assert m.get("NTE-3") == "a\\S\\b^c\\F\\d\\.br\\e"
    assert m.get("NTE-3.1") == "a^b"
    assert m.get("NTE-3.2") == "c|d\ne"


def test_str_input_and_segment_count() -> None:
    """A str message parses like bytes; blank lines are not segments."""
    text = read("general/pythonhl7-oru-r01-v24-ghh-lab-glucose.hl7").decode("ascii")
    m = Message.parse(text)
    assert len(m.segments()) == 5
    assert m.get("OBX[2]-3.1") == "1553-5"
    assert m.get("OBX-6") == "mg/dl"


def test_unreadable_message_raises_header_error() -> None:
    """Parsing a message whose MSH is broken raises HeaderError."""
    with pytest.raises(HeaderError):
        Message.parse(read("edge/hl7apy-msh-duplicate-encoding-chars.hl7"))


def test_bad_path_raises_path_error() -> None:
    """A malformed path raises PathError from get and get_all."""
    m = Message.parse(read(PHILIPS))
    with pytest.raises(PathError):
        m.get("PID.3")
    with pytest.raises(PathError):
        m.get_all("obx-5")


def test_to_hl7_interop() -> None:
    """to_hl7 hands python-hl7 the same message for building or editing."""
    m = Message.parse(read(PHILIPS))
    assert str(m.to_hl7().segment("PID")[3][0][0]) == "HO2009001"


def _readable() -> list[FilePath]:
    files = []
    for path in corpus_files():
        try:
            read_header(path.read_bytes())
        except HeaderError:
            continue
        files.append(path)
    return files


def _python_hl7_value(parsed: hl7.Message, path: Path) -> str:
    return parsed.extract_field(
        path.segment,
        path.segment_index,
        path.field,
        path.repetition,
        path.component,
        path.subcomponent,
    )


@pytest.mark.parametrize("path", _readable(), ids=file_id)
def test_agrees_with_python_hl7_on_every_leaf(path: FilePath) -> None:
    """For every leaf SEG[n]-F[r].C.S in a readable corpus file, get equals python-hl7's value."""
    message = Message.parse(path.read_bytes())
    d = message.delimiters
    parsed = hl7.parse(message.text)
    checked = 0
    for name in dict.fromkeys(s.name for s in message.segments()):
        if len(name) != 3 or not name.isalnum():
            continue
        for index, segment in enumerate(message.segments(name), start=1):
            for field in range(3 if name == "MSH" else 1, segment.field_count() + 1):
                for r, rep in enumerate(segment.repetitions(field), start=1):
                    for c, comp in enumerate(rep.split(d.component), start=1):
                        for s, sub in enumerate(comp.split(d.subcomponent), start=1):
                            if d.escape in sub:
                                continue
                            leaf = Path(name, field, index, r, c, s)
                            assert message.get(leaf) == _python_hl7_value(parsed, leaf), leaf
                            checked += 1
    assert checked > 5
