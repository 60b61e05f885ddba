"""Loading a directory of channel files: every problem at once, each with file:line:col."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from channels import hooks
from channels.catalog import load_catalog, load_channel

GOOD = """\
name: vitals
filter: MSH-9.1 == ORU
destinations:
  - name: ehr
    to: {type: mllp, host: 127.0.0.1, port: 6661}
"""

# The typo sits on line 14, column 5, as an analyst would see it in an editor.
PUMPS = """\
name: pumps
description: Infusion pump events
filter: MSH-9.1 == ORU
destinations:
- name: ehr
  to:
    type: mllp
    host: 127.0.0.1
    port: 6662
  retry:
    initial_seconds: 1
    max_seconds: 60
    jitter: 0.1
    max_attemps: 5
  output: xml
"""


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.write_text(text, encoding="utf-8")
    return path


def messages(catalog_issues: list[object]) -> list[str]:
    return [str(issue) for issue in catalog_issues]


def test_valid_directory_loads_every_channel(tmp_path: Path) -> None:
    """Each file becomes a LoadedChannel with its file, digest and compiled pipeline."""
    write(tmp_path, "vitals.yaml", GOOD)
    write(tmp_path, "notes.txt", "not a channel file")
    catalog = load_catalog(tmp_path, environ={})
    assert catalog.ok and catalog.issues == []
    loaded = catalog.channels["vitals"]
    assert loaded.file == tmp_path / "vitals.yaml"
    assert len(loaded.digest) == 64
    assert loaded.pipeline.destination_names == ["ehr"]


def test_every_error_of_every_file_reported_at_once(tmp_path: Path) -> None:
    """An unknown key and a bad value in one file, a YAML error in another: all reported."""
    pumps = write(tmp_path, "pumps.yaml", PUMPS)
    broken = write(tmp_path, "broken.yaml", "name: broken\ndestinations: [\n")
    write(tmp_path, "vitals.yaml", GOOD)
    catalog = load_catalog(tmp_path, environ={})
    found = messages(catalog.issues)
    assert f"{pumps}:14:5: destinations[0].retry: unknown key 'max_attemps'" in found
    assert any(m.startswith(f"{pumps}:15:11: destinations[0].output: ") for m in found), found
    assert any(m.startswith(f"{broken}:") and "YAML" in m for m in found), found
    assert list(catalog.channels) == ["vitals"]
    assert not catalog.ok


def test_missing_env_secret_is_located_and_names_the_variable(tmp_path: Path) -> None:
    """An unset ${env:X} is an error at its value; resolved secrets never appear in issues."""
    path = write(tmp_path, "fhir.yaml", (
        "name: fhir\n"
        "destinations:\n"
        "  - name: server\n"
        "    to:\n"
        "      type: http\n"
        "      url: https://fhir.example.org/Bundle\n"
        "      headers:\n"
        "        Authorization: Bearer ${env:FHIR_TOKEN}\n"
        "        X-Api-Key: ${env:FHIR_KEY}\n"))
    catalog = load_catalog(tmp_path, environ={"FHIR_KEY": "k-98765"})
    found = messages(catalog.issues)
    assert found == [f"{path}:8:24: destinations[0].to.headers.Authorization: "
                     "environment variable FHIR_TOKEN is not set"]
    assert "k-98765" not in "\n".join(found)


def test_literal_secret_is_a_warning_not_an_error(tmp_path: Path) -> None:
    """A password written in the file loads, with a located warning that hides the value."""
    write(tmp_path, "fhir.yaml", (
        "name: fhir\n"
        "destinations:\n"
        "  - name: server\n"
        "    to:\n"
        "      type: http\n"
        "      url: https://fhir.example.org/Bundle\n"
        "      headers: {Authorization: Bearer abc123}\n"))
    catalog = load_catalog(tmp_path, environ={})
    assert catalog.ok and "fhir" in catalog.channels
    [warning] = messages(catalog.warnings)
    assert warning.startswith(f"{tmp_path / 'fhir.yaml'}:7:")
    assert "must be referenced" in warning and "abc123" not in warning


def test_duplicate_channel_name_names_both_files(tmp_path: Path) -> None:
    """Two files defining one name: the second is refused, pointing at the first."""
    first = write(tmp_path, "a.yaml", GOOD)
    second = write(tmp_path, "b.yaml", GOOD)
    catalog = load_catalog(tmp_path, environ={})
    assert messages(catalog.issues) == [
        f"{second}:1:1: name: channel 'vitals' is already defined in {first}"]
    assert catalog.channels["vitals"].file == first


def test_hook_that_cannot_be_imported_is_located_at_its_step(tmp_path: Path) -> None:
    """A hook module that does not exist fails the load at the line that names it."""
    path = write(tmp_path, "hooked.yaml", (
        "name: hooked\n"
        "transformer:\n"
        "  - set: PV1-3.1\n"
        "    value: X\n"
        "  - python: site_hooks_that_do_not_exist.pcd:tag\n"
        "destinations:\n"
        "  - name: out\n"
        "    to: {type: file, directory: out}\n"))
    [issue] = load_catalog(tmp_path, environ={}).issues
    assert (issue.file, issue.line, issue.column) == (str(path), 5, 13)
    assert issue.where == "transformer[1].python"
    assert "site_hooks_that_do_not_exist" in issue.message and "not found" in issue.message


WARDS = """\
name: wards
tables:
  beds: {'3W': ICU3W}
transformer:
  - map: PV1-3.1
    table: wards
destinations:
  - name: out
    to: {type: file, directory: out}
"""


def test_undefined_table_is_reported_with_the_tables_defined(tmp_path: Path) -> None:
    """`map` naming a table the channel lacks is an error, not a silent pass-through."""
    path = write(tmp_path, "wards.yaml", WARDS)
    [issue] = load_catalog(tmp_path, environ={}).issues
    assert issue.file == str(path)
    assert "transformer[0]" in str(issue)
    assert "'wards' is not defined" in issue.message and "beds" in issue.message


def test_undefined_table_is_located_at_its_step(tmp_path: Path) -> None:
    """The undefined table's issue points at the `table:` line of the map step."""
    path = write(tmp_path, "wards.yaml", WARDS)
    [issue] = load_catalog(tmp_path, environ={}).issues
    assert (issue.file, issue.line, issue.where) == (str(path), 6, "transformer[0].table")


def test_port_taken_by_the_engine_and_unknown_channel_link(tmp_path: Path) -> None:
    """Cross-file checks: a source on the engine's port, a link to a missing channel."""
    path = write(tmp_path, "router.yaml", (
        "name: router\n"
        "source: {type: mllp, port: 2575}\n"
        "destinations:\n"
        "  - name: next\n"
        "    to: {type: channel, channel: nowhere}\n"))
    catalog = load_catalog(tmp_path, environ={},
                           listeners={"tcp:2575": "the engine's MLLP listener"})
    assert messages(catalog.issues) == [
        f"{path}:2:9: source: tcp:2575 is already used by the engine's MLLP listener",
        f"{path}:5:34: destinations[0].to: no channel named 'nowhere'",
    ]


def test_load_channel_resolves_test_files_beside_the_channel(tmp_path: Path) -> None:
    """`tests[].file` is relative to the channel file's directory, not the working one."""
    (tmp_path / "samples").mkdir()
    path = write(tmp_path, "vitals.yaml", GOOD + (
        "tests:\n"
        "  - name: from a file\n"
        "    file: samples/oru.hl7\n"))
    loaded, warnings = load_channel(path, environ={})
    assert warnings == []
    assert loaded.config.tests[0].file == tmp_path / "samples" / "oru.hl7"


def test_errors_inside_a_destination_connector_point_at_the_field(tmp_path: Path) -> None:
    """The connector's type tag is not in the file: errors still land on the field's line."""
    path = write(tmp_path, "pumps.yaml", (
        "name: pumps\n"
        "destinations:\n"
        "  - name: ehr\n"
        "    to:\n"
        "      type: mllp\n"
        "      host: 127.0.0.1\n"
        "      port: seventy\n"
        "      ak_timeout: 3\n"))
    found = messages(load_catalog(tmp_path, environ={}).issues)
    assert found[0].startswith(f"{path}:7:13: destinations[0].to.port: ")
    assert found[1] == f"{path}:8:7: destinations[0].to: unknown key 'ak_timeout'"


def test_tls_files_of_a_channel_listener_are_taken_from_the_channel_file(
        tmp_path: Path) -> None:
    """A channel's certificate paths are relative to its own file, as directories are."""
    write(tmp_path, "secure.yaml", (
        "name: secure\n"
        "source:\n"
        "  type: mllp\n"
        "  port: 0\n"
        "  tls: {certificate: tls/s.crt, private_key: tls/s.key, ca_certificates: ca.crt}\n"))
    source = load_catalog(tmp_path, environ={}).channels["secure"].config.source
    assert source is not None and source.tls is not None
    assert (source.tls.certificate, source.tls.ca_certificates) == (
        tmp_path / "tls" / "s.crt", tmp_path / "ca.crt")


def test_destination_files_are_taken_from_the_channel_file(tmp_path: Path) -> None:
    """Directories and TLS files of destinations are relative to the channel file."""
    write(tmp_path, "out.yaml", (
        "name: out\n"
        "destinations:\n"
        "  - {name: a, to: {type: file, directory: out}}\n"
        "  - {name: b, to: {type: http, url: 'https://ehr.example/x', tls_ca: ca.pem}}\n"
        "  - {name: c, to: {type: mllp, host: ehr, port: 1, tls: {ca_certificates: ca.pem}}}\n"))
    a, b, c = (d.to for d in load_catalog(tmp_path, environ={}).channels["out"]
               .config.destinations)
    assert a.directory == tmp_path / "out" and b.tls_ca == tmp_path / "ca.pem"
    assert c.tls.ca_certificates == tmp_path / "ca.pem" and c.tls.certificate is None


def test_the_digest_follows_the_hook_modules_and_secret_files(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A reload redeploys on an edited hook module or a rotated secret file, as on an edit
    to the channel file; another channel's hook, or nothing changed, keeps the digest."""
    channels, site = tmp_path / "channels", tmp_path / "site"
    channels.mkdir()
    site.mkdir()
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setattr(hooks, "_imported", {})
    monkeypatch.delitem(sys.modules, "digest_hooks", raising=False)
    hook = site / "digest_hooks.py"
    hook.write_text("def tag(message):\n    message.set('PV1-3.1', 'A')\n")
    (site / "other_hooks.py").write_text("def tag(message):\n    return None\n")
    secret = tmp_path / "token.txt"
    secret.write_text("first-token")
    write(channels, "hooked.yaml", (
        "name: hooked\n"
        "transformer:\n"
        "  - python: digest_hooks:tag\n"
        "destinations:\n"
        "  - name: out\n"
        "    to: {type: http, url: 'https://ehr.example/in',\n"
        f"         headers: {{Authorization: '${{file:{secret}}}'}}}}\n"))
    write(channels, "other.yaml", (
        "name: other\n"
        "transformer:\n"
        "  - python: other_hooks:tag\n"
        "destinations:\n"
        "  - name: out\n"
        "    to: {type: file, directory: out}\n"))

    def digests() -> dict[str, str]:
        catalog = load_catalog(channels, environ={})
        assert catalog.ok, messages(catalog.issues)
        return {name: loaded.digest for name, loaded in catalog.channels.items()}

    try:
        start = digests()
        assert digests() == start
        hook.write_text("def tag(message):\n    message.set('PV1-3.1', 'B')\n")
        edited = digests()
        assert edited["hooked"] != start["hooked"] and edited["other"] == start["other"]
        secret.write_text("second-token")
        rotated = digests()
        assert rotated["hooked"] != edited["hooked"] and rotated["other"] == start["other"]
    finally:
        sys.modules.pop("digest_hooks", None)
        sys.modules.pop("other_hooks", None)
