"""`interlink check`: validate the engine file and every channel file without starting anything.

Every problem is printed at once as ``file:line:col: where: message`` (what an editor can
jump to), literal secrets as ``warning: ...``, then one summary line. The exit code is 1
when anything is wrong, so a CI job or a deploy script can stop on it.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from channels.catalog import Catalog, load_catalog
from channels.configfile import ConfigError, ConfigIssue, Positions, load_yaml
from channels.secrets import issues_for, literal_secrets
from engine.commands.common import add_config_option
from engine.config import EngineConfig, config_path, load_config


def register(sub: Any) -> None:
    """Add the `check` subcommand."""
    parser = sub.add_parser("check", help="validate the engine file and channel files and exit")
    add_config_option(parser)
    parser.add_argument("path", nargs="?", type=Path, metavar="PATH",
                        help="a channel file or directory (default: the engine's channels "
                             "directory)")
    parser.set_defaults(handler=handle)


def channels_dir(config: EngineConfig | None, engine_file: Path) -> Path:
    """The engine's channel directory; `channels` beside an engine file that did not load."""
    return config.channels_dir if config is not None else engine_file.parent / "channels"


def safe_store_url(url: str) -> str:
    """The store URL as it may be printed: any password replaced by ***."""
    return make_url(url).render_as_string(hide_password=True)


def _engine_listeners(config: EngineConfig) -> dict[str, str]:
    """Endpoints the engine binds itself, keyed as `catalog.source_endpoint` describes them."""
    mllp = config.mllp.endpoint or f"tcp:{config.mllp.port}"
    return {mllp: "the engine's MLLP listener (mllp in the engine file)",
            f"tcp:{config.admin.port}": "the engine's admin listener (admin.port)"}


def _engine_warnings(path: Path) -> tuple[list[ConfigIssue], Positions | None]:
    """Literal secrets in the engine file (a store URL with its password, say)."""
    try:
        data, positions = load_yaml(path)
    except (ConfigError, OSError):
        return [], None
    return issues_for(literal_secrets(data), file=str(path), positions=positions), positions


def _routing_warnings(catalog: Catalog, config: EngineConfig, engine_file: Path,
                      positions: Positions | None) -> list[ConfigIssue]:
    """Channels nothing feeds, and an engine listener whose channel has no file."""
    warnings = []
    listener = config.mllp.channel
    if catalog.channels and listener not in catalog.channels:
        line, col = positions.of_value(("mllp", "channel")) if positions else (1, 1)
        warnings.append(ConfigIssue(str(engine_file), line, col, "mllp.channel", (
            f"no channel file defines {listener!r}; messages on the engine's listener will "
            "be FILTERED (channel has no destinations)")))
    linked = {spec.to.channel for loaded in catalog.channels.values()
              for spec in loaded.config.destinations if spec.to.type == "channel"}
    for name, loaded in catalog.channels.items():
        if loaded.config.source is None and name != listener and name not in linked:
            warnings.append(ConfigIssue(str(loaded.file), 1, 1, "source", (
                "no source, and neither the engine's listener (mllp.channel) nor another "
                "channel sends to this channel; it will receive nothing")))
    return warnings


def handle(args: argparse.Namespace) -> int:
    """Print every issue and warning and a summary; 0 only when there is no error."""
    engine_file = config_path(args.config)
    issues: list[ConfigIssue] = []
    warnings: list[ConfigIssue] = []
    config: EngineConfig | None = None
    try:
        config = load_config(engine_file)
    except ConfigError as error:
        issues.extend(error.issues)
    engine_warnings, positions = _engine_warnings(engine_file)
    warnings.extend(engine_warnings)

    target = args.path or channels_dir(config, engine_file)
    if args.path is not None and not args.path.exists():
        issues.append(ConfigIssue(str(args.path), 1, 1, "", "no such file or directory"))
        catalog = Catalog()
    else:
        listeners = _engine_listeners(config) if config is not None else {}
        catalog = load_catalog(target, environ=os.environ, listeners=listeners)
    issues.extend(catalog.issues)
    warnings.extend(catalog.warnings)
    if config is not None and args.path is None:
        warnings.extend(_routing_warnings(catalog, config, engine_file, positions))

    for issue in issues:
        print(issue)
    for warning in warnings:
        print(f"warning: {warning}")
    if config is not None:
        print(f"engine: {engine_file}: MLLP {config.mllp.endpoint_description()} -> channel "
              f"{config.mllp.channel}, store {safe_store_url(config.store_url())}")
    print(summary(issues, len(catalog.channels), len(warnings)))
    return 1 if issues else 0


def summary(issues: list[ConfigIssue], channels: int, warnings: int) -> str:
    """`3 channels OK` or `2 errors in 1 file`, plus the number of warnings if any."""
    if issues:
        files = len({issue.file for issue in issues})
        line = (f"{len(issues)} {'error' if len(issues) == 1 else 'errors'} in {files} "
                f"{'file' if files == 1 else 'files'}")
    else:
        line = f"{channels} {'channel' if channels == 1 else 'channels'} OK"
    if warnings:
        line += f", {warnings} {'warning' if warnings == 1 else 'warnings'}"
    return line
