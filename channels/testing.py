"""A channel file's own `tests:`, run through its pipeline: no network, no store.

An analyst writes, beside the channel, the messages it must handle and what must come out::

    tests:
      - name: SpO2 reaches the EHR as LOINC
        message: |                      # or  file: samples/spo2.hl7  (relative to the file)
          MSH|^~\\&|GATEWAY|ICU|||20261125083000||ORU^R01^ORU_R01|GW-1|P|2.6
          OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC||97
        expect: queued                  # queued | filtered | error
        destinations:
          ehr:
            expect: delivered           # delivered | filtered
            fields: {OBX-3.1: 59408-5}  # read from the rendered HL7 output
            contains: ["|59408-5^"]     # substrings of the output
            output: |                   # the whole output, line endings normalised
              MSH|...

A ``message:`` is written one segment per line and is run with CR terminators, as a sender
would send it; a ``file:`` is run byte for byte. Secrets (``${env:..}``) need not be set:
tests never connect anywhere, so an unset variable reads as a placeholder.

`check_test` and `check_channel` are pure: they take a compiled pipeline and return results.
`collect` loads files; `format_result` turns a failure into the text `interlink test` and
pytest show. Nothing here prints.
"""

from __future__ import annotations

import difflib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from channels.catalog import LoadedChannel, channel_files, try_load_channel
from channels.configfile import ConfigIssue
from channels.hooks import HookLoader
from channels.model import ChannelTest, DestinationExpectation
from channels.pipeline import ChannelPipeline, Decision, Output, Verdict
from profiles.hl7.header import HeaderError, read_header
from profiles.hl7.message import Message

PLACEHOLDER_SECRET = "interlink-test-placeholder"

_VERDICTS = {"queued": Verdict.QUEUED, "filtered": Verdict.FILTERED, "error": Verdict.ERROR}


@dataclass(frozen=True, slots=True)
class Mismatch:
    """One way a test's expectation was not met; `diff` holds a unified diff if any."""

    destination: str | None
    message: str
    diff: str = ""


@dataclass(frozen=True, slots=True)
class CaseResult:
    """The outcome of one channel test."""

    file: Path
    channel: str
    test: str
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        return not self.mismatches

    @property
    def id(self) -> str:
        """``file::test name``, as pytest ids and failure headers show it."""
        return f"{self.file}::{self.test}"


@dataclass(frozen=True, slots=True)
class Case:
    """One test of one loaded channel, ready to run."""

    channel: LoadedChannel
    test: ChannelTest

    @property
    def id(self) -> str:
        return f"{self.channel.file}::{self.test.name}"


@dataclass(slots=True)
class Collection:
    """Every test found under some paths, and the problems of files that did not load."""

    cases: list[Case] = field(default_factory=list)
    issues: list[ConfigIssue] = field(default_factory=list)
    untested: list[LoadedChannel] = field(default_factory=list)
    files: int = 0


class _TestEnvironment(Mapping[str, str]):
    """The real environment, with a placeholder for every unset variable."""

    def __init__(self, real: Mapping[str, str]) -> None:
        self._real = real

    def __getitem__(self, name: str) -> str:
        return self._real.get(name, PLACEHOLDER_SECRET)

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str)

    def __iter__(self) -> Iterator[str]:
        return iter(self._real)

    def __len__(self) -> int:
        return len(self._real)


def collect(paths: Iterable[Path], environ: Mapping[str, str] = os.environ) -> Collection:
    """Load every channel file under `paths` (files or directories) and list its tests."""
    found = Collection()
    hooks = HookLoader()
    env = _TestEnvironment(environ)
    for path in paths:
        files = channel_files(path)
        if not files:
            found.issues.append(ConfigIssue(str(path), 1, 1, "", "no channel files here"))
        for file in files:
            found.files += 1
            loaded, _ = try_load_channel(file, found.issues, environ=env, hooks=hooks)
            if loaded is None:
                continue
            if not loaded.config.tests:
                found.untested.append(loaded)
            found.cases.extend(Case(loaded, test) for test in loaded.config.tests)
    return found


def run_case(case: Case) -> CaseResult:
    """Run one collected test."""
    return CaseResult(case.channel.file, case.channel.name, case.test.name,
                      check_test(case.channel.pipeline, case.test))


def check_channel(loaded: LoadedChannel) -> list[CaseResult]:
    """Every test of one channel."""
    return [run_case(Case(loaded, test)) for test in loaded.config.tests]


def input_bytes(test: ChannelTest) -> bytes:
    """The bytes a test feeds the pipeline: `message` with CR terminators, or `file` as is."""
    if test.file is not None:
        return test.file.read_bytes()
    text = test.message or ""
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    return "".join(line + "\r" for line in lines if line.strip()).encode("utf-8")


def check_test(pipeline: ChannelPipeline, test: ChannelTest) -> list[Mismatch]:
    """Run one test message through the pipeline; every unmet expectation, or none."""
    try:
        raw = input_bytes(test)
    except OSError as error:
        return [Mismatch(None, f"cannot read {test.file}: {error.strerror or error}")]
    decision = pipeline.run(raw)
    mismatches = _check_verdict(test, decision)
    outputs = {o.destination: o for o in decision.outputs}
    formats = {spec.name: spec.output for spec in pipeline.config.destinations}
    for name, expected in test.destinations.items():
        if name not in formats:
            known = ", ".join(formats) or "none"
            mismatches.append(Mismatch(name, f"the channel has no destination {name!r} "
                                             f"(it has: {known})"))
            continue
        mismatches.extend(_check_destination(name, expected, outputs.get(name), decision,
                                             formats[name]))
    return mismatches


def _check_verdict(test: ChannelTest, decision: Decision) -> list[Mismatch]:
    wanted = _VERDICTS[test.expect]
    if decision.verdict is wanted:
        return []
    got = decision.verdict.value.lower()
    why = f" ({decision.reason})" if decision.reason else ""
    detail = decision.error if decision.verdict is Verdict.ERROR and decision.error else ""
    return [Mismatch(None, f"expected {test.expect}, got {got}{why}", detail)]


def _check_destination(name: str, expected: DestinationExpectation, output: Output | None,
                       decision: Decision, output_format: str) -> list[Mismatch]:
    payload = output.payload if output is not None else None
    if expected.expect == "filtered":
        if payload is not None:
            return [Mismatch(name, "expected filtered, got delivered")]
        return []
    if payload is None:
        why = output.reason if output is not None and output.reason else (
            f"the message was {decision.verdict.value.lower()}"
            + (f": {decision.reason}" if decision.reason else ""))
        return [Mismatch(name, f"expected delivered, got nothing ({why})")]
    text = _decode(payload, output_format)
    mismatches = []
    if expected.fields:
        mismatches.extend(_check_fields(name, expected.fields, payload, output_format))
    for needle in expected.contains:
        if needle not in text:
            mismatches.append(Mismatch(name, f"output does not contain {needle!r}"))
    if expected.output is not None:
        mismatches.extend(_check_output(name, expected.output, text, output_format))
    return mismatches


def _decode(payload: bytes, output_format: str) -> str:
    if output_format == "hl7":
        try:
            return payload.decode(read_header(payload).codec, "replace")
        except HeaderError:
            pass
    return payload.decode("utf-8", "replace")


def _check_fields(name: str, fields: Mapping[str, str], payload: bytes,
                  output_format: str) -> list[Mismatch]:
    if output_format != "hl7":
        return [Mismatch(name, f"fields are read from HL7 output, but this destination writes "
                               f"{output_format}; use contains or output")]
    try:
        message = Message.parse(payload)
    except HeaderError as error:
        return [Mismatch(name, f"output is not readable HL7: {error.reason}")]
    out = []
    for path, wanted in fields.items():
        got = message.get(path)
        if got != wanted:
            out.append(Mismatch(name, f"{path}: expected {wanted!r}, got {got!r}"))
    return out


def normalise_hl7(text: str) -> str:
    """CR, LF and CRLF all become CR, and the text ends with exactly one terminator."""
    text = text.replace("\r\n", "\r").replace("\n", "\r").rstrip("\r")
    return text + "\r" if text else ""


def _check_output(name: str, expected: str, actual: str, output_format: str) -> list[Mismatch]:
    if output_format == "json":
        return _check_json_output(name, expected, actual)
    want, got = normalise_hl7(expected), normalise_hl7(actual)
    if want == got:
        return []
    return [Mismatch(name, "output differs", _diff(want.split("\r"), got.split("\r"), name))]


def _check_json_output(name: str, expected: str, actual: str) -> list[Mismatch]:
    """JSON is compared as data, and shown indented when it differs."""
    try:
        want = json.loads(expected)
    except ValueError as error:
        return [Mismatch(name, f"expected output is not JSON: {error}")]
    got = json.loads(actual)
    if want == got:
        return []
    return [Mismatch(name, "output differs", _diff(
        json.dumps(want, indent=2, ensure_ascii=False).splitlines(),
        json.dumps(got, indent=2, ensure_ascii=False).splitlines(), name))]


def _diff(expected: list[str], actual: list[str], name: str) -> str:
    lines = difflib.unified_diff([line for line in expected if line],
                                 [line for line in actual if line],
                                 fromfile="expected", tofile=f"actual ({name})", lineterm="")
    return "\n".join(lines)


def format_result(result: CaseResult) -> str:
    """A failed test as readable text: file, test name, and each mismatch with its diff."""
    lines = [f"FAILED {result.id}"]
    for mismatch in result.mismatches:
        where = f"destination {mismatch.destination}: " if mismatch.destination else ""
        lines.append(f"  {where}{mismatch.message}")
        lines.extend(f"    {line}" for line in mismatch.diff.splitlines())
    return "\n".join(lines)
