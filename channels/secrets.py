"""Secret references in configuration values: ``${env:NAME}`` and ``${file:PATH}``.

Channel and engine files live under version control, so passwords, tokens and keys must
not be written in them. A value names where the secret lives instead; it is resolved when
the file is loaded, and every reference that cannot be resolved is reported with its data
path (as ``channels.configfile.Positions`` keys it) so ``check`` can say ``file:line:col``.

- ``${env:NAME}``: the environment variable NAME.
- ``${file:PATH}``: the file's text (UTF-8) with trailing newlines removed; a relative
  PATH is relative to ``base_dir`` (the directory of the config file), ``~`` is expanded.
- ``$${...}`` is the literal text ``${...}``.

References may fill a whole value or sit inside one (``Bearer ${env:TOKEN}``). Only string
values are resolved, never mapping keys. This module never logs, and neither problems
nor warnings ever carry a resolved or literal secret value: only names and paths.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from channels.configfile import ConfigIssue, Positions

DataPath = tuple[Any, ...]

# `$${` (escape), or `${scheme:argument}`, or any other `${...}` (reported as unknown).
_TOKEN = re.compile(r"\$\$\{|\$\{(?:(?P<scheme>[A-Za-z]+):)?(?P<arg>[^}]*)\}")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*\Z")
_REFERENCE = re.compile(r"(?<!\$)\$\{(?:env|file):[^}]+\}")
_URL_PASSWORD = re.compile(r"://[^/@:\s]*:(?P<password>[^@/\s]+)@")
_PEM_PRIVATE_KEY = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----")

HOW_TO_REFERENCE = "use ${env:NAME} or ${file:PATH}"
LITERAL_SECRET = "secrets must be referenced, not written in the file"

_SECRET_NAMES = frozenset({
    "password", "passwd", "passphrase", "secret", "client_secret", "token",
    "access_token", "refresh_token", "api_key", "apikey", "authorization",
    "proxy_authorization", "x_api_key",
})
_SECRET_SUFFIXES = ("_password", "_passwd", "_passphrase", "_secret", "_token", "_api_key")
_PEM_ONLY_NAMES = frozenset({"key_file", "private_key", "private_key_file", "key"})


@dataclass(frozen=True, slots=True)
class SecretProblem:
    """A reference that could not be resolved; ``message`` names it, never a value."""

    path: DataPath
    message: str


@dataclass(frozen=True, slots=True)
class SecretWarning:
    """A secret-looking key that holds a literal value instead of a reference."""

    path: DataPath
    message: str


def resolve_secrets(
    data: Any, *, base_dir: Path, environ: Mapping[str, str]
) -> tuple[Any, list[SecretProblem]]:
    """A copy of plain YAML data with every reference resolved, plus what could not be.

    Unresolvable references are left as written in the returned data, so a caller that
    goes on despite problems never sees half a secret.
    """
    problems: list[SecretProblem] = []
    resolved = _walk(data, (), base_dir, environ, problems)
    return resolved, problems


def _walk(data: Any, path: DataPath, base_dir: Path, environ: Mapping[str, str],
          problems: list[SecretProblem]) -> Any:
    if isinstance(data, str):
        return _resolve_string(data, path, base_dir, environ, problems)
    if isinstance(data, Mapping):
        return {k: _walk(v, (*path, k), base_dir, environ, problems) for k, v in data.items()}
    if isinstance(data, list):
        return [_walk(v, (*path, i), base_dir, environ, problems) for i, v in enumerate(data)]
    return data


def _resolve_string(text: str, path: DataPath, base_dir: Path, environ: Mapping[str, str],
                    problems: list[SecretProblem]) -> str:
    if "${" not in text:
        return text
    failed = False

    def replace(match: re.Match[str]) -> str:
        nonlocal failed
        if match.group(0) == "$${":
            return "${"
        value, problem = _lookup(match.group("scheme"), match.group("arg"), base_dir, environ)
        if problem is not None:
            failed = True
            problems.append(SecretProblem(path, problem))
            return match.group(0)
        return value

    out = _TOKEN.sub(replace, text)
    return text if failed else out


def _lookup(scheme: str | None, arg: str, base_dir: Path, environ: Mapping[str, str]
            ) -> tuple[str, str | None]:
    """The referenced value, or a problem text naming the reference."""
    if scheme == "env":
        if not _ENV_NAME.match(arg):
            return "", f"'{arg}' is not an environment variable name"
        if arg not in environ:
            return "", f"environment variable {arg} is not set"
        return environ[arg], None
    if scheme == "file":
        if not arg.strip():
            return "", "${file:} needs a path"
        target = Path(arg).expanduser()
        if not target.is_absolute():
            target = base_dir / target
        try:
            return target.read_text(encoding="utf-8").rstrip("\r\n"), None
        except UnicodeDecodeError:
            return "", f"secret file {target} is not UTF-8 text"
        except OSError as error:
            reason = os.strerror(error.errno) if error.errno else type(error).__name__
            return "", f"secret file {target} cannot be read: {reason}"
    shown = f"${{{scheme}:...}}" if scheme else "${...}"
    return "", f"unknown reference {shown}: {HOW_TO_REFERENCE} (write $${{ for a literal ${{)"


def literal_secrets(data: Any) -> list[SecretWarning]:
    """Secret-looking keys holding literal values; run it on the data before resolving.

    A key looks secret by name (``password``, ``token``, ``client_secret``, an
    ``Authorization`` header, ``*_password``...), case and ``-``/``_`` ignored. ``key_file``,
    ``private_key`` and ``key`` name a key file's path in our configs, which is not itself
    secret, so they are flagged only when they hold PEM key material. Any string holding a
    URL with an embedded password (``scheme://user:pw@``) is flagged whatever its key.
    Empty values and references are fine.
    """
    warnings: list[SecretWarning] = []
    _scan(data, (), warnings)
    return warnings


def _scan(data: Any, path: DataPath, warnings: list[SecretWarning]) -> None:
    if isinstance(data, Mapping):
        for key, value in data.items():
            here = (*path, key)
            if isinstance(key, str) and _looks_secret(key, value) and _is_literal(value):
                warnings.append(SecretWarning(
                    here, f"'{key}' holds a literal value: {LITERAL_SECRET} ({HOW_TO_REFERENCE})"))
            else:
                _scan(value, here, warnings)
    elif isinstance(data, list):
        for i, value in enumerate(data):
            _scan(value, (*path, i), warnings)
    elif isinstance(data, str):
        match = _URL_PASSWORD.search(data)
        if match and not _REFERENCE.fullmatch(match.group("password")):
            warnings.append(SecretWarning(
                path, f"a URL holds a literal password: {LITERAL_SECRET} ({HOW_TO_REFERENCE})"))


def _looks_secret(key: str, value: Any) -> bool:
    name = key.strip().lower().replace("-", "_")
    if name in _PEM_ONLY_NAMES:
        return isinstance(value, str) and bool(_PEM_PRIVATE_KEY.search(value))
    return name in _SECRET_NAMES or name.endswith(_SECRET_SUFFIXES)


def _is_literal(value: Any) -> bool:
    """A non-empty scalar that is not made of references (a mapping is a nested block)."""
    if value is None or isinstance(value, Mapping | list | bool):
        return False
    text = str(value)
    if not text.strip():
        return False
    return not _REFERENCE.search(text)


def issues_for(items: list[SecretProblem] | list[SecretWarning], *, file: str,
               positions: Positions) -> list[ConfigIssue]:
    """Locate problems or warnings in their file, for printing as ``file:line:col``."""
    out = []
    for item in items:
        line, column = positions.of_value(item.path)
        out.append(ConfigIssue(file, line, column, _where(item.path), item.message))
    return out


def _where(path: DataPath) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out
