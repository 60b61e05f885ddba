"""Sources and destinations in a running engine: HTTP in, file in, channel to channel,
HTTP out with a secret header, and the link between the two messages on the record."""

from __future__ import annotations

import http.server
import json
import threading
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest

from engine.store.store import open_store, sqlite_url
from tests.integration.test_channels_control import with_control_id
from tests.support import free_port, msa, refused, start_engine, wait_until

pytestmark = pytest.mark.integration


class EHR(http.server.BaseHTTPRequestHandler):
    """An HTTP endpoint that keeps what it is sent (with its Authorization header)."""

    received: ClassVar[list[tuple[str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        EHR.received.append((self.headers.get("Authorization", ""), body))
        self.send_response(201)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def ehr() -> Iterator[str]:
    EHR.received = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), EHR)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hl7"
    server.shutdown()
    server.server_close()


def test_http_and_file_sources_feed_a_linked_channel_that_posts_to_an_ehr(
        tmp_path: Path, ehr: str) -> None:
    """POST → front (ACK after commit) → link → back → HTTP EHR; a dropped file too."""
    http_port = free_port()
    inbox = tmp_path / "inbox"
    channels = tmp_path / "channels"
    channels.mkdir()
    (tmp_path / "token").write_text("s3cret\n")
    (channels / "front.yaml").write_text(f"""\
name: front
source: {{type: http, port: {http_port}}}
destinations:
  - name: onward
    to: {{type: channel, channel: back}}
""")
    (channels / "drop.yaml").write_text(f"""\
name: drop
source: {{type: file, directory: {inbox}, poll_seconds: 0.2, min_age_seconds: 0}}
destinations:
  - name: onward
    to: {{type: channel, channel: back}}
""")
    (channels / "back.yaml").write_text(f"""\
name: back
transformer: [{{set: MSH-5, value: EHR}}]
destinations:
  - name: ehr
    to:
      type: http
      url: {ehr}
      headers: {{Authorization: "Bearer ${{file:{tmp_path / 'token'}}}"}}
""")
    engine = start_engine(tmp_path / "data", channels=channels)
    try:
        wait_until(lambda: not refused(http_port))
        request = urllib.request.Request(
            f"http://127.0.0.1:{http_port}/hl7", data=with_control_id("VIA-HTTP"),
            headers={"Content-Type": "application/hl7-v2"}, method="POST")
        with urllib.request.urlopen(request, timeout=30) as answer:
            assert msa(answer.read())[1] in (b"AA", b"CA")

        inbox.mkdir(exist_ok=True)
        (inbox / "a.hl7").write_bytes(with_control_id("VIA-FILE"))
        wait_until(lambda: len(EHR.received) == 2)
        wait_until(lambda: list((inbox / "done").glob("a*.hl7")))
    finally:
        assert engine.stop() == 0

    assert {auth for auth, _ in EHR.received} == {"Bearer s3cret"}
    assert "s3cret" not in engine.log.read_text()
    assert all(b"|EHR|" in body.split(b"\r")[0] for _, body in EHR.received)
    store = open_store(sqlite_url(tmp_path / "data"))
    try:
        rows = {(m["channel"], m["control_id"]): m for m in store.list_messages()}
        for source, control_id in (("front", "VIA-HTTP"), ("drop", "VIA-FILE")):
            parent, child = rows[(source, control_id)], rows[("back", control_id)]
            assert child["parent_id"] == parent["id"]
            assert parent["status"] == child["status"] == "SENT"
            assert child["peer"] == f"channel:{source}"
        trail = store.audit_trail(rows[("back", "VIA-HTTP")]["id"])
        assert json.loads(trail[0]["detail"])["parent_id"] == rows[("front", "VIA-HTTP")]["id"]
    finally:
        store.close()
