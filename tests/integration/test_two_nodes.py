"""Two engine processes on one PostgreSQL store, delivering to one EHR.

Each node has its own data directory, MLLP and admin ports and its own copy of the channel
file (only the channel's source port differs). Messages for one patient are sent to the
two nodes in turn, each after the previous one's ACK, so the order in which they were
accepted is known here; the EHR (`../shared/tools/mllp_sink.py`, writing what it gets to
a file) must get every message once, and each patient's messages in that order.
"""

from __future__ import annotations

import socket
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from pathlib import Path

import pytest

from tests.integration.test_delivery import DEADLINE, all_in, in_order, oru, sink_on, write_channel
from tests.support import (
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
