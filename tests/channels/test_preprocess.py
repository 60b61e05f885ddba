"""The raw-bytes preprocessor: each step, hooks, failures and located config errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, TypeAdapter

from channels.configfile import ConfigError, load_model
from channels.hooks import HookError, HookLoader, StepFailed
from channels.preprocess import PreprocessStep, compile_preprocessor
from profiles.hl7.message import Message
from tests.profiles.corpus import read

SAMPLES = "tests.channels.hook_samples"
STEPS = TypeAdapter(list[PreprocessStep])


class Channel(BaseModel):
    """A stand-in for the channel file model: a preprocess list."""

    model_config = ConfigDict(extra="forbid")
    preprocess: list[PreprocessStep] = []


def run(steps: list[Any], raw: bytes) -> bytes:
    """Validate plain step data, compile it and run it on ``raw``."""
    return compile_preprocessor(STEPS.validate_python(steps), HookLoader())(raw)


def test_normalize_line_endings_on_an_lf_corpus_file() -> None:
    """An LF-separated message comes out CR-separated and parses into the same segments."""
    raw = read("edge/hapi-adt-a03-lf-separators.hl7")
    fixed = run([{"normalize": "line_endings"}], raw)
    assert b"\n" not in fixed
    assert [s.name for s in Message.parse(fixed).segments()] == ["MSH", "EVN", "PID", "PV1", "PR1"]
    assert run([{"normalize": "line_endings"}], b"A\r\nB\nC\rD") == b"A\rB\rC\rD"


def test_strip_removes_every_occurrence() -> None:
    """strip removes each listed text wherever it occurs; a single text works too."""
    assert run([{"strip": ["\x00", "\n"]}], b"MSH|\x00^~\r\n\x00PID") == b"MSH|^~\rPID"
    assert run([{"strip": "\x00"}], b"a\x00b") == b"ab"


def test_replace_with_groups_and_count() -> None:
    """replace substitutes a regex over the bytes, with group references and a count."""
    raw = b"MSH|^~\\&|A\rZZZ|secret\rPID|1\rZZZ|more\r"
    assert run([{"replace": "ZZZ[^\r]*\r", "with": ""}], raw) == b"MSH|^~\\&|A\rPID|1\r"
    assert run([{"replace": "ZZZ[^\r]*\r", "with": "", "count": 1}], raw).count(b"ZZZ") == 1
    swapped = run([{"replace": r"(?P<a>\w+)\|(\d)", "with": r"\2|\g<a>"}], b"PID|1")
    assert swapped == b"1|PID"


def test_replace_works_on_bytes_as_received() -> None:
    """A UTF-8 pattern matches UTF-8 bytes; Latin-1 bytes pass through untouched elsewhere."""
    assert run([{"replace": "ä", "with": "ae"}], "Mädchen".encode()) == b"Maedchen"
    assert run([{"replace": "x", "with": "y"}], b"\xe4x") == b"\xe4y"


def test_steps_run_in_order_with_a_hook() -> None:
    """A python step receives the bytes earlier steps produced."""
    raw = b"MSH|^~\\&|A\nPID|1\x00\n"
    out = run([{"strip": ["\x00"]}, {"python": f"{SAMPLES}:lf_to_cr"}], raw)
    assert out == b"MSH|^~\\&|A\rPID|1\r"


def test_hook_failures_become_step_failed() -> None:
    """A hook returning text, or raising, fails as StepFailed named by id or position."""
    with pytest.raises(StepFailed) as caught:
        run([{"normalize": "line_endings"}, {"python": f"{SAMPLES}:bytes_to_text"}], b"x")
    assert str(caught.value) == "step preprocess[1] python failed: TypeError"
    with pytest.raises(StepFailed) as caught:
        run([{"python": f"{SAMPLES}:is_female", "id": "vendor-fix"}], b"MSH|")
    assert str(caught.value) == "step vendor-fix failed: AttributeError"


def test_hooks_load_at_compile_time() -> None:
    """An unloadable hook fails compile_preprocessor, before any message arrives."""
    with pytest.raises(HookError, match="not found"):
        compile_preprocessor(STEPS.validate_python([{"python": "no_such.mod:f"}]), HookLoader())


def test_empty_preprocessor_passes_bytes_through() -> None:
    """No steps means the bytes come out as they went in."""
    assert run([], b"MSH|^~\\&\r") == b"MSH|^~\\&\r"


BAD = r"""preprocess:
  - replace: "(unclosed"
    with: x
  - replace: "(a)"
    with: '\2'
  - replace: a
  - strip: []
  - strip: [""]
  - normalize: tabs
  - {python: x, extra: 1}
  - {replace: a, strip: [b], with: c}
  - just text
  - replace: a
    with: b
    count: -1
"""


def test_every_mistake_is_reported_where_it_was_written(tmp_path: Path) -> None:
    """Bad regexes, unknown group references, empty strips and unknown keys are located."""
    path = tmp_path / "channel.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as caught:
        load_model(Channel, path)
    issues = [(i.line, i.column, i.where, i.message) for i in caught.value.issues]
    expected = [
        (2, 14, "preprocess[0].replace", "bad regular expression: missing ), unterminated"),
        (4, 5, "preprocess[1]", "refers to group \\2, which the pattern does not define"),
        (6, 5, "preprocess[2].with", "Field required"),
        (7, 12, "preprocess[3].strip", "strip takes a list of texts"),
        (8, 12, "preprocess[4].strip", "non-empty string"),
        (9, 16, "preprocess[5].normalize", "'line_endings'"),
        (10, 14, "preprocess[6].python", "package.module:function"),
        (10, 17, "preprocess[6]", "unknown key 'extra'"),
        (11, 5, "preprocess[7]", "exactly one of replace, strip, normalize, python"),
        (12, 5, "preprocess[8]", "a preprocess step is a mapping"),
        (15, 12, "preprocess[9].count", "greater than or equal to 0"),
    ]
    assert len(issues) == len(expected), issues
    for got, (line, column, where, text) in zip(issues, expected, strict=True):
        assert got[:3] == (line, column, where), got
        assert text in got[3], got
