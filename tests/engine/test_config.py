"""The engine file: defaults, environment overrides, and errors with file and line."""

from __future__ import annotations

from pathlib import Path

import pytest

from channels.configfile import ConfigError
from engine.config import config_path, load_config

REPO = Path(__file__).resolve().parents[2]


def test_shipped_default_is_the_embedded_setup() -> None:
    """conf/interlink.yaml gives SQLite under var/ and MLLP on 127.0.0.1:2575."""
    cfg = load_config(REPO / "conf" / "interlink.yaml", environ={})
    assert cfg.mllp.endpoint_description().startswith("tcp:2575:interface=127.0.0.1")
    assert cfg.store_url().endswith("/var/interlink.db")
    assert cfg.admin.port == 8575


def test_environment_overrides(tmp_path: Path) -> None:
    """INTERLINK_DATA_DIR, _MLLP_PORT, _ADMIN_PORT and _PIPELINE_WORKERS win over the file."""
    env = {"INTERLINK_DATA_DIR": str(tmp_path / "data"), "INTERLINK_MLLP_PORT": "3575",
           "INTERLINK_ADMIN_PORT": "9575", "INTERLINK_PIPELINE_WORKERS": "0"}
    assert load_config(REPO / "conf" / "interlink.yaml", environ={}).pipeline_workers == 1
    cfg = load_config(REPO / "conf" / "interlink.yaml", environ=env)
    assert cfg.mllp.port == 3575 and cfg.admin.port == 9575
    assert cfg.pipeline_workers == 0
    assert cfg.store_url() == f"sqlite:///{tmp_path / 'data' / 'interlink.db'}"


def test_config_path_precedence() -> None:
    """--config beats INTERLINK_CONFIG, which beats the default."""
    assert config_path("a.yaml", {"INTERLINK_CONFIG": "b.yaml"}) == Path("a.yaml")
    assert config_path(None, {"INTERLINK_CONFIG": "b.yaml"}) == Path("b.yaml")
    assert config_path(None, {}) == Path("conf/interlink.yaml")


def test_every_error_is_reported_with_its_line(tmp_path: Path) -> None:
    """Unknown keys and bad values are all reported at once, each at its file:line:col."""
    path = tmp_path / "interlink.yaml"
    path.write_text("data_dir: var\nmllp:\n  port: 99999\n  max_frme_bytes: 10\n"
                    "store:\n  url: 5\nbogus: true\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    lines = sorted(str(i) for i in caught.value.issues)
    assert f"{path}:3:9: mllp.port: Input should be less than or equal to 65535" in lines
    assert f"{path}:4:3: mllp: unknown key 'max_frme_bytes'" in lines
    assert f"{path}:7:1: unknown key 'bogus'" in lines
    assert any(line.startswith(f"{path}:6:8: store.url") for line in lines)
    assert len(lines) == 4


def test_yaml_syntax_error_has_a_location(tmp_path: Path) -> None:
    """Broken YAML names the line it broke on."""
    path = tmp_path / "interlink.yaml"
    path.write_text("mllp:\n  port: [1, 2\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path, environ={})
    [issue] = caught.value.issues
    assert issue.line == 3 and "YAML" in issue.message


def test_tls_files_and_channels_dir_are_taken_from_the_engine_file(tmp_path: Path) -> None:
    """Relative paths in the engine file are relative to the file, not the working dir."""
    path = tmp_path / "etc" / "interlink.yaml"
    path.parent.mkdir()
    path.write_text("mllp:\n  tls: {certificate: tls/s.crt, private_key: tls/s.key}\n")
    config = load_config(path, environ={})
    assert config.mllp.tls is not None
    assert config.mllp.tls.certificate == tmp_path / "etc" / "tls" / "s.crt"
    assert config.mllp.tls.ca_certificates is None
    assert config.channels_dir == tmp_path / "etc" / "channels"
