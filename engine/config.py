"""The engine file (`conf/interlink.yaml`) and the environment overrides a deployer expects.

Relative `data_dir` is taken from the working directory (so `make run` keeps its data in
`./var`); every other relative path is taken from the directory of the engine file.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pydantic import Field

from channels.configfile import ConfigError, ConfigIssue, load_yaml, validate
from channels.model import MLLPListenerConfig, Strict
from channels.tls import ListenerTLS
from engine.access.config import AccessConfig
from engine.alerts.config import AlertsConfig
from engine.retention.config import RetentionConfig

DEFAULT_CONFIG = Path("conf/interlink.yaml")


class MLLPConfig(MLLPListenerConfig):
    """The engine's MLLP listener and the channel its messages belong to."""

    port: int = Field(2575, ge=0, le=65535)
    channel: str = Field("inbound", min_length=1, max_length=128)


class StoreConfig(Strict):
    """Where messages live; SQLite under the data directory unless a URL is given."""

    url: str | None = None
    duplicate_window_seconds: float = Field(86400.0, ge=0)


class AdminConfig(Strict):
    """The admin API and dashboard listener."""

    port: int = Field(8575, ge=0, le=65535)
    interface: str = Field("127.0.0.1", description="Loopback unless deliberately opened.")
    tls: ListenerTLS | None = None


class EngineConfig(Strict):
    """Everything `interlink run` needs to start."""

    data_dir: Path = Path("var")
    channels_dir: Path = Field(
        Path("channels"), description="Channel files; relative to the engine file's directory.")
    node_id: str | None = Field(
        None, max_length=128, description="This node's name on a shared PostgreSQL store; "
        "defaults to host name and process id.")
    store: StoreConfig = StoreConfig()
    mllp: MLLPConfig = MLLPConfig()
    admin: AdminConfig = AdminConfig()
    access: AccessConfig = AccessConfig()
    alerts: AlertsConfig = AlertsConfig()
    retention: RetentionConfig = RetentionConfig()
    pipeline_workers: int = Field(
        1, ge=0, le=32, description="Processes that filter and transform messages beside the "
        "reactor (0: in the engine process itself).")
    sender_application: str = "INTERLINK"
    sender_facility: str = ""
    log_format: str = Field("text", pattern="^(text|json)$")

    def store_url(self) -> str:
        """The store's SQLAlchemy URL."""
        from engine.store.store import sqlite_url

        return self.store.url or sqlite_url(self.data_dir)


ENV_OVERRIDES: dict[str, tuple[str, ...]] = {
    "INTERLINK_DATA_DIR": ("data_dir",),
    "INTERLINK_MLLP_PORT": ("mllp", "port"),
    "INTERLINK_ADMIN_PORT": ("admin", "port"),
    "INTERLINK_STORE_URL": ("store", "url"),
    "INTERLINK_CHANNELS_DIR": ("channels_dir",),
    "INTERLINK_NODE_ID": ("node_id",),
    "INTERLINK_PIPELINE_WORKERS": ("pipeline_workers",),
}


def _apply_env(data: dict[str, Any], environ: Mapping[str, str]) -> None:
    for name, path in ENV_OVERRIDES.items():
        value = environ.get(name)
        if value is None or value == "":
            continue
        node = data
        for key in path[:-1]:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                break
        else:
            node[path[-1]] = value


def config_path(explicit: str | None, environ: Mapping[str, str] = os.environ) -> Path:
    """The engine file to read: the argument, else INTERLINK_CONFIG, else the default."""
    return Path(explicit or environ.get("INTERLINK_CONFIG") or DEFAULT_CONFIG)


def load_config(path: Path, environ: Mapping[str, str] = os.environ) -> EngineConfig:
    """Read the engine file, apply environment overrides, validate everything at once."""
    if not path.exists():
        raise ConfigError([ConfigIssue(str(path), 1, 1, "", "file not found")])
    data, positions = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError([ConfigIssue(str(path), 1, 1, "", "expected a mapping at the top")])
    _apply_env(data, environ)
    config = validate(EngineConfig, data, file=str(path), positions=positions)
    base = path.parent
    config = config.model_copy(update={"channels_dir": base / config.channels_dir})
    if config.mllp.tls is not None:
        config = config.model_copy(update={"mllp": config.mllp.model_copy(
            update={"tls": config.mllp.tls.relative_to(base)})})
    if config.admin.tls is not None:
        config = config.model_copy(update={"admin": config.admin.model_copy(
            update={"tls": config.admin.tls.relative_to(base)})})
    return config
