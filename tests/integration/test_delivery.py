"""Delivery to an EHR over MLLP, end to end: real engine processes, real peers, real SQLite.

Each test writes its channel files, starts `interlink run`, sends over loopback sockets and
watches what reaches the peer standing in for the EHR: `../shared/tools/mllp_sink.py` (an
independent implementation that ACKs everything and appends what it got to a file) or a
small socket peer written here that answers AE or AR, never answers, closes mid-ACK or
ACKs late. Outcomes are read from the peer, the admin API, `interlink messages list` and
the store opened read-only. Nothing waits a fixed time: every wait polls for a state with
a generous deadline.
"""

from __future__ import annotations

import json
import re
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import closing, contextmanager, suppress
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from engine.store.store import Store, open_store, sqlite_url
from tests.support import (
    EB,
    REPO,
    SB,
    EngineProcess,
    frames_from,
    free_port,
    msa,
    running,
    send_and_receive,
    start_with_channels,
    store_of,
    wait_for_port,
    wait_until,
    write_mllp_channel,
)

pytestmark = pytest.mark.integration

TOOLS = REPO.parent / "shared" / "tools"
DEADLINE = 60.0

# -- messages --------------------------------------------------------------------------------


def oru(control_id: str, patient: str) -> bytes:
    """A small PCD-01-shaped ORU^R01 in original mode (the sender expects AA/AE/AR)."""
    return (
        "MSH|^~\\&|MONITOR|WARD3|||20261125083000||ORU^R01^ORU_R01|"
        f"{control_id}|P|2.6\r"
        f"PID|||{patient}^^^GH^MR||TEST^PATIENT\r"
        f"OBR|1|{control_id}|{control_id}|182777000^monitoring of patient^SCT\r"
        "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|262688^MDC_DIM_PERCENT^MDC"
        "|||||R\r"
    ).encode()


def msh(payload: bytes, n: int) -> str:
    """MSH-n read naively (the test's own oracle, not the engine's parser)."""
    fields = re.split(rb"\r\n|\r|\n", payload, maxsplit=1)[0].split(b"|")
    return fields[n - 1].decode() if len(fields) >= n else ""


def patient_of(payload: bytes) -> str:
    for line in re.split(rb"\r\n|\r|\n", payload):
        if line.startswith(b"PID|"):
            return line.split(b"|")[3].split(b"^")[0].decode()
    return ""


def ack(payload: bytes, code: str) -> bytes:
    """The EHR's answer to one message: MSA-1 `code`, MSA-2 its MSH-10."""
    cid = msh(payload, 10)
    err = "\rERR|||207^Application internal error^HL70357|E" if code != "AA" else ""
    return (f"MSH|^~\\&|EHR|HOSP|MONITOR|WARD3|20261125083001||ACK^R01^ACK|A-{cid}|P|2.6\r"
            f"MSA|{code}|{cid}{err}\r").encode()


# -- the engine's configuration ----------------------------------------------------------------


def write_channel(directory: Path, name: str, source_port: int, dest_port: int, *,
                  to: dict[str, Any] | None = None, destination: dict[str, Any] | None = None,
                  **channel: Any) -> Path:
    """One channel file with one MLLP source and one MLLP destination."""
    target = {"type": "mllp", "host": "127.0.0.1", "port": dest_port,
              "ack_timeout_seconds": 5, "connect_timeout_seconds": 1,
              "reconnect_max_seconds": 1, **(to or {})}
    dest = {"name": "ehr", "to": target,
            "retry": {"initial_seconds": 0.2, "max_seconds": 1, "jitter": 0,
                      "max_attempts": None},
            **(destination or {})}
    return write_mllp_channel(directory, name, source_port, [dest], **{
        "filter": "MSH-9.1 == ORU", "transformer": [{"set": "MSH-5", "value": "EHR"}],
        **channel})


# -- talking to the engine -------------------------------------------------------------------


def send_all(port: int, conversations: list[list[bytes]]) -> dict[str, str]:
    """Each list on its own connection, one message at a time; MSH-10 → MSA-1."""

    def converse(messages: list[bytes]) -> list[tuple[str, str]]:
        answers = []
        with socket.create_connection(("127.0.0.1", port)) as sock:
            for payload in messages:
                answer = send_and_receive(sock, payload, timeout=DEADLINE)
                fields = msa(answer)
                assert fields and fields[2].decode() == msh(payload, 10), answer
                answers.append((msh(payload, 10), fields[1].decode()))
        return answers

    with ThreadPoolExecutor(max_workers=max(1, len(conversations))) as pool:
        results = list(pool.map(converse, conversations))
    return {cid: code for answers in results for cid, code in answers}


def admin(engine: EngineProcess, method: str, path: str, body: Any = None) -> Any:
    status, answer = engine.api(method, path, body, timeout=DEADLINE)
    assert 200 <= status < 300, (status, answer)
    return answer


def destination_counters(engine: EngineProcess, channel: str, name: str = "ehr"
                         ) -> dict[str, Any]:
    for ch in admin(engine, "GET", "channels")["channels"]:
        if ch["name"] == channel:
            for dest in ch["destinations"]:
                if dest["name"] == name:
                    return dest
    raise AssertionError(f"{channel}/{name} not in the admin API's channel list")


def listed(engine: EngineProcess, *args: str) -> list[dict[str, Any]]:
    result = engine.run_cli("messages", "list", "--format", "jsonl", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def statuses(store: Store, channel: str) -> dict[str, str]:
    """MSH-10 → message status for one channel."""
    return {m["control_id"]: m["status"] for m in store.list_messages(channel=channel)}


def all_in(store: Store, channel: str, status: str, count: int) -> bool:
    found = statuses(store, channel)
    return len(found) == count and set(found.values()) == {status}


def deliveries_by_control_id(store: Store, control_id: str) -> list[dict[str, Any]]:
    rows = store.list_messages(control_id=control_id)
    assert len(rows) == 1, rows
    return store.deliveries_of(rows[0]["id"])


# -- peers standing in for the EHR ---------------------------------------------------------


def frames_in(data: bytes) -> list[bytes]:
    """The payloads of a byte stream of MLLP frames (complete frames only)."""
    out = []
    for chunk in data.split(EB + b"\r")[:-1]:
        start = chunk.find(SB)
        if start >= 0:
            out.append(chunk[start + 1:])
    return out


@dataclass
class Sink:
    """`mllp_sink.py --store FILE`: ACKs everything and appends each message to the file."""

    port: int
    store: Path
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Sink:
        self.proc = subprocess.Popen(
            [sys.executable, str(TOOLS / "mllp_sink.py"), "--port", str(self.port),
             "--store", str(self.store), "--max-seconds", "600"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        wait_for_port(self.port, self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)

    def received(self) -> list[bytes]:
        return frames_in(self.store.read_bytes()) if self.store.exists() else []

    def control_ids(self) -> list[str]:
        return [msh(p, 10) for p in self.received()]


@contextmanager
def sink_on(port: int, store: Path) -> Iterator[Sink]:
    sink = Sink(port, store).start()
    try:
        yield sink
    finally:
        sink.stop()


Answer = Callable[[bytes, int], "str | None"]
"""What a Peer does with the n-th arrival (1-based) of a message: an MSA-1 code to answer,
None to stay silent, or "close-mid-ack" to write half an ACK and close."""


@dataclass
class Peer:
    """A plain-socket EHR for the cases mllp_sink.py cannot play: it records every frame
    (in arrival order) and answers as `answer` says, after `delay` seconds or once `gate`
    is set."""

    answer: Answer
    port: int = field(default_factory=free_port)
    delay: float = 0.0
    gate: threading.Event | None = None
    received: list[bytes] = field(default_factory=list)
    answered_at: dict[str, float] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _stop: threading.Event = field(default_factory=threading.Event)
    _sockets: list[socket.socket] = field(default_factory=list)

    def start(self) -> Peer:
        listener = socket.create_server(("127.0.0.1", self.port))
        listener.settimeout(0.2)
        self._sockets.append(listener)
        threading.Thread(target=self._accept, args=(listener,), daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self.gate is not None:
            self.gate.set()
        for sock in self._sockets:
            with closing(sock), suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def control_ids(self) -> list[str]:
        with self._lock:
            return [msh(p, 10) for p in self.received]

    def _accept(self, listener: socket.socket) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._sockets.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with closing(conn):
            for payload in frames_from(conn, self._stop.is_set):
                with self._lock:
                    self.received.append(payload)
                    cid = msh(payload, 10)
                    nth = sum(1 for p in self.received if msh(p, 10) == cid)
                code = self.answer(payload, nth)
                if self.gate is not None:
                    self.gate.wait(DEADLINE)
                if self.delay:
                    time.sleep(self.delay)
                if code is None:
                    continue
                try:
                    if code == "close-mid-ack":
                        conn.sendall(SB + ack(payload, "AA")[:20])
                        conn.shutdown(socket.SHUT_RDWR)
                        return
                    conn.sendall(SB + ack(payload, code) + EB + b"\r")
                    self.answered_at[cid] = time.monotonic()
                except OSError:
                    return


@contextmanager
def peer(answer: Answer, **kwargs: Any) -> Iterator[Peer]:
    p = Peer(answer, **kwargs).start()
    try:
        yield p
    finally:
        p.stop()


def always(code: str | None) -> Answer:
    return lambda payload, nth: code


def in_order(received: list[str], expected: list[str]) -> None:
    """`received` is `expected` exactly: same messages, same order, none twice."""
    assert len(received) == len(set(received)), "a message reached the EHR twice"
    missing = set(expected) - set(received)
    assert not missing, f"{len(missing)} messages never reached the EHR: {sorted(missing)[:5]}"
    assert received == expected


# -- 1. an EHR that is down ------------------------------------------------------------------


def test_ehr_down_queues_then_delivers_every_lane_in_order(tmp_path: Path) -> None:
    """200 messages for 8 patients from 4 connections while the EHR is down: they wait
    QUEUED (visible in the admin API and `messages list`); once the EHR listens each one
    arrives exactly once, every patient's messages in the order they were sent."""
    source, ehr = free_port(), free_port()
    channels = tmp_path / "channels"
    write_channel(channels, "pumps", source, ehr, destination={"lanes": "PID-3.1"})
    patients = [f"MRN-{i:03d}" for i in range(8)]
    # A patient's messages all go over one connection, each after the previous one's ACK:
    # the order of each lane is known here without asking the engine.
    sent = {p: [f"{p}-{n:03d}" for n in range(25)] for p in patients}
    conversations: list[list[bytes]] = [[] for _ in range(4)]
    for n in range(25):
        for i, p in enumerate(patients):
            conversations[i % 4].append(oru(sent[p][n], p))

    engine = start_with_channels(tmp_path / "data", channels, [source])
    with running(engine), store_of(engine) as store:
        answers = send_all(source, conversations)
        assert set(answers.values()) == {"AA"} and len(answers) == 200

        wait_until(lambda: destination_counters(engine, "pumps")["queued"] == 200,
                   "the admin API shows the 200 messages queued")
        queued = listed(engine, "--status", "QUEUED", "--channel", "pumps")
        assert len(queued) == 200
        head = wait_until(lambda: [r for r in deliveries_by_control_id(store, sent["MRN-003"][0])
                                   if r["attempts"] >= 1],
                          "a lane's head is tried while the EHR is down")[0]
        assert head["status"] == "QUEUED" and "not connected" in head["last_error"], head

        with sink_on(ehr, tmp_path / "ehr.hl7") as sink:
            wait_until(lambda: all_in(store, "pumps", "SENT", 200), "all 200 end SENT")
            received = sink.control_ids()
            payloads = sink.received()
        assert destination_counters(engine, "pumps")["queued"] == 0
        assert listed(engine, "--status", "QUEUED") == []

    assert len(received) == len(set(received)) == 200
    for p in patients:
        in_order([cid for cid in received if cid.startswith(p)], sent[p])
    for payload in payloads:
        assert msh(payload, 5) == "EHR", "the channel's transformer ran"
        assert patient_of(payload) in patients


@pytest.mark.parametrize("workers", ["1", "0"])
def test_ehr_down_queues_then_delivers_in_arrival_order_without_lanes(tmp_path: Path,
                                                                      workers: str) -> None:
    """Without lanes one queue keeps the order of arrival across all connections: the EHR
    gets every message once, in the order the store accepted them — whether a pipeline
    worker or the engine process itself decides the messages."""
    source, ehr = free_port(), free_port()
    channels = tmp_path / "channels"
    write_channel(channels, "vitals", source, ehr)
    conversations = [[oru(f"C{c}-{n:03d}", f"MRN-{n % 5}") for n in range(40)]
                     for c in range(3)]

    engine = start_with_channels(tmp_path / "data", channels, [source],
                                 extra_env={"INTERLINK_PIPELINE_WORKERS": workers})
    with running(engine), store_of(engine) as store:
        answers = send_all(source, conversations)
        assert set(answers.values()) == {"AA"} and len(answers) == 120
        wait_until(lambda: destination_counters(engine, "vitals")["queued"] == 120,
                   "the admin API shows the 120 messages queued")
        assert len(listed(engine, "--status", "QUEUED")) == 120
        accepted = [m["control_id"] for m in store.list_messages(channel="vitals")]

        with sink_on(ehr, tmp_path / "ehr.hl7") as sink:
            wait_until(lambda: all_in(store, "vitals", "SENT", 120), "all 120 end SENT")
            received = sink.control_ids()

    in_order(received, accepted)
    for c in range(3):  # and each connection's own order, known without the store
        in_order([cid for cid in received if cid.startswith(f"C{c}-")],
                 [f"C{c}-{n:03d}" for n in range(40)])


# -- 2. an EHR that answers badly ------------------------------------------------------------


@dataclass
class Ehrs:
    """One engine with a channel per kind of EHR behaviour, each with its own peer."""

    engine: EngineProcess
    store: Store
    sources: dict[str, int]
    peers: dict[str, Peer]


BEHAVIOURS: dict[str, tuple[Answer, dict[str, Any], dict[str, Any]]] = {
    # channel: (how the peer answers, `to:` settings, destination settings)
    "ae-retry": (always("AE"), {"on_ae": "retry"},
                 {"retry": {"initial_seconds": 0.1, "max_seconds": 0.2, "jitter": 0,
                            "max_attempts": 3}}),
    "ae-fail": (always("AE"), {"on_ae": "fail"}, {}),
    "ar": (always("AR"), {"on_ae": "retry", "on_ar": "fail"}, {}),
    # Reconnecting after a dropped connection takes 1-2 s (backoff with jitter): a
    # longer connect timeout lets every attempt reach the peer.
    "silent": (always(None), {"ack_timeout_seconds": 0.5, "connect_timeout_seconds": 5},
               {"retry": {"initial_seconds": 0.1, "max_seconds": 0.2, "jitter": 0,
                          "max_attempts": 3}}),
    # Closes mid-ACK twice, then behaves.
    "closes-mid-ack": (lambda payload, nth: "close-mid-ack" if msh(payload, 10) == "HALF-1"
                       and nth <= 2 else "AA",
                       {"connect_timeout_seconds": 5}, {}),
}


@pytest.fixture(scope="module")
def ehrs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Ehrs]:
    tmp = tmp_path_factory.mktemp("ehrs")
    peers = {name: Peer(answer).start() for name, (answer, _, _) in BEHAVIOURS.items()}
    sources = {name: free_port() for name in BEHAVIOURS}
    for name, (_, to, destination) in BEHAVIOURS.items():
        write_channel(tmp / "channels", name, sources[name], peers[name].port, to=to,
                      destination=destination)
    engine = start_with_channels(tmp / "data", tmp / "channels", list(sources.values()))
    try:
        with running(engine), store_of(engine) as store:
            yield Ehrs(engine, store, sources, peers)
    finally:
        for p in peers.values():
            p.stop()


def delivered_once_and_settled(ehrs: Ehrs, channel: str, control_id: str, status: str
                               ) -> dict[str, Any]:
    """Send one message to a channel, wait for its delivery row to reach `status`."""
    assert send_all(ehrs.sources[channel], [[oru(control_id, "MRN-1")]]) == {control_id: "AA"}

    def settled() -> dict[str, Any] | None:
        rows = deliveries_by_control_id(ehrs.store, control_id)
        return rows[0] if rows and rows[0]["status"] == status else None

    row = wait_until(settled, f"{channel}: {control_id} ends {status}")
    assert [m["status"] for m in ehrs.store.list_messages(control_id=control_id)] == [status]
    return row


def test_ae_with_on_ae_retry_is_retried_then_dead_lettered(ehrs: Ehrs) -> None:
    row = delivered_once_and_settled(ehrs, "ae-retry", "AE-RETRY-1", "ERROR")
    assert row["attempts"] == 3 and row["last_error"] == "AE (ERR 207)", row
    assert ehrs.peers["ae-retry"].control_ids() == ["AE-RETRY-1"] * 3
    listed_errors = listed(ehrs.engine, "--status", "ERROR", "--channel", "ae-retry")
    assert [m["control_id"] for m in listed_errors] == ["AE-RETRY-1"]
    actions = [e["action"] for e in ehrs.store.audit_trail(row["message_id"])]
    assert actions.count("delivery.queued") == 2 and actions[-2:] == [
        "delivery.error", "message.status"], actions
    assert destination_counters(ehrs.engine, "ae-retry")["dead_lettered"] == 1


def test_ae_with_on_ae_fail_is_dead_lettered_at_once(ehrs: Ehrs) -> None:
    row = delivered_once_and_settled(ehrs, "ae-fail", "AE-FAIL-1", "ERROR")
    assert row["attempts"] == 1 and row["last_error"] == "AE (ERR 207)", row
    assert ehrs.peers["ae-fail"].control_ids() == ["AE-FAIL-1"]


def test_ar_is_dead_lettered_without_retry(ehrs: Ehrs) -> None:
    row = delivered_once_and_settled(ehrs, "ar", "AR-1", "ERROR")
    assert row["attempts"] == 1 and row["last_error"] == "AR (ERR 207)", row
    assert ehrs.peers["ar"].control_ids() == ["AR-1"]


def test_ehr_that_never_answers_times_out_retries_then_dead_letters(ehrs: Ehrs) -> None:
    row = delivered_once_and_settled(ehrs, "silent", "SILENT-1", "ERROR")
    assert row["attempts"] == 3 and row["last_error"] == "ACK timeout after 0.5s", row
    assert ehrs.peers["silent"].control_ids() == ["SILENT-1"] * 3


def test_ehr_that_closes_mid_ack_is_retried_until_it_behaves(ehrs: Ehrs) -> None:
    row = delivered_once_and_settled(ehrs, "closes-mid-ack", "HALF-1", "SENT")
    assert row["attempts"] == 3 and row["last_error"] is None, row
    trail = [json.loads(e["detail"]) for e in ehrs.store.audit_trail(row["message_id"])
             if e["action"] == "delivery.queued"]
    assert [t["attempt"] for t in trail] == [1, 2]
    assert all("connection closed before ACK" in t["detail"] for t in trail), trail
    # Re-sends carry the same MSH-10 and the same bytes; the next message goes through once.
    peer_ = ehrs.peers["closes-mid-ack"]
    assert peer_.control_ids() == ["HALF-1"] * 3
    assert len(set(peer_.received)) == 1
    delivered_once_and_settled(ehrs, "closes-mid-ack", "HALF-2", "SENT")
    assert peer_.control_ids() == ["HALF-1"] * 3 + ["HALF-2"]


# -- hold and skip after retries are exhausted -----------------------------------------------


def refuse_first(control_id: str) -> Answer:
    """AR the first arrival of one message, AA everything else."""
    return lambda payload, nth: "AR" if msh(payload, 10) == control_id and nth == 1 else "AA"


def test_hold_stops_the_lane_until_reprocess_then_delivers_in_order(tmp_path: Path) -> None:
    """The EHR refuses A-2 once: A-3 and A-4 wait behind it (lane held) while patient B's
    messages go through; reprocessing A-2 through the admin API delivers A-2, A-3, A-4."""
    source = free_port()
    with peer(refuse_first("A-2")) as ehr:
        write_channel(tmp_path / "channels", "held", source, ehr.port,
                      destination={"lanes": "PID-3.1", "on_exhausted": "hold"})
        engine = start_with_channels(tmp_path / "data", tmp_path / "channels", [source])
        with running(engine), store_of(engine) as store:
            lane_a = [f"A-{n}" for n in range(1, 5)]
            send_all(source, [[oru(cid, "MRN-A") for cid in lane_a]])
            wait_until(lambda: statuses(store, "held").get("A-2") == "ERROR", "A-2 ERROR")
            send_all(source, [[oru(f"B-{n}", "MRN-B") for n in range(1, 4)]])
            wait_until(lambda: [statuses(store, "held").get(f"B-{n}") for n in (1, 2, 3)]
                       == ["SENT"] * 3, "patient B's messages are delivered")

            state = statuses(store, "held")
            assert [state[c] for c in lane_a] == ["SENT", "ERROR", "QUEUED", "QUEUED"]
            assert [m["control_id"] for m in listed(engine, "--status", "QUEUED")] == [
                "A-3", "A-4"]
            assert destination_counters(engine, "held")["queued"] == 2
            held = deliveries_by_control_id(store, "A-2")[0]
            assert held["held"] == 1 and held["last_error"] == "AR (ERR 207)"
            assert [c for c in ehr.control_ids() if c.startswith("A-")] == ["A-1", "A-2"]

            a2 = store.list_messages(control_id="A-2")[0]["id"]
            assert admin(engine, "POST", "messages/reprocess", {"ids": [a2]}) == {
                "requeued": [a2], "rerouted": [], "unchanged": []}
            wait_until(lambda: all_in(store, "held", "SENT", 7), "everything ends SENT")
            assert deliveries_by_control_id(store, "A-2")[0]["held"] == 0
            actions = [e["action"] for e in store.audit_trail(a2)]
            assert "message.reprocess" in actions

    assert [c for c in ehr.control_ids() if c.startswith("A-")] == [
        "A-1", "A-2", "A-2", "A-3", "A-4"]


def test_skip_lets_later_messages_of_the_lane_through(tmp_path: Path) -> None:
    source = free_port()
    with peer(refuse_first("A-2")) as ehr:
        write_channel(tmp_path / "channels", "skipping", source, ehr.port,
                      destination={"lanes": "PID-3.1", "on_exhausted": "skip"})
        engine = start_with_channels(tmp_path / "data", tmp_path / "channels", [source])
        with running(engine), store_of(engine) as store:
            lane_a = [f"A-{n}" for n in range(1, 5)]
            send_all(source, [[oru(cid, "MRN-A") for cid in lane_a]])
            wait_until(lambda: [statuses(store, "skipping").get(c) for c in lane_a]
                       == ["SENT", "ERROR", "SENT", "SENT"], "A-2 ERROR, the others SENT")
            assert deliveries_by_control_id(store, "A-2")[0]["held"] == 0
    assert ehr.control_ids() == lane_a


# -- 3. response: after_delivery -------------------------------------------------------------


def test_after_delivery_acks_the_sender_only_after_the_ehr_acked(tmp_path: Path) -> None:
    source = free_port()
    gate = threading.Event()
    with peer(always("AA"), gate=gate) as ehr:
        write_channel(tmp_path / "channels", "confirmed", source, ehr.port,
                      response={"mode": "after_delivery", "timeout_seconds": 30})
        engine = start_with_channels(tmp_path / "data", tmp_path / "channels", [source])
        with running(engine), socket.create_connection(("127.0.0.1", source)) as sock:
            sock.sendall(SB + oru("CONF-1", "MRN-1") + EB + b"\r")
            wait_until(lambda: ehr.control_ids() == ["CONF-1"], "the EHR has the message")
            readable, _, _ = select.select([sock], [], [], 1.0)
            assert not readable, "the sender was answered before the EHR acknowledged"
            gate.set()
            answer = b""
            sock.settimeout(DEADLINE)
            while EB + b"\r" not in answer:
                answer += sock.recv(65536)
            answered = time.monotonic()
    assert msa(answer)[1:3] == [b"AA", b"CONF-1"]
    assert ehr.answered_at["CONF-1"] <= answered


def test_after_delivery_answers_ae_when_the_ehr_is_down_or_refuses(tmp_path: Path) -> None:
    down, refusing = free_port(), free_port()
    with peer(always("AR")) as ehr:
        opts = {"response": {"mode": "after_delivery", "timeout_seconds": 1}}
        write_channel(tmp_path / "channels", "down", down, free_port(), **opts)
        write_channel(tmp_path / "channels", "refusing", refusing, ehr.port, **opts)
        engine = start_with_channels(tmp_path / "data", tmp_path / "channels",
                                     [down, refusing])
        with running(engine), store_of(engine) as store:
            assert send_all(down, [[oru("DOWN-1", "MRN-1")]]) == {"DOWN-1": "AE"}
            assert send_all(refusing, [[oru("REF-1", "MRN-1")]]) == {"REF-1": "AE"}
            # Stored all the same: the first keeps trying, the second is dead-lettered.
            assert statuses(store, "down") == {"DOWN-1": "QUEUED"}
            assert statuses(store, "refusing") == {"REF-1": "ERROR"}
            # The store knows the senders heard AE, so a resend is a new message, routed
            # (and answered) again, not a duplicate answered AA without delivery.
            assert send_all(refusing, [[oru("REF-1", "MRN-1")]]) == {"REF-1": "AE"}
            assert send_all(down, [[oru("DOWN-1", "MRN-1")]]) == {"DOWN-1": "AE"}
            for channel, control_id in (("refusing", "REF-1"), ("down", "DOWN-1")):
                rows = store.list_messages(channel=channel)
                assert [(r["control_id"], r["ack_code"], r["duplicate_of"]) for r in rows] == [
                    (control_id, "AE", None), (control_id, "AE", None)]
                answered = [e for e in store.audit_trail(rows[0]["id"])
                            if e["action"] == "message.answered"]
                assert [json.loads(e["detail"]) for e in answered] == [
                    {"ack": "AE", "reason": "not delivered"}]
            assert store.verify_audit()[1] is None


# -- 4. SIGKILL while delivering ------------------------------------------------------------


def test_sigkill_mid_delivery_then_restart_delivers_everything_at_least_once(tmp_path: Path
                                                                            ) -> None:
    """The engine dies with an ACK outstanding and most of the queue undelivered; after a
    restart every message reaches the EHR, re-sends identical to the first copy (same
    MSH-10), and each patient's messages arrive first in the order they were sent."""
    source = free_port()
    patients = [f"MRN-{i}" for i in range(4)]
    sent = {p: [f"K{p[-1]}-{n:03d}" for n in range(60)] for p in patients}
    stalled: set[str] = set()

    def slow_then_stall(payload: bytes, nth: int) -> str | None:
        # The 40th distinct message is never answered the first time: the engine is
        # killed while it waits for that ACK, so a re-send is certain.
        cid = msh(payload, 10)
        if nth == 1 and len({msh(p, 10) for p in ehr.received}) == 40 and not stalled:
            stalled.add(cid)
            return None
        return "AA"

    with peer(slow_then_stall, delay=0.005) as ehr:
        write_channel(tmp_path / "channels", "pumps", source, ehr.port,
                      to={"ack_timeout_seconds": 30}, destination={"lanes": "PID-3.1"})
        data = tmp_path / "data"
        engine = start_with_channels(data, tmp_path / "channels", [source])
        try:
            conversations = [[oru(sent[p][n], p) for n in range(60)] for p in patients]
            assert set(send_all(source, conversations).values()) == {"AA"}
            wait_until(lambda: stalled, "the EHR holds an ACK back")
        finally:
            engine.stop(signal.SIGKILL)
        with closing(open_store(sqlite_url(data))) as store:
            before = statuses(store, "pumps")
        assert len(before) == 240 and list(before.values()).count("SENT") < 240
        assert before[next(iter(stalled))] == "QUEUED"

        engine = start_with_channels(data, tmp_path / "channels", [source])
        with running(engine), store_of(engine) as store:
            wait_until(lambda: all_in(store, "pumps", "SENT", 240), "all 240 end SENT")
        received = list(ehr.received)

    by_id: dict[str, set[bytes]] = {}
    for payload in received:
        by_id.setdefault(msh(payload, 10), set()).add(payload)
    everything = {cid for cids in sent.values() for cid in cids}
    assert set(by_id) == everything, "every message reaches the EHR at least once"
    assert all(len(copies) == 1 for copies in by_id.values()), "a re-send differs"
    ids = [msh(p, 10) for p in received]
    assert ids.count(next(iter(stalled))) == 2, "the unanswered message is sent again"
    for p in patients:
        first_seen = list(dict.fromkeys(c for c in ids if c.startswith(f"K{p[-1]}-")))
        assert first_seen == sent[p]
