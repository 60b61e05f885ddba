"""`interlink check`, `schema` and `test` as commands: real files, a real subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support import REPO

ENGINE = """\
data_dir: var
mllp: {interface: 127.0.0.1, port: 2575, channel: inbound}
"""

VITALS = """\
name: inbound
filter: MSH-9.1 == ORU
transformer:
  - map: PV1-3.1
    table: wards
tables:
  wards: {"3 WEST ICU": ICU3W}
destinations:
  - name: ehr
    to: {type: mllp, host: 127.0.0.1, port: 6661}
    lanes: PID-3.1
    transformer:
      - rename_code: OBX-3
        from: 150456^^MDC
        to: 59408-5^Oxygen saturation^LN
  - name: archive
    to: {type: file, directory: archive}
    output: json
tests:
  - name: SpO2 becomes LOINC
    message: |
      MSH|^~\\&|GATEWAY|ICU|||20261125083000||ORU^R01^ORU_R01|GW-1|P|2.6
      PID|||MRN-1^^^GH^MR||TESTPATIENT^ALEX
      PV1||I|3 WEST ICU^12^1
      OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|%
    destinations:
      ehr:
        fields: {OBX-3.1: 59408-5, PV1-3.1: ICU3W}
        contains: ["|97|"]
        output: |
          MSH|^~\\&|GATEWAY|ICU|||20261125083000||ORU^R01^ORU_R01|GW-1|P|2.6
          PID|||MRN-1^^^GH^MR||TESTPATIENT^ALEX
          PV1||I|ICU3W^12^1
          OBX|1|NM|59408-5^Oxygen saturation^LN|1.2.1.1|97|%
      archive:
        contains: ['"control_id":"GW-1"']
  - name: ADT is filtered
    message: |
      MSH|^~\\&|PAS|GH|||20261125081500||ADT^A01^ADT_A01|PAS-1|P|2.5
      PID|1||MRN-2^^^GH^MR||SAMPLE^JORDAN
    expect: filtered
    destinations:
      ehr: {expect: filtered}
"""


def interlink(*args: str, cwd: Path, env: dict[str, str] | None = None
              ) -> subprocess.CompletedProcess[str]:
    """Run `python -m engine.cli ARGS` in `cwd`, with no INTERLINK_* from the caller."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("INTERLINK_")}
    environ["PYTHONPATH"] = str(REPO)
    environ.update(env or {})
    return subprocess.run([sys.executable, "-m", "engine.cli", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120)


def setup(tmp_path: Path, engine: str = ENGINE, **channels: str) -> Path:
    """An engine file at conf/interlink.yaml with channel files in conf/channels/."""
    (tmp_path / "conf" / "channels").mkdir(parents=True)
    (tmp_path / "conf" / "interlink.yaml").write_text(engine, encoding="utf-8")
    for name, text in channels.items():
        (tmp_path / "conf" / "channels" / f"{name}.yaml").write_text(text, encoding="utf-8")
    return tmp_path


# -- check -------------------------------------------------------------------------------


def test_check_valid_engine_and_channels(tmp_path: Path) -> None:
    """Both files valid: exit 0, the engine summary and `N channels OK`."""
    setup(tmp_path, inbound=VITALS, adt=VITALS.replace("name: inbound", "name: adt")
          .replace("filter: MSH-9.1 == ORU", "filter: MSH-9.1 == ADT\nsource: "
                   "{type: file, directory: inbox}"))
    (tmp_path / "archive").mkdir()
    result = interlink("check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert lines[-1] == "2 channels OK"
    assert any(line.startswith("engine: conf/interlink.yaml: MLLP ") for line in lines)


def test_check_reports_every_error_located_and_exits_1(tmp_path: Path) -> None:
    """Errors in the engine file and in channel files all print as file:line:col."""
    bad_engine = ENGINE + "mllp_typo: 1\n"
    bad_channel = VITALS.replace("    lanes: PID-3.1\n", "    lanes: PID-3.1\n    retri: {}\n")
    setup(tmp_path, bad_engine, inbound=bad_channel,
          other="name: other\ndestinations:\n  - name: x\n    to: {type: ftp}\n")
    result = interlink("check", cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "conf/interlink.yaml:3:1: unknown key 'mllp_typo'" in out
    assert "conf/channels/inbound.yaml:12:5: destinations[0]: unknown key 'retri'" in out
    assert re.search(r"conf/channels/other\.yaml:4:\d+: destinations\[0\]\.to: ", out), out
    assert out.splitlines()[-1] == "3 errors in 3 files"


def test_check_single_channel_file_argument(tmp_path: Path) -> None:
    """`check PATH` checks that file (plus the engine file) and nothing else."""
    setup(tmp_path, inbound=VITALS, broken="name: [\n")
    (tmp_path / "archive").mkdir()
    result = interlink("check", "conf/channels/inbound.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "1 channel OK"
    result = interlink("check", "conf/channels/broken.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stdout.splitlines()[-1] == "1 error in 1 file"


def test_check_missing_secret_is_an_error_and_literal_one_a_warning(tmp_path: Path) -> None:
    """An unset ${env:X} fails the check; a written-out password only warns."""
    fhir = ("name: fhir\n"
            "source: {type: file, directory: inbox}\n"
            "destinations:\n"
            "  - name: server\n"
            "    to:\n"
            "      type: http\n"
            "      url: https://fhir.example.org/Bundle\n"
            "      headers:\n"
            "        Authorization: Bearer ${env:FHIR_TOKEN}\n"
            "        X-Api-Key: k-literal-98765\n")
    setup(tmp_path, inbound=VITALS, fhir=fhir)
    (tmp_path / "archive").mkdir()
    result = interlink("check", cwd=tmp_path)
    assert result.returncode == 1
    assert ("conf/channels/fhir.yaml:9:24: destinations[0].to.headers.Authorization: "
            "environment variable FHIR_TOKEN is not set") in result.stdout
    assert "k-literal-98765" not in result.stdout
    result = interlink("check", cwd=tmp_path, env={"FHIR_TOKEN": "t-0123456789"})
    assert result.returncode == 0, result.stdout
    assert re.search(r"^warning: conf/channels/fhir\.yaml:10:\d+: ", result.stdout, re.M)
    assert "k-literal-98765" not in result.stdout
    assert result.stdout.splitlines()[-1] == "2 channels OK, 1 warning"
    assert "t-0123456789" not in result.stdout


def test_check_hides_the_store_password(tmp_path: Path) -> None:
    """The store URL is printed with its password masked, and the literal is warned about."""
    engine = ENGINE + "store: {url: 'postgresql+psycopg://interlink:pw-4242@db/interlink'}\n"
    setup(tmp_path, engine, inbound=VITALS)
    (tmp_path / "archive").mkdir()
    result = interlink("check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "store postgresql+psycopg://interlink:***@db/interlink" in result.stdout
    assert "pw-4242" not in result.stdout + result.stderr
    assert "warning: conf/interlink.yaml:3:" in result.stdout


def test_check_warns_when_the_listener_channel_has_no_file(tmp_path: Path) -> None:
    """mllp.channel names no channel file: a warning pointing at the engine file."""
    setup(tmp_path, inbound=VITALS.replace("name: inbound", "name: vitals"))
    result = interlink("check", cwd=tmp_path)
    assert result.returncode == 0
    assert re.search(r"^warning: conf/interlink\.yaml:2:\d+: mllp\.channel: no channel file "
                     r"defines 'inbound'", result.stdout, re.M), result.stdout


def test_check_reads_the_engine_channels_dir(tmp_path: Path) -> None:
    """`channels_dir` (relative to the engine file) is where check looks by default."""
    setup(tmp_path, ENGINE + "channels_dir: ../flows\n")
    (tmp_path / "flows").mkdir()
    (tmp_path / "flows" / "inbound.yaml").write_text(VITALS, encoding="utf-8")
    (tmp_path / "archive").mkdir()
    result = interlink("check", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "1 channel OK"

def test_check_shipped_configuration() -> None:
    """The repository's own conf/ passes."""
    result = interlink("check", cwd=REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert re.fullmatch(r"\d+ channels? OK(, \d+ warnings?)?", result.stdout.splitlines()[-1])


# -- schema ------------------------------------------------------------------------------


def test_schema_prints_the_channel_schema() -> None:
    """`interlink schema` is the channel file's JSON Schema, indented."""
    result = interlink("schema", cwd=REPO)
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "Interlink channel"
    assert {"name", "destinations", "tests"} <= set(schema["properties"])
    assert result.stdout.startswith("{\n  ")


def test_schema_engine_prints_the_engine_schema() -> None:
    """`--engine` gives the engine file's schema instead."""
    result = interlink("schema", "--engine", cwd=REPO)
    assert result.returncode == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "Interlink engine"
    assert {"mllp", "store", "data_dir"} <= set(schema["properties"])


# -- test --------------------------------------------------------------------------------


def test_test_passes_and_counts(tmp_path: Path) -> None:
    """Every expectation met: exit 0 and `2 passed, 0 failed`."""
    setup(tmp_path, inbound=VITALS)
    result = interlink("test", "conf/channels/inbound.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert "ok conf/channels/inbound.yaml::SpO2 becomes LOINC" in result.stdout
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed"


def test_test_failure_prints_a_readable_diff(tmp_path: Path) -> None:
    """A wrong field and a wrong whole output: file, test, destination, and the diff."""
    wrong = (VITALS.replace("fields: {OBX-3.1: 59408-5,", "fields: {OBX-3.1: 2708-6,")
             .replace("          PV1||I|ICU3W^12^1", "          PV1||I|3W^12^1"))
    setup(tmp_path, inbound=wrong)
    result = interlink("test", "conf/channels", cwd=tmp_path)
    assert result.returncode == 1
    out = result.stdout
    assert "FAILED conf/channels/inbound.yaml::SpO2 becomes LOINC" in out
    assert "destination ehr: OBX-3.1: expected '2708-6', got '59408-5'" in out
    assert "destination ehr: output differs" in out
    assert "-PV1||I|3W^12^1" in out and "+PV1||I|ICU3W^12^1" in out
    assert "+++ actual (ehr)" in out
    assert out.splitlines()[-1] == "1 passed, 1 failed"


def test_test_wrong_verdict_and_unknown_destination(tmp_path: Path) -> None:
    """Expecting `queued` for a filtered message, and naming a destination that is not there."""
    wrong = VITALS.replace("    expect: filtered\n", "    expect: queued\n").replace(
        "      ehr: {expect: filtered}", "      lab: {expect: filtered}")
    setup(tmp_path, inbound=wrong)
    result = interlink("test", "conf/channels/inbound.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert "expected queued, got filtered (channel filter did not match)" in result.stdout
    assert "destination lab: the channel has no destination 'lab'" in result.stdout


def test_test_expected_error_and_message_from_a_file(tmp_path: Path) -> None:
    """`expect: error` for a failing hook passes; `file:` is read beside the channel file."""
    channel = (
        "name: hooked\n"
        "filter: {python: 'tests.channels.hook_samples:leaky_failure'}\n"
        "destinations:\n"
        "  - name: out\n"
        "    to: {type: file, directory: out}\n"
        "tests:\n"
        "  - name: the hook fails\n"
        "    file: samples/adt.hl7\n"
        "    expect: error\n")
    setup(tmp_path, hooked=channel)
    (tmp_path / "conf" / "channels" / "samples").mkdir()
    (tmp_path / "conf" / "channels" / "samples" / "adt.hl7").write_bytes(
        b"MSH|^~\\&|PAS|GH|||20261125||ADT^A01|P1|P|2.5\rPID|1||M1||DOE^JO\r")
    result = interlink("test", "conf/channels/hooked.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout
    assert result.stdout.splitlines()[-1] == "1 passed, 0 failed"


def test_test_reports_a_file_that_does_not_load(tmp_path: Path) -> None:
    """A channel file with errors: its issues, located, and exit 1 even if others pass."""
    setup(tmp_path, inbound=VITALS, broken="name: broken\nfilter: PID-99x == 1\n")
    result = interlink("test", "conf/channels", cwd=tmp_path)
    assert result.returncode == 1
    assert re.search(r"^conf/channels/broken\.yaml:2:\d+: filter", result.stdout, re.M)
    assert result.stdout.splitlines()[-1] == "2 passed, 0 failed, 1 file with errors"


def test_test_runs_the_shipped_channels() -> None:
    """Every example channel in conf/channels passes its own tests."""
    result = interlink("test", "-q", "conf/channels", cwd=REPO)
    assert result.returncode == 0, result.stdout
    assert re.fullmatch(r"[1-9]\d* passed, 0 failed", result.stdout.splitlines()[-1])


CENSUS = r"""
name: census
destinations:
  - name: census
    to: {type: file, directory: out}
    output: json
    transformer: [{keep_segments: [PID]}]
  - name: icu
    filter: PV1-3.1 == ICU
    to: {type: file, directory: out}
tests:
  - name: census document
    message: |
      MSH|^~\&|PAS|GH|||20261125||ADT^A01|P1|P|2.5
      PID|1||M1
    destinations:
      census:
        output: |
          {"segments": [
             {"name": "MSH",
              "fields": [[["|"]], [["^~\\&"]], [["PAS"]], [["GH"]], [], [],
                         [["20261125"]], [], [["ADT", "A01"]], [["P1"]], [["P"]], [["2.5"]]]},
             {"fields": [[["1"]], [], [["M1"]]], "name": "PID"}],
           "format": "hl7v2+json/1", "delimiters": "|^~\\&",
           "header": {"message_type": "ADT", "trigger_event": "A01",
                      "message_structure": "", "control_id": "P1", "version": "2.5",
                      "timestamp": "20261125", "processing_id": "P",
                      "sending_application": "PAS", "sending_facility": "GH",
                      "receiving_application": "", "receiving_facility": "",
                      "character_set": ""}}
  - name: wrong expectations
    message: |
      MSH|^~\&|PAS|GH|||20261125||ADT^A01|P2|P|2.5
      PID|1||M2
      PV1|1|I|WARD
    destinations:
      census: {fields: {PID-3: M2}}
      icu: {expect: delivered}
"""


def test_test_json_output_compared_as_data(tmp_path: Path) -> None:
    """JSON output matches whatever its layout; `fields` on JSON says to use contains/output."""
    setup(tmp_path, census=CENSUS)
    result = interlink("test", "conf/channels/census.yaml", cwd=tmp_path)
    out = result.stdout
    assert "ok conf/channels/census.yaml::census document" in out, out
    assert ("destination census: fields are read from HL7 output, but this destination "
            "writes json; use contains or output") in out
    assert ("destination icu: expected delivered, got nothing "
            "(destination filter did not match)") in out
    assert result.returncode == 1
