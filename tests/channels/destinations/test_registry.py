"""Destination configs as a channel file writes them, and building connectors from them."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError
from twisted.internet.testing import MemoryReactorClock

from channels.destinations.file import FileDestination, FileDestinationConfig
from channels.destinations.http import HTTPDestination, HTTPDestinationConfig
from channels.destinations.mllp import MLLPDestination, MLLPDestinationConfig
from channels.destinations.registry import (
    DESTINATION_CONFIG,
    ChannelLinkConfig,
    NotAConnector,
    build_destination,
)

EXAMPLES = """
ehr:
  type: mllp
  host: ehr.example.org
  port: 2575
  tls:
    ca_certificates: certs/ehr-ca.pem
    certificate: certs/interlink.pem
    private_key: certs/interlink.key
  ack_timeout_seconds: 30
  connect_timeout_seconds: 10
  on_ae: retry
  on_ar: fail
  check_control_id: true
archive:
  type: file
  directory: /var/interlink/out
  filename: "{date:%Y%m%d}-{channel}-{message_id}-{control_id}.hl7"
  if_exists: suffix
fhir:
  type: http
  url: https://fhir.example.org/hl7v2
  method: POST
  headers:
    Authorization: Bearer resolved-elsewhere
  content_type: application/hl7-v2; charset=utf-8
  timeout_seconds: 20
  tls_ca: certs/fhir-ca.pem
  success_status: [200, 201, 202]
lab:
  type: channel
  channel: lab-results
"""


def examples() -> dict[str, object]:
    return {name: DESTINATION_CONFIG.validate_python(raw)
            for name, raw in yaml.safe_load(EXAMPLES).items()}


def test_each_type_picks_its_model() -> None:
    """The ``type`` key chooses the model; every documented key is accepted."""
    configs = examples()
    assert isinstance(configs["ehr"], MLLPDestinationConfig)
    assert isinstance(configs["archive"], FileDestinationConfig)
    assert isinstance(configs["fhir"], HTTPDestinationConfig)
    assert configs["lab"] == ChannelLinkConfig(type="channel", channel="lab-results")


@pytest.mark.parametrize(
    "raw",
    [
        {"type": "smtp", "host": "mail"},
        {"host": "ehr", "port": 2575},
        {"type": "file", "directory": "/tmp", "url": "http://x/"},
        {"type": "channel", "channel": ""},
    ],
)
def test_unknown_types_and_foreign_keys_are_errors(raw: dict[str, object]) -> None:
    """No type, an unknown type, or another type's key is rejected."""
    with pytest.raises(ValidationError):
        DESTINATION_CONFIG.validate_python(raw)


def test_build_gives_each_connector_its_name(tmp_path: Path) -> None:
    """mllp, file and http build (not started) with the reactor passed in."""
    reactor = MemoryReactorClock()
    built = {
        "ehr": build_destination(
            "ehr", MLLPDestinationConfig(type="mllp", host="127.0.0.1", port=2575), reactor
        ),
        "archive": build_destination(
            "archive", FileDestinationConfig(type="file", directory=tmp_path), reactor
        ),
        "fhir": build_destination(
            "fhir", HTTPDestinationConfig(type="http", url="http://127.0.0.1/x"), reactor
        ),
    }
    assert isinstance(built["ehr"], MLLPDestination)
    assert isinstance(built["archive"], FileDestination)
    assert isinstance(built["fhir"], HTTPDestination)
    assert {name: d.name for name, d in built.items()} == {n: n for n in built}
    assert reactor.tcpClients == []


def test_channel_link_is_left_to_the_engine() -> None:
    """A channel link has no connector here."""
    with pytest.raises(NotAConnector, match="lab"):
        build_destination("lab", ChannelLinkConfig(type="channel", channel="x"), None)


def test_unreadable_tls_file_fails_the_build_not_every_send(tmp_path: Path) -> None:
    """A missing CA file is found when the destination is built."""
    config = MLLPDestinationConfig(
        type="mllp", host="ehr", port=2575, tls={"ca_certificates": tmp_path / "absent.pem"}
    )
    with pytest.raises(OSError):
        build_destination("ehr", config, MemoryReactorClock())
