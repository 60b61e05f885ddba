"""Loading every channel file of a directory, with every problem reported at once.

Each file is read, its secret references resolved, validated against `ChannelConfig`, and
compiled (hooks imported, tables checked), so `interlink check` finds what a deploy would
trip over. Problems across files (a name used twice, a port bound twice, a link to a
channel that does not exist) are reported too. Each problem has file, line and column.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from channels.configfile import ConfigError, ConfigIssue, Positions, load_yaml, validate
from channels.destinations.fhir import FHIRDestinationConfig
from channels.destinations.file import FileDestinationConfig
from channels.destinations.http import HTTPDestinationConfig
from channels.destinations.mllp import MLLPDestinationConfig
from channels.destinations.registry import ChannelLinkConfig
from channels.hooks import HookError, HookLoader
from channels.model import ChannelConfig, MLLPSourceConfig
from channels.pipeline import ChannelPipeline
from channels.secrets import issues_for, literal_secrets, resolve_secrets
from channels.sources.file import FileSourceConfig
from channels.sources.http import HTTPSourceConfig
from channels.transforms import UnknownTable, check_tables


@dataclass(frozen=True, slots=True)
class LoadedChannel:
    """A valid channel file: its model, compiled pipeline and where it came from."""

    config: ChannelConfig
    pipeline: ChannelPipeline
    file: Path
    digest: str
    positions: Positions = field(default_factory=lambda: Positions({}, {}), compare=False)

    @property
    def name(self) -> str:
        return self.config.name


@dataclass(slots=True)
class Catalog:
    """The channels of a directory that loaded, and the problems of those that did not."""

    channels: dict[str, LoadedChannel] = field(default_factory=dict)
    issues: list[ConfigIssue] = field(default_factory=list)
    warnings: list[ConfigIssue] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.issues


def channel_files(path: Path) -> list[Path]:
    """The channel files under a directory (or the one file given), in name order."""
    if path.is_file():
        return [path]
    if not path.is_dir():
        return []
    return sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml") and p.is_file())


def load_channel(path: Path, *, environ: Mapping[str, str] = os.environ,
                 hooks: HookLoader | None = None) -> tuple[LoadedChannel, list[ConfigIssue]]:
    """Read, resolve, validate and compile one channel file; raises ConfigError."""
    text = path.read_bytes()
    data, positions = load_yaml(path)
    file = str(path)
    warnings = issues_for(literal_secrets(data), file=file, positions=positions)
    data, problems = resolve_secrets(data, base_dir=path.parent, environ=environ)
    issues = issues_for(problems, file=file, positions=positions)
    try:
        config = validate(ChannelConfig, data, file=file, positions=positions)
    except ConfigError as error:
        raise ConfigError(issues + error.issues) from error
    if issues:
        raise ConfigError(issues)
    config = _relative_to(config, path.parent)
    table_issues = _table_issues(file, config, positions)
    if table_issues:
        raise ConfigError(table_issues)
    try:
        pipeline = ChannelPipeline(config, hooks)
    except (HookError, UnknownTable) as error:
        raise ConfigError([_locate_compile_error(file, data, positions, error)]) from error
    digest = channel_digest(text, data, pipeline.hooks)
    return LoadedChannel(config, pipeline, path, digest, positions), warnings


def channel_digest(text: bytes, resolved: Any, hooks: Mapping[str, str]) -> str:
    """What a reload compares: the file, the secrets it resolved, its hooks' module files.

    A rotated `${file:…}` secret or an edited hook module then redeploys the channel
    like an edit to the file does.
    """
    h = hashlib.sha256(text)
    h.update(json.dumps(resolved, sort_keys=True, default=str).encode())
    h.update(json.dumps(sorted(hooks.items())).encode())
    return h.hexdigest()


def try_load_channel(path: Path, issues: list[ConfigIssue], *,
                     environ: Mapping[str, str] = os.environ,
                     hooks: HookLoader | None = None
                     ) -> tuple[LoadedChannel | None, list[ConfigIssue]]:
    """`load_channel`, with the file's problems appended to `issues` instead of raised."""
    try:
        return load_channel(path, environ=environ, hooks=hooks)
    except ConfigError as error:
        issues.extend(error.issues)
    except OSError as error:
        issues.append(ConfigIssue(str(path), 1, 1, "", f"cannot read: {error}"))
    return None, []


def _table_issues(file: str, config: ChannelConfig, positions: Positions) -> list[ConfigIssue]:
    """`map` steps naming a table the channel does not define, located at the step."""
    places: list[tuple[tuple[Any, ...], Any]] = [(("transformer",), config.transformer)]
    places += [(("destinations", i, "transformer"), spec.transformer)
               for i, spec in enumerate(config.destinations)]
    issues = []
    for prefix, steps in places:
        for index, problem in check_tables(steps, config.tables):
            where = (*prefix, index, "table")
            line, col = positions.of_value(where)
            issues.append(ConfigIssue(file, line, col, _dotted(where), problem))
    return issues


def _relative_to(config: ChannelConfig, base: Path) -> ChannelConfig:
    """Directories in a channel file are relative to the file's directory."""
    source = config.source
    if isinstance(source, FileSourceConfig):
        config = config.model_copy(update={"source": source.relative_to(base)})
    if isinstance(source, MLLPSourceConfig | HTTPSourceConfig) and source.tls is not None:
        config = config.model_copy(update={"source": source.model_copy(
            update={"tls": source.tls.relative_to(base)})})
    destinations = [spec.model_copy(update={"to": _connector_relative_to(spec.to, base)})
                    for spec in config.destinations]
    config = config.model_copy(update={"destinations": destinations})
    tests = [t.model_copy(update={"file": base / t.file}) if t.file else t
             for t in config.tests]
    return config.model_copy(update={"tests": tests})


def _connector_relative_to(to: Any, base: Path) -> Any:
    """A destination's directory and TLS files, relative to the channel file."""
    def rel(path: Path | None) -> Path | None:
        return base / path if path is not None else None

    if isinstance(to, FileDestinationConfig):
        return to.model_copy(update={"directory": base / to.directory})
    if isinstance(to, HTTPDestinationConfig) and to.tls_ca is not None:
        return to.model_copy(update={"tls_ca": base / to.tls_ca})
    if isinstance(to, FHIRDestinationConfig):
        return to.relative_to(base)
    if isinstance(to, MLLPDestinationConfig) and to.tls is not None:
        t = to.tls
        return to.model_copy(update={"tls": t.model_copy(update={
            "ca_certificates": rel(t.ca_certificates), "certificate": rel(t.certificate),
            "private_key": rel(t.private_key)})})
    return to


def _locate_compile_error(file: str, data: Any, positions: Positions,
                          error: Exception) -> ConfigIssue:
    """Point a hook or table problem at the step that names it, where it can be found."""
    needle = getattr(error, "spec", None)
    if needle is not None:
        for path, _ in sorted(positions.values.items(), key=lambda kv: kv[1]):
            if _value_at(data, path) == needle:
                line, col = positions.of_value(path)
                return ConfigIssue(file, line, col, _dotted(path), str(error))
    return ConfigIssue(file, 1, 1, "", str(error))


def _value_at(data: Any, path: tuple[Any, ...]) -> Any:
    for part in path:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def _dotted(path: tuple[Any, ...]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def load_catalog(path: Path, *, environ: Mapping[str, str] = os.environ,
                 listeners: Mapping[str, str] | None = None) -> Catalog:
    """Every channel file under `path`; `listeners` maps endpoints the engine itself binds."""
    catalog = Catalog()
    hooks = HookLoader()
    for file in channel_files(path):
        loaded, warnings = try_load_channel(file, catalog.issues, environ=environ, hooks=hooks)
        if loaded is None:
            continue
        catalog.warnings.extend(warnings)
        other = catalog.channels.get(loaded.name)
        if other is not None:
            catalog.issues.append(ConfigIssue(str(file), 1, 1, "name", (
                f"channel {loaded.name!r} is already defined in {other.file}")))
            continue
        catalog.channels[loaded.name] = loaded
    catalog.issues.extend(_cross_checks(catalog, dict(listeners or {})))
    return catalog


def source_endpoint(config: ChannelConfig) -> str | None:
    """A comparable description of what a channel's source listens on, if anything."""
    source = config.source
    if isinstance(source, MLLPSourceConfig):
        return source.endpoint or f"tcp:{source.port}"
    if isinstance(source, HTTPSourceConfig):
        return f"tcp:{source.port}"
    return None


def _cross_checks(catalog: Catalog, bound: dict[str, str]) -> list[ConfigIssue]:
    issues = []
    for name, loaded in catalog.channels.items():
        endpoint = source_endpoint(loaded.config)
        at = loaded.positions.of_value
        if endpoint is not None and not endpoint.endswith(":0"):
            if endpoint in bound:
                issues.append(ConfigIssue(str(loaded.file), *at(("source",)), "source", (
                    f"{endpoint} is already used by {bound[endpoint]}")))
            bound[endpoint] = f"channel {name}"
        for i, spec in enumerate(loaded.config.destinations):
            to = spec.to
            if isinstance(to, ChannelLinkConfig) and to.channel not in catalog.channels:
                line, col = at(("destinations", i, "to", "channel"))
                issues.append(ConfigIssue(str(loaded.file), line, col, f"destinations[{i}].to", (
                    f"no channel named {to.channel!r}")))
    return issues
