"""Two engine processes on one PostgreSQL store, delivering to one EHR.

Each node has its own data directory, MLLP and admin ports and its own copy of the channel
file (only the channel's source port differs). Messages for one patient are sent to the
two nodes in turn, each after the previous one's ACK, so the order in which they were
accepted is known here; the EHR (`../shared/tools/mllp_sink.py`, writing what it gets to
a file) must get every message once, and each patient's messages in that order.
"""

from __future__ import annotations

import signal
import socket
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest

from engine.store.store import Store, now_us
from tests.integration.test_delivery import (
    DEADLINE,
    Peer,
    all_in,
    always,
    in_order,
    oru,
    patient_of,
    peer,
    send_all,
    sink_on,
    write_channel,
)
from tests.support import (
    EngineProcess,
    free_port,
    msa,
    running,
    send_and_receive,
    start_with_channels,
    store_of,
    wait_until,
)

pytestmark = pytest.mark.integration

PATIENTS = [f"MRN-{i}" for i in range(6)]
PER_PATIENT = 30


def alternate(ports: list[int], patient: str) -> list[str]:
    """Send one patient's messages to the nodes in turn, each after the previous ACK."""
    sent = []
    socks = [socket.create_connection(("127.0.0.1", port)) for port in ports]
    try:
        for n in range(PER_PATIENT):
            cid = f"{patient}-{n:03d}"
            answer = send_and_receive(socks[n % len(socks)], oru(cid, patient),
                                      timeout=DEADLINE)
            assert msa(answer)[1:3] == [b"AA", cid.encode()], answer
            sent.append(cid)
    finally:
        for s in socks:
            s.close()
    return sent


def test_two_nodes_deliver_every_message_once_and_each_lane_in_order(
        tmp_path: Path, postgres_url: str) -> None:
    ehr = free_port()
    sources = {"a": free_port(), "b": free_port()}
    with ExitStack() as stack:
        sink = stack.enter_context(sink_on(ehr, tmp_path / "ehr.hl7"))
        for node, port in sources.items():
            write_channel(tmp_path / f"channels-{node}", "pumps", port, ehr,
                          destination={"lanes": "PID-3.1"})
        engines = [
            stack.enter_context(running(start_with_channels(
                tmp_path / f"data-{node}", tmp_path / f"channels-{node}", [port],
                extra_env={"INTERLINK_STORE_URL": postgres_url,
                           "INTERLINK_NODE_ID": node})))
            for node, port in sources.items()]
        assert len(engines) == 2

        with ThreadPoolExecutor(max_workers=len(PATIENTS)) as pool:
            sent = dict(zip(PATIENTS, pool.map(
                lambda p: alternate(list(sources.values()), p), PATIENTS), strict=True))

        store = stack.enter_context(store_of(engines[0], postgres_url))
        total = len(PATIENTS) * PER_PATIENT
        wait_until(lambda: all_in(store, "pumps", "SENT", total),
                   f"all {total} messages end SENT")
        received = sink.control_ids()

    assert len(received) == total
    for patient in PATIENTS:
        in_order([cid for cid in received if cid.startswith(patient + "-")], sent[patient])


def lease_of(store: Store, lane: str) -> tuple[str, int] | None:
    """(node, expires_at) of a lane's lease on the `pumps/ehr` queue, or None."""
    with store.engine.connect() as conn:
        row = conn.exec_driver_sql(
            "SELECT node, expires_at FROM lane_leases WHERE destination = 'pumps/ehr' "
            "AND lane_key = %s", (lane,)).first()
    return None if row is None else (row[0], row[1])


def statuses_of(store: Store, prefix: str) -> list[str]:
    return [m["status"] for m in store.list_messages(channel="pumps")
            if m["control_id"].startswith(prefix)]


def test_a_node_reads_past_a_lane_another_holds_and_takes_a_drained_lane_at_once(
        tmp_path: Path, postgres_url: str) -> None:
    """Node a delivers patient P, and once P has drained its lease is gone. Then a holds
    patient BIG with more rows than one read (the EHR never answers BIG) and dies, its
    lease of BIG still running. Node b, started after, delivers P's next messages and
    patient Q's, queued behind BIG's rows, before that lease runs out: its reads go on
    past BIG's rows, and P was handed over without waiting for an expiry."""
    ehr_port = free_port()
    sources = {"a": free_port(), "b": free_port()}
    big = [f"BIG-{n:04d}" for n in range(1050)]
    with ExitStack() as stack:
        ehr = stack.enter_context(peer(
            lambda payload, nth: None if patient_of(payload) == "BIG" else "AA",
            port=ehr_port))
        for node, port in sources.items():
            write_channel(tmp_path / f"channels-{node}", "pumps", port, ehr_port,
                          destination={"lanes": "PID-3.1"})
        env = {"INTERLINK_STORE_URL": postgres_url}

        node_a = start_with_channels(tmp_path / "data-a", tmp_path / "channels-a",
                                     [sources["a"]], {**env, "INTERLINK_NODE_ID": "a"})
        stack.callback(node_a.stop, signal.SIGKILL)
        store = stack.enter_context(store_of(node_a, postgres_url))
        first = [f"P-{n:03d}" for n in range(5)]
        answers = send_all(sources["a"], [[oru(cid, "P") for cid in first]])
        assert set(answers.values()) == {"AA"}
        wait_until(lambda: statuses_of(store, "P-") == ["SENT"] * 5, "P's messages SENT")
        wait_until(lambda: lease_of(store, "P") is None, "a released the drained lane P")

        answers = send_all(sources["a"], [[oru(cid, "BIG") for cid in big[i::4]]
                                          for i in range(4)])
        assert set(answers.values()) == {"AA"}
        wait_until(lambda: statuses_of(store, "BIG-") == ["QUEUED"] * len(big),
                   "BIG's messages routed")
        wait_until(lambda: any(cid.startswith("BIG-") for cid in ehr.control_ids()),
                   "a sending BIG's first message")
        node_a.stop(signal.SIGKILL)
        held = lease_of(store, "BIG")
        assert held is not None and held[0] == "a"

        node_b = stack.enter_context(running(start_with_channels(
            tmp_path / "data-b", tmp_path / "channels-b", [sources["b"]],
            {**env, "INTERLINK_NODE_ID": "b"})))
        assert node_b.proc.poll() is None
        later = [f"P-{n:03d}" for n in range(5, 10)]
        others = [f"Q-{n:03d}" for n in range(10)]
        answers = send_all(sources["b"], [[oru(cid, "P") for cid in later],
                                          [oru(cid, "Q") for cid in others]])
        assert set(answers.values()) == {"AA"}
        wait_until(lambda: statuses_of(store, "P-") + statuses_of(store, "Q-")
                   == ["SENT"] * 20, "P's and Q's messages SENT")
        assert lease_of(store, "BIG") == held, "b waited for a's lease of BIG to run out"
        assert held[1] > now_us()
        received = ehr.control_ids()

    in_order([cid for cid in received if cid.startswith("P-")], first + later)
    in_order([cid for cid in received if cid.startswith("Q-")], others)


def gated_pair(stack: ExitStack, tmp_path: Path, postgres_url: str, **channel: Any
               ) -> tuple[dict[str, int], threading.Event, Peer, EngineProcess, Store]:
    """Nodes a and b running channel `pumps` (lanes by patient) to an EHR that answers
    AA once `gate` is set: their source ports, the gate, the EHR, node a and the store."""
    ehr_port = free_port()
    sources = {"a": free_port(), "b": free_port()}
    gate = threading.Event()
    ehr = stack.enter_context(peer(always("AA"), port=ehr_port, gate=gate))
    stack.callback(gate.set)
    for node, port in sources.items():
        write_channel(tmp_path / f"channels-{node}", "pumps", port, ehr_port,
                      destination={"lanes": "PID-3.1"}, **channel)
    node_a, _ = (
        stack.enter_context(running(start_with_channels(
            tmp_path / f"data-{node}", tmp_path / f"channels-{node}", [port],
            extra_env={"INTERLINK_STORE_URL": postgres_url, "INTERLINK_NODE_ID": node})))
        for node, port in sources.items())
    store = stack.enter_context(store_of(node_a, postgres_url))
    return sources, gate, ehr, node_a, store


def test_a_paused_node_hands_its_lanes_to_the_other(tmp_path: Path, postgres_url: str) -> None:
    """Node a is sending patient P when its channel is paused: the send in flight
    finishes, a lets the lane go, and node b delivers the rest of P's messages (a's and
    its own) in order while a stays paused."""
    with ExitStack() as stack:
        sources, gate, ehr, node_a, store = gated_pair(stack, tmp_path, postgres_url)

        at_a = [f"P-{n:03d}" for n in range(5)]
        assert set(send_all(sources["a"], [[oru(cid, "P") for cid in at_a]]).values()) == {
            "AA"}
        wait_until(lambda: ehr.control_ids() == ["P-000"], "a sending P's first message")
        assert node_a.run_cli("channels", "pause", "pumps").returncode == 0
        at_b = [f"P-{n:03d}" for n in range(5, 10)]
        others = [f"Q-{n:03d}" for n in range(5)]
        answers = send_all(sources["b"], [[oru(cid, "P") for cid in at_b],
                                          [oru(cid, "Q") for cid in others]])
        assert set(answers.values()) == {"AA"}
        gate.set()
        wait_until(lambda: statuses_of(store, "P-") + statuses_of(store, "Q-")
                   == ["SENT"] * 15, "P's and Q's messages SENT")
        assert (lease_of(store, "P") or ("b",))[0] == "b"
        received = ehr.control_ids()

    in_order([cid for cid in received if cid.startswith("P-")], at_a + at_b)
    in_order([cid for cid in received if cid.startswith("Q-")], others)


def test_an_after_delivery_sender_hears_aa_when_the_other_node_delivers(
        tmp_path: Path, postgres_url: str) -> None:
    """Node b holds patient P's lane (its send of P-000 waits at the EHR) when node a
    receives P-001 on an `after_delivery` channel, so b delivers it after P-000. a's own
    queues never hear of that delivery; a reads it from the store and its sender hears
    AA, not AE when the timeout passes."""
    with ExitStack() as stack:
        sources, gate, ehr, _, store = gated_pair(
            stack, tmp_path, postgres_url,
            response={"mode": "after_delivery", "timeout_seconds": 30})
        senders = stack.enter_context(ThreadPoolExecutor(3))

        def answer(node: str, control_id: str) -> str:
            with socket.create_connection(("127.0.0.1", sources[node])) as sock:
                reply = send_and_receive(sock, oru(control_id, "P"), timeout=DEADLINE)
            return msa(reply)[1].decode()

        first = senders.submit(answer, "b", "P-000")
        wait_until(lambda: ehr.control_ids() == ["P-000"], "b sending P's first message")
        at_a = senders.submit(answer, "a", "P-001")
        wait_until(lambda: statuses_of(store, "P-001") == ["QUEUED"], "a routed P-001")
        last = senders.submit(answer, "b", "P-002")
        wait_until(lambda: statuses_of(store, "P-002") == ["QUEUED"], "b routed P-002")
        assert (lease_of(store, "P") or ("none",))[0] == "b"
        gate.set()
        assert [f.result() for f in (first, at_a, last)] == ["AA", "AA", "AA"]
        assert statuses_of(store, "P-") == ["SENT"] * 3
        assert ehr.control_ids() == ["P-000", "P-001", "P-002"]
