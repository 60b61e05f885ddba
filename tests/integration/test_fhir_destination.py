"""The FHIR destination in a running engine against a real FHIR R4 server.

The server is sekmet-fhir 0.1.1 (FastAPI + SQLite, FHIR R4): it validates what it is sent
with the fhir.resources models, runs transaction Bundles atomically with conditional
creates, and issues OAuth 2.0 client-credentials tokens. ``tools/ensure-fhir-server``
installs it into ``.venv-fhir``; without it these tests skip.

The corpus's PCD-01 messages go over MLLP twice, the second time with new control ids
(a sender repeating itself, which the engine's duplicate check does not catch): the
server must then hold exactly one Observation per reading.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from engine.store.status import ContentKind
from engine.store.store import open_store, sqlite_url
from profiles.fhir import NothingToMap, transaction_bundle
from profiles.pcd.extract import extract
from tests.support import (
    CORPUS,
    REPO,
    free_port,
    msa,
    send_and_receive,
    start_engine,
    wait_for_port,
    wait_until,
    write_mllp_channel,
)

pytestmark = pytest.mark.integration

FHIR_VENV = Path(os.environ.get("INTERLINK_TEST_FHIR_VENV", REPO / ".venv-fhir"))
SEKMET = FHIR_VENV / "bin" / "sekmet"
CLIENT_SECRET = "integration-s3cret"
PCD01 = sorted([*(CORPUS / "pcd01-monitor").glob("*.hl7"), *(CORPUS / "pcd01-pump").glob("*.hl7")])


@dataclass
class FHIRServer:
    """A running sekmet server: its FHIR base and a token to read it with."""

    base: str
    root: str

    def token(self) -> str:
        form = urllib.parse.urlencode({"grant_type": "client_credentials",
                                       "client_id": "reader", "client_secret": CLIENT_SECRET,
                                       "scope": "system/*.read"}).encode()
        with urllib.request.urlopen(f"{self.root}/auth/token", form, timeout=30) as answer:
            return str(json.load(answer)["access_token"])

    def search(self, query: str) -> dict[str, Any]:
        request = urllib.request.Request(f"{self.base}/{query}", headers={
            "Authorization": f"Bearer {self.token()}", "Accept": "application/fhir+json"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            return dict(json.load(answer))

    def total(self, query: str) -> int:
        separator = "&" if "?" in query else "?"
        return int(self.search(f"{query}{separator}_summary=count")["total"])


@pytest.fixture(scope="module")
def fhir_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FHIRServer]:
    """sekmet on a free loopback port with strict validation and client-credentials auth."""
    if os.environ.get("INTERLINK_TEST_NO_FHIR") == "1" or not SEKMET.exists():
        pytest.skip("no FHIR server: run tools/ensure-fhir-server (installs sekmet-fhir)")
    home = tmp_path_factory.mktemp("fhir-server")
    port = free_port()
    root = f"http://127.0.0.1:{port}"
    (home / "settings.yaml").write_text(json.dumps({
        "base_url": f"{root}/fhir", "host": "127.0.0.1", "port": port,
        "data_dir": str(home / "data"), "own_private_key_path": str(home / "keys" / "own.pem"),
        "log_inbound": False, "simulator": {"enabled": False},
        "validation": {"inbound": "strict"},
        "server_auth": {"types": ["smart"], "smart_clients": [
            {"client_id": "interlink", "client_secret": CLIENT_SECRET, "scopes": "system/*.*"},
            {"client_id": "reader", "client_secret": CLIENT_SECRET, "scopes": "system/*.read"},
        ]},
    }))
    log = (home / "server.log").open("wb")
    proc = subprocess.Popen([str(SEKMET), "serve", "--config", str(home / "settings.yaml")],
                            cwd=home, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, None, timeout=60)
        server = FHIRServer(f"{root}/fhir", root)
        wait_until(lambda: server.total("Observation") == 0, timeout=60)
        yield server
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        log.close()


def fhir_channel(tmp_path: Path, fhir_server: FHIRServer, name: str, secret: str, *,
                 to: dict[str, Any] | None = None, auth: dict[str, Any] | None = None,
                 **destination: Any) -> tuple[Path, int]:
    """A channel from an MLLP source on a free port to the server's FHIR destination.

    The client secret goes into a file the channel names (`${file:...}`), as a site would
    keep it out of the channel file; returns the channels directory and the MLLP port.
    """
    secret_file = tmp_path / "client-secret"
    secret_file.write_text(secret)
    port = free_port()
    target = {"type": "fhir", "base_url": fhir_server.base, **(to or {}),
              "auth": {"type": "client_credentials",
                       "token_url": f"{fhir_server.root}/auth/token",
                       "client_id": "interlink", "client_secret": f"${{file:{secret_file}}}",
                       **(auth or {})}}
    channels = tmp_path / "channels"
    write_mllp_channel(channels, name, port,
                       [{"name": "ehr-fhir", "to": target, **destination}])
    return channels, port


def first_line(raw: bytes) -> tuple[bytes, bytes]:
    """The MSH line and the rest: corpus files end their lines with CR or LF."""
    end = min(i for i in (raw.find(b"\r"), raw.find(b"\n"), len(raw)) if i >= 0)
    return raw[:end], raw[end:]


def with_control_id(raw: bytes, suffix: bytes) -> bytes:
    """The message with MSH-10 changed, so the engine does not take it for a duplicate."""
    first, rest = first_line(raw)
    fields = first.split(first[3:4])
    fields[9] += suffix
    return first[3:4].join(fields) + rest


def expected_readings(raw: bytes) -> set[str] | None:
    """The Observation identifiers the mapping gives a message; None when it maps nothing."""
    try:
        bundle = transaction_bundle(extract(raw))
    except NothingToMap:
        return None
    return {e["resource"]["identifier"][0]["value"] for e in bundle["entry"]
            if e["resource"]["resourceType"] == "Observation"}


def test_corpus_sent_twice_leaves_one_observation_per_reading(
        tmp_path: Path, fhir_server: FHIRServer) -> None:
    """Every reading of every PCD-01 corpus message is on the server exactly once."""
    assert PCD01, f"no PCD-01 corpus at {CORPUS}"
    channels, mllp_port = fhir_channel(
        tmp_path, fhir_server, "devices", CLIENT_SECRET + "\n", to={"timeout_seconds": 30},
        auth={"scope": "system/*.write"},
        retry={"initial_seconds": 0.2, "max_seconds": 1, "max_attempts": 3})
    messages = {path.name: path.read_bytes() for path in PCD01}
    expected = {name: expected_readings(raw) for name, raw in messages.items()}
    readings = set().union(*(ids for ids in expected.values() if ids))
    assert len(readings) > 40

    engine = start_engine(tmp_path / "data", channels=channels)
    try:
        wait_for_port(mllp_port)
        for suffix in (b"", b"-again"):
            with socket.create_connection(("127.0.0.1", mllp_port), timeout=10) as sock:
                for name, raw in messages.items():
                    answer = send_and_receive(sock, with_control_id(raw, suffix))
                    assert msa(answer)[1] in (b"AA", b"CA"), name
        store = open_store(sqlite_url(tmp_path / "data"))
        try:
            done = wait_until(lambda: _all_delivered(store, 2 * len(messages)), timeout=120)
        finally:
            store.close()
    finally:
        assert engine.stop() == 0

    store = open_store(sqlite_url(tmp_path / "data"))
    try:
        for message in done:
            again = message["control_id"].endswith("-again")
            name = next(n for n, raw in messages.items()
                        if message["control_id"].removesuffix("-again") == _control_id(raw))
            assert message["status"] == ("SENT" if expected[name] else "ERROR"), (name, message)
            if expected[name]:
                response = json.loads(store.content(message["id"], ContentKind.RESPONSE))
                created = [e for e in response["entry"]
                           if e["response"]["status"].startswith("201")]
                assert bool(created) is not again, (name, again)
    finally:
        store.close()
    assert fhir_server.total("Observation") == len(readings)
    for identifier in sorted(readings)[:: max(1, len(readings) // 12)]:
        query = f"Observation?identifier=urn:interlink:observation|{identifier}"
        assert fhir_server.total(query) == 1
    assert CLIENT_SECRET not in engine.log.read_text()


def _control_id(raw: bytes) -> str:
    first, _ = first_line(raw)
    return first.split(first[3:4])[9].decode("latin-1")


def _all_delivered(store: Any, count: int) -> list[dict[str, Any]] | None:
    rows = store.list_messages(channel="devices")
    if len(rows) < count or any(row["status"] in ("RECEIVED", "QUEUED") for row in rows):
        return None
    return list(rows)


def test_refused_bundle_is_a_dead_letter_with_the_operation_outcome(
        tmp_path: Path, fhir_server: FHIRServer) -> None:
    """A conditional subject naming an unknown patient: the server refuses, ERROR keeps why."""
    channels, mllp_port = fhir_channel(tmp_path, fhir_server, "strict", CLIENT_SECRET,
                                       to={"subject": "conditional"})
    raw = (CORPUS / "pcd01-monitor" / "ipf-acme-bp-pcd01-minimal.hl7").read_bytes()
    before = fhir_server.total("Observation")
    engine = start_engine(tmp_path / "data", channels=channels)
    try:
        wait_for_port(mllp_port)
        with socket.create_connection(("127.0.0.1", mllp_port), timeout=10) as sock:
            assert msa(send_and_receive(sock, with_control_id(raw, b"-strict")))[1] in (
                b"AA", b"CA")
        store = open_store(sqlite_url(tmp_path / "data"))
        try:
            (message,) = wait_until(lambda: store.list_messages(channel="strict", status="ERROR"))
            (delivery,) = store.deliveries_of(message["id"])
            outcome = json.loads(store.content(message["id"], ContentKind.RESPONSE))
        finally:
            store.close()
    finally:
        assert engine.stop() == 0
    assert delivery["attempts"] == 1
    assert delivery["last_error"] == "HTTP 404 (OperationOutcome: not-found)"
    assert outcome["resourceType"] == "OperationOutcome"
    assert fhir_server.total("Observation") == before
