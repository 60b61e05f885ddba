"""Message search, detail, export and reprocess over real traffic: a real engine process,
messages sent over MLLP with python-hl7's client, some filtered, some refused by an EHR
(a socket peer here answering AR, so they dead-letter to ERROR), then reprocessed once the
EHR accepts. Read through the admin API and the `interlink messages` commands, which go
through the API too; every look is checked on the audit chain."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import hl7.client
import pytest
from openapi_spec_validator import validate
from sqlalchemy import select

from engine.store.schema import audit_events
from engine.store.store import open_store, sqlite_url
from tests.support import (
    INTERLINK,
    REPO,
    EngineProcess,
    engine_env,
    frame,
    frames_from,
    free_port,
    start_engine,
    wait_for_port,
    wait_until,
    write_mllp_channel,
)

pytestmark = pytest.mark.integration

DEADLINE = 60.0


def oru(control_id: str, patient: str, name: str = "DOE^JANE", app: str = "MONITOR") -> str:
    return (f"MSH|^~\\&|{app}|ICU|||20261125083000||ORU^R01^ORU_R01|{control_id}|P|2.6"
            "|||||||UNICODE UTF-8\r"
            f"PID|||{patient}^^^GH^MR||{name}\r"
            f"OBR|1|{control_id}|{control_id}|182777000^monitoring of patient^SCT\r"
            "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|262688^MDC_DIM_PERCENT^MDC"
            "|||||R\r")


def adt(control_id: str, patient: str) -> str:
    return (f"MSH|^~\\&|PAS|ADMIT|||20261125083000||ADT^A01|{control_id}|P|2.6\r"
            "EVN|A01|20261125083000\r"
            f"PID|||{patient}^^^GH^MR||ROE^RICHARD\r"
            "PV1|1|I|ICU^1^1\r")


class Ehr:
    """An EHR stand-in: answers every message with MSA-1 `code` (changeable) and MSA-2."""

    def __init__(self) -> None:
        self.code = "AR"
        self.received: list[bytes] = []
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            for payload in frames_from(conn):
                self.received.append(payload)
                control_id = payload.split(b"\r")[0].split(b"|")[9]
                conn.sendall(frame(b"MSH|^~\\&|EHR|H|||20261125||ACK|A" + control_id
                                   + b"|P|2.6\rMSA|" + self.code.encode() + b"|"
                                   + control_id + b"\r"))

    def close(self) -> None:
        self._stop = True
        self.listener.close()


def api(engine: EngineProcess, method: str, path: str, body: Any = None,
        raw: bool = False) -> Any:
    """One admin API call with the engine's local admin token when it writes one."""
    headers = {"content-type": "application/json"}
    token = engine.data_dir / "admin.token"
    if token.exists():
        headers["authorization"] = f"Bearer {token.read_text().strip()}"
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(f"http://127.0.0.1:{engine.admin_port}/api/v1/{path}",
                                     data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=DEADLINE) as response:
        content = response.read()
        return content if raw else json.loads(content)


def search(engine: EngineProcess, **filters: Any) -> list[dict[str, Any]]:
    answer = api(engine, "GET", "messages?" + urllib.parse.urlencode(filters))
    return answer["messages"]


def control_ids(rows: list[dict[str, Any]]) -> set[str]:
    return {r["control_id"] for r in rows}


SENT_TO_WARD = {
    "W-1": oru("W-1", "MRN-A"),
    "W-2": oru("W-2", "MRN-B"),
    "W-3": oru("W-3", "MRN-A", name="MÜLLER^JÖRG"),
    "W-4": adt("W-4", "MRN-C"),
}
SENT_TO_LAB = {"L-1": oru("L-1", "MRN-A", app="LAB"), "L-2": oru("L-2", "MRN-D", app="LAB")}


ANSWERED: dict[str, str] = {}
"""The ACK each message got, as the sender read it off the wire."""


@pytest.fixture(scope="module")
def traffic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[EngineProcess, Ehr,
                                                                         dict[str, int]]]:
    """An engine with two channels and real traffic in every end state."""
    tmp = tmp_path_factory.mktemp("messages-api")
    ehr = Ehr()
    ward_port, lab_port = free_port(), free_port()
    channels = tmp / "channels"
    write_mllp_channel(channels, "ward", ward_port, [{
        "name": "ehr", "to": {"type": "mllp", "host": "127.0.0.1", "port": ehr.port,
                              "ack_timeout_seconds": 5, "connect_timeout_seconds": 2},
        "retry": {"initial_seconds": 0.2, "max_attempts": 1}, "on_exhausted": "skip"}],
        filter="MSH-9.1 == ORU", transformer=[{"set": "MSH-5", "value": "EHR"}])
    write_mllp_channel(channels, "lab", lab_port, [
        {"name": "archive", "to": {"type": "file", "directory": str(tmp / "archive")}}])
    engine = start_engine(tmp / "data", channels=channels)
    try:
        wait_for_port(ward_port, engine.proc)
        wait_for_port(lab_port, engine.proc)
        started = time.time()
        for port, batch in ((ward_port, SENT_TO_WARD), (lab_port, SENT_TO_LAB)):
            with hl7.client.MLLPClient("127.0.0.1", port) as client:
                for control_id, text in batch.items():
                    answer = client.send_message(text)
                    assert b"MSA|AA|" in answer, answer
                    ANSWERED[control_id] = answer.strip(b"\x0b\x1c\r").decode() + "\r"
        wait_until(lambda: len(search(engine, status="ERROR")) == 3, "three dead letters")
        wait_until(lambda: len(search(engine, status="SENT")) == 2, "two archived")
        rows = search(engine)
        ids = {r["control_id"]: r["id"] for r in rows}
        ids["started_us"] = int(started * 1_000_000)
        yield engine, ehr, ids
    finally:
        code = engine.stop()
        ehr.close()
        assert code == 0, engine.log.read_text()[-5000:]


def test_every_filter_over_real_traffic(traffic: tuple[EngineProcess, Ehr, dict[str, int]]
                                        ) -> None:
    """Channel, status, time, ids, patient, type, sender and text each find what they name."""
    engine, _, ids = traffic
    assert control_ids(search(engine)) == set(SENT_TO_WARD) | set(SENT_TO_LAB)
    assert control_ids(search(engine, channel="lab")) == {"L-1", "L-2"}
    assert control_ids(search(engine, status="ERROR")) == {"W-1", "W-2", "W-3"}
    assert control_ids(search(engine, status="FILTERED,SENT")) == {"W-4", "L-1", "L-2"}
    assert control_ids(search(engine, control_id="W-2")) == {"W-2"}
    assert control_ids(search(engine, patient_id="MRN-A")) == {"W-1", "W-3", "L-1"}
    assert control_ids(search(engine, message_type="ADT")) == {"W-4"}
    assert control_ids(search(engine, message_type="ORU^R01", channel="lab")) == {"L-1", "L-2"}
    assert control_ids(search(engine, sending_application="LAB")) == {"L-1", "L-2"}
    assert control_ids(search(engine, text="MÜLLER")) == {"W-3"}
    assert control_ids(search(engine, text="EHR", channel="ward")) == {"W-1", "W-2", "W-3"}
    assert search(engine, since=str(ids["started_us"] - 60_000_000),
                  until="2000-01-01T00:00:00") == []
    later = time.time() + 3600
    assert search(engine, since=time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(later))) == []
    assert len(search(engine, since=str(ids["started_us"] - 60_000_000))) == 6


def test_pages_newest_first(traffic: tuple[EngineProcess, Ehr, dict[str, int]]) -> None:
    """Pages of two walk every message once, newest first, then stop."""
    engine, _, ids = traffic
    seen, before = [], None
    while True:
        query = {"limit": 2} | ({"before_id": before} if before else {})
        page = api(engine, "GET", "messages?" + urllib.parse.urlencode(query))
        seen += [m["id"] for m in page["messages"]]
        before = page["next_before_id"]
        if before is None:
            break
    assert seen == sorted((v for k, v in ids.items() if k != "started_us"), reverse=True)


def test_bad_filters_get_a_clear_400(traffic: tuple[EngineProcess, Ehr, dict[str, int]]
                                     ) -> None:
    """An unknown filter, status or time is refused with the reason, not ignored."""
    engine, _, _ = traffic
    for query, reason in (("chanel=ward", "unknown filter"), ("status=LOST", "unknown status"),
                          ("since=yesterday", "since"), ("limit=0", "limit")):
        with pytest.raises(urllib.error.HTTPError) as caught:
            api(engine, "GET", "messages?" + query)
        assert caught.value.code == 400
        assert reason in json.loads(caught.value.read())["error"]


def test_detail_shows_contents_response_delivery_and_timeline(
        traffic: tuple[EngineProcess, Ehr, dict[str, int]]) -> None:
    """The raw message, what the EHR got and answered, the dead letter, every event."""
    engine, _, ids = traffic
    detail = api(engine, "GET", f"messages/{ids['W-3']}")
    assert detail["message"]["patient_id"] == "MRN-A"
    assert detail["contents"]["raw"][0]["text"] == SENT_TO_WARD["W-3"]
    assert detail["contents"]["ack"][0]["text"] == ANSWERED["W-3"]
    ehr = detail["destinations"]["ehr"]
    assert ehr["status"] == "ERROR" and ehr["attempts"] == 1 and ehr["last_error"]
    assert "|EHR|" in ehr["contents"]["encoded"][0]["text"]
    assert "MSA|AR|W-3" in ehr["contents"]["response"][0]["text"]
    actions = [e["action"] for e in detail["timeline"]]
    assert actions[:3] == ["message.received", "message.routed", "delivery.error"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        api(engine, "GET", "messages/999999")
    assert caught.value.code == 404


def test_export_as_hl7_and_jsonl(traffic: tuple[EngineProcess, Ehr, dict[str, int]]) -> None:
    """The HL7 export holds exactly the raw messages; JSON lines add their metadata."""
    engine, _, _ = traffic
    hl7_export = api(engine, "GET", "messages/export?format=hl7&channel=ward", raw=True)
    expected = "".join(SENT_TO_WARD[c] + "\n" for c in ("W-4", "W-3", "W-2", "W-1"))
    assert hl7_export.decode() == expected
    lines = api(engine, "GET", "messages/export?status=SENT", raw=True).decode().splitlines()
    rows = [json.loads(line) for line in lines]
    assert [r["control_id"] for r in rows] == ["L-2", "L-1"]
    assert rows[0]["raw"]["text"] == SENT_TO_LAB["L-2"]


def test_cli_search_show_and_export(traffic: tuple[EngineProcess, Ehr, dict[str, int]],
                                    tmp_path: Path) -> None:
    """`interlink messages search|show|export` go through the API with the same filters."""
    engine, _, ids = traffic
    found = engine.run_cli("messages", "search", "--patient-id", "MRN-A", "--format", "jsonl")
    assert found.returncode == 0, found.stderr
    assert {json.loads(line)["control_id"] for line in found.stdout.splitlines()} == {
        "W-1", "W-3", "L-1"}
    table = engine.run_cli("messages", "search", "--text", "MÜLLER")
    assert table.returncode == 0 and "W-3" in table.stdout and "W-1" not in table.stdout
    shown = engine.run_cli("messages", "show", str(ids["L-1"]))
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout)["contents"]["raw"][0]["text"] == SENT_TO_LAB["L-1"]
    # In binary, as a redirect to a file would see it (segments end in CR).
    exported = subprocess.run(
        [*INTERLINK, "messages", "export", "--format", "hl7", "--channel", "lab"],
        env=engine_env(engine.data_dir, engine.port, admin_port=engine.admin_port,
                       channels=engine.channels),
        cwd=REPO, capture_output=True, timeout=60, check=False)
    assert exported.returncode == 0, exported.stderr
    assert exported.stdout == (SENT_TO_LAB["L-2"] + "\n" + SENT_TO_LAB["L-1"] + "\n").encode()
    bad = engine.run_cli("messages", "search", "--since", "last tuesday")
    assert bad.returncode == 2


def test_openapi_document_is_valid_and_lists_every_route(
        traffic: tuple[EngineProcess, Ehr, dict[str, int]]) -> None:
    """The served document is valid OpenAPI 3.1 and names every route of the router."""
    from twisted.internet import reactor

    from engine.admin import all_routes
    from engine.config import EngineConfig
    from engine.service import EngineService

    engine, _, _ = traffic
    request = urllib.request.Request(  # no credentials: the document is public
        f"http://127.0.0.1:{engine.admin_port}/api/v1/openapi.json")
    with urllib.request.urlopen(request, timeout=DEADLINE) as response:
        document = json.loads(response.read())
    validate(document)
    assert document["openapi"] == "3.1.0"
    served = {(method.upper(), path) for path, ops in document["paths"].items()
              for method in ops}
    routes = all_routes(EngineService(EngineConfig(), reactor))
    assert {(r.method, "/" + r.pattern) for r in routes} <= served
    search_op = document["paths"]["/messages"]["get"]
    assert {p["name"] for p in search_op["parameters"]} >= {
        "channel", "status", "since", "until", "control_id", "patient_id", "message_type",
        "text", "limit", "before_id"}


def test_bulk_reprocess_by_filter_then_delivers(
        traffic: tuple[EngineProcess, Ehr, dict[str, int]]) -> None:
    """Runs last: the EHR now accepts; a filtered bulk reprocess re-queues exactly the
    ward's dead letters of patient MRN-A, the CLI reprocesses the rest, all end SENT, and
    every look of this module is on an intact audit chain."""
    engine, ehr, ids = traffic
    ehr.code = "AA"
    with pytest.raises(urllib.error.HTTPError) as caught:
        api(engine, "POST", "messages/reprocess", {"filter": {"status": "SENT"}})
    assert caught.value.code == 400
    answer = api(engine, "POST", "messages/reprocess",
                 {"filter": {"channel": "ward", "patient_id": "MRN-A"}})
    assert sorted(answer["requeued"]) == sorted([ids["W-1"], ids["W-3"]])
    assert answer["matched"] == 2 and answer["next_before_id"] is None
    wait_until(lambda: control_ids(search(engine, status="SENT")) >= {"W-1", "W-3"},
               "W-1 and W-3 delivered after reprocess")
    done = engine.run_cli("messages", "reprocess", "--status", "ERROR", "--channel", "ward")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["requeued"] == [ids["W-2"]]
    wait_until(lambda: not search(engine, status="ERROR"), "no dead letters left")
    assert ehr.received.count(ehr.received[-1]) == 2  # W-2: refused once, then accepted

    store = open_store(sqlite_url(engine.data_dir))
    try:
        checked, broken = store.verify_audit()
        with store.engine.connect() as conn:
            events = conn.execute(select(audit_events.c.action, audit_events.c.message_id,
                                         audit_events.c.detail)).all()
    finally:
        store.close()
    assert broken is None and checked == len(events)
    actions = [e.action for e in events]
    for action in ("message.search", "message.view", "message.export",
                   "message.reprocess.bulk", "message.reprocess"):
        assert action in actions, action
    assert ("message.view", ids["W-3"]) in [(e.action, e.message_id) for e in events]
    searches = [json.loads(e.detail) for e in events if e.action == "message.search"]
    assert any(s.get("patient_id") == "MRN-A" and s["peer"].startswith("127.0.0.1:")
               for s in searches)
    assert not any("messages" in s for s in searches)  # the filters, never the results
    reprocessed = [e.message_id for e in events if e.action == "message.reprocess"]
    assert sorted(reprocessed) == sorted([ids["W-1"], ids["W-2"], ids["W-3"]])


def test_the_access_log_never_carries_search_filters(
        traffic: tuple[EngineProcess, Ehr, dict[str, int]]) -> None:
    """A search by patient id and text is logged by path only: no filter value in the log."""
    engine, _, _ = traffic
    assert control_ids(search(engine, patient_id="MRN-A", text="MÜLLER")) == {"W-3"}
    log = engine.log.read_text("utf-8", "replace")
    assert '"GET /api/v1/messages"' in log
    assert "MRN-A" not in log and "patient_id" not in log and "M%C3%9CLLER" not in log
