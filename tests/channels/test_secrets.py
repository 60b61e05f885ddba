"""Secret references: resolution, located problems, and literal-secret warnings."""

from __future__ import annotations

import os
from pathlib import Path

from channels.configfile import load_yaml
from channels.secrets import (
    LITERAL_SECRET,
    SecretProblem,
    issues_for,
    literal_secrets,
    resolve_secrets,
)

ENV = {"DB_PASSWORD": "s3cr3t-db", "TOKEN": "tok-123", "EMPTY": ""}


def resolve(data: object, base: Path, environ: dict[str, str] | None = None
            ) -> tuple[object, list[SecretProblem]]:
    return resolve_secrets(data, base_dir=base, environ=ENV if environ is None else environ)


def test_env_reference_fills_a_whole_value(tmp_path: Path) -> None:
    """${env:NAME} is replaced by the variable's value."""
    data, problems = resolve({"store": {"password": "${env:DB_PASSWORD}"}}, tmp_path)
    assert data == {"store": {"password": "s3cr3t-db"}} and problems == []


def test_reference_embedded_in_a_larger_string(tmp_path: Path) -> None:
    """A reference inside text (an Authorization header) is replaced in place."""
    data, problems = resolve({"headers": {"Authorization": "Bearer ${env:TOKEN}"}}, tmp_path)
    assert data == {"headers": {"Authorization": "Bearer tok-123"}} and problems == []


def test_file_reference_relative_to_base_dir_strips_trailing_newline(tmp_path: Path) -> None:
    """${file:PATH} reads the file beside the config; the editor's final newline goes."""
    (tmp_path / "secrets").mkdir()
    (tmp_path / "secrets" / "client").write_text("abc def\n\n", encoding="utf-8")
    data, problems = resolve(["${file:secrets/client}"], tmp_path)
    assert data == ["abc def"] and problems == []


def test_file_reference_absolute_path(tmp_path: Path) -> None:
    """An absolute path is read as is, whatever the base directory."""
    secret = tmp_path / "abs.txt"
    secret.write_text("xyz\r\n", encoding="utf-8")
    data, problems = resolve({"k": f"${{file:{secret}}}"}, tmp_path / "elsewhere")
    assert data == {"k": "xyz"} and problems == []


def test_dollar_dollar_escapes_a_literal_reference(tmp_path: Path) -> None:
    """$${env:X} stays the literal text ${env:X} and is not looked up."""
    data, problems = resolve({"note": "cost $5, literal $${env:NOPE}"}, tmp_path)
    assert data == {"note": "cost $5, literal ${env:NOPE}"} and problems == []


def test_non_strings_and_keys_are_left_alone(tmp_path: Path) -> None:
    """Numbers, booleans, None and mapping keys pass through unchanged."""
    original = {"${env:TOKEN}": 1, "n": [True, None, 2.5]}
    data, problems = resolve(original, tmp_path)
    assert data == original and problems == []


def test_every_problem_is_reported_with_its_data_path(tmp_path: Path) -> None:
    """Missing variables and unreadable files are all reported, each at its path."""
    data = {
        "channels": [
            {"password": "${env:MISSING_ONE}"},
            {"token": "${file:nope.txt}", "x": "a ${env:MISSING_TWO} b ${env:TOKEN}"},
        ],
        "bad": "${vault:kv/x}",
    }
    resolved, problems = resolve(data, tmp_path)
    paths = [p.path for p in problems]
    assert paths == [("channels", 0, "password"), ("channels", 1, "token"),
                     ("channels", 1, "x"), ("bad",)]
    assert "MISSING_ONE" in problems[0].message
    assert "nope.txt" in problems[1].message and "cannot be read" in problems[1].message
    assert "unknown reference" in problems[3].message
    # A value with any unresolved reference is left as written, not half-resolved.
    assert resolved["channels"][1]["x"] == "a ${env:MISSING_TWO} b ${env:TOKEN}"  # type: ignore[index]


def test_empty_variable_is_present(tmp_path: Path) -> None:
    """A variable set to the empty string resolves to the empty string."""
    data, problems = resolve("${env:EMPTY}", tmp_path)
    assert data == "" and problems == []


def test_directory_and_non_utf8_files_are_problems(tmp_path: Path) -> None:
    """A directory or binary file behind ${file:} is reported, not read."""
    (tmp_path / "dir").mkdir()
    (tmp_path / "bin").write_bytes(b"\xff\xfe\x00")
    _, problems = resolve(["${file:dir}", "${file:bin}"], tmp_path)
    assert [p.path for p in problems] == [(0,), (1,)]
    assert "not UTF-8" in problems[1].message


def test_problems_never_carry_resolved_values(tmp_path: Path) -> None:
    """A value that fails elsewhere in the same string does not leak the part that resolved."""
    _, problems = resolve({"x": "${env:TOKEN}:${env:MISSING}"}, tmp_path)
    assert problems and all("tok-123" not in p.message for p in problems)


def test_issues_point_at_file_line_and_column(tmp_path: Path) -> None:
    """With the positions of a real YAML file, problems become file:line:col issues."""
    config = tmp_path / "channel.yaml"
    config.write_text("name: lab\ndestination:\n  headers:\n    Authorization: ${env:NOPE}\n",
                      encoding="utf-8")
    data, positions = load_yaml(config)
    _, problems = resolve_secrets(data, base_dir=config.parent, environ=dict(os.environ))
    [issue] = issues_for(problems, file=str(config), positions=positions)
    assert (issue.line, issue.column) == (4, 20)
    assert str(issue).startswith(f"{config}:4:20: destination.headers.Authorization: ")


def test_literal_secrets_are_warned_about() -> None:
    """Secret-looking keys with literal values warn; references and empties do not."""
    data = {
        "store": {"url": "postgresql://interlink:hunter2@db/interlink"},
        "destinations": [
            {"password": "plain", "client-secret": "${file:cs}", "api_token": 1234},
            {"headers": {"authorization": "Basic dXNlcjpwdw==", "Accept": "x"}},
            {"password": "", "token": None, "tls": {"private_key": "certs/key.pem",
                                                     "key_file": "certs/key.pem"}},
            {"key_file": "-----BEGIN PRIVATE KEY-----\nMII...\n"},
            {"url": "postgresql://u:${env:PW}@db/x", "escaped": "$${env:X}",
             "db_password": "$${env:X}"},
        ],
    }
    warnings = literal_secrets(data)
    assert [w.path for w in warnings] == [
        ("store", "url"),
        ("destinations", 0, "password"),
        ("destinations", 0, "api_token"),
        ("destinations", 1, "headers", "authorization"),
        ("destinations", 3, "key_file"),
        ("destinations", 4, "db_password"),
    ]
    assert all(LITERAL_SECRET in w.message for w in warnings)
    texts = " ".join(w.message for w in warnings)
    assert "hunter2" not in texts and "plain" not in texts and "dXNlcjpwdw" not in texts
