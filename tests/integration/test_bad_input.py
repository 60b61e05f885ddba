"""Bad input gets a clear answer or a clean close, and the listener keeps serving."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import EngineProcess, frame, msa, send_and_receive, start_engine

pytestmark = pytest.mark.integration

GOOD = b"MSH|^~\\&|BAD|ICU|||20261125||ADT^A08^ADT_A01|OK-{n}|P|2.5\rEVN|A08\rPID|||1\rPV1||I\r"


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    data = tmp_path_factory.mktemp("bad-input")
    config = data / "interlink.yaml"
    config.write_text("mllp:\n  max_frame_bytes: 65536\n  idle_timeout_seconds: 3\n"
                      "  max_connections: 20\n")
    proc = start_engine(data, config=config)
    yield proc
    assert proc.stop() == 0, proc.log.read_text()


def good(n: int) -> bytes:
    return GOOD.replace(b"{n}", str(n).encode())


def read_until_closed(sock: socket.socket, timeout: float = 15.0) -> bytes:
    """Everything the engine writes until it closes (a reset counts as a close)."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while chunk := sock.recv(65536):
            buf += chunk
    except ConnectionResetError:
        pass
    return buf


def test_oversize_frame_is_refused_with_ar_and_closed(engine: EngineProcess) -> None:
    """A frame over the limit gets AR naming its MSH-10, then a close; others keep working."""
    other = socket.create_connection(("127.0.0.1", engine.port))
    assert msa(send_and_receive(other, good(0)))[1] == b"AA"
    big = b"MSH|^~\\&|BIG|ICU|||20261125||ORU^R01|HUGE-1|P|2.6\rOBX|1|ED|||" + b"A" * 100_000
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        sock.sendall(frame(big))
        answer = read_until_closed(sock)
    fields = msa(answer)
    assert fields[1] == b"AR" and fields[2] == b"HUGE-1"
    assert b"ERR" in answer
    assert msa(send_and_receive(other, good(1)))[1] == b"AA"
    other.close()


def test_junk_before_start_block_is_skipped(engine: EngineProcess) -> None:
    """Bytes before a start block are discarded; the frame after them is answered."""
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        sock.sendall(b"\r\n\r\nnoise noise\r\n")
        assert msa(send_and_receive(sock, good(2)))[1:3] == [b"AA", b"OK-2"]


def test_half_frame_then_stall_is_closed_by_idle_timeout(engine: EngineProcess) -> None:
    """A peer that sends half a frame and stalls is closed; the listener keeps serving."""
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        sock.sendall(b"\x0bMSH|^~\\&|HALF|ICU|||2026||ADT^A08|HALF-1|P|2.5\rPID")
        assert read_until_closed(sock) == b""
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        assert msa(send_and_receive(sock, good(3)))[1] == b"AA"
    result = engine.run_cli("messages", "list", "--control-id", "HALF-1", "--format", "jsonl")
    assert result.stdout.strip() == ""  # never completed, never acknowledged


def test_http_request_gets_a_plain_400(engine: EngineProcess) -> None:
    """An HTTP request on the MLLP port is told what the port speaks, then closed."""
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n")
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 400")
    assert b"MLLP" in answer


def test_unparseable_message_is_stored_and_answered_ar(engine: EngineProcess) -> None:
    """A frame that is not HL7 at all is answered AR with ERR and kept as received."""
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        answer = send_and_receive(sock, b"this is not hl7")
    assert msa(answer)[1] == b"AR"
    assert b"\rERR" in answer
    rows = [json.loads(x) for x in engine.run_cli(
        "messages", "list", "--status", "ERROR", "--format", "jsonl").stdout.splitlines()]
    assert any(r["ack_code"] == "AR" and r["control_id"] == "" for r in rows)


def test_connection_limit_refuses_extra_connections(engine: EngineProcess, tmp_path: Path
                                                    ) -> None:
    """Past max_connections a new connection is closed at once; freed slots serve again."""
    held = [socket.create_connection(("127.0.0.1", engine.port)) for _ in range(20)]
    try:
        for sock in held:  # make sure every held connection has been accepted
            assert msa(send_and_receive(sock, good(100 + held.index(sock))))[1] == b"AA"
        with socket.create_connection(("127.0.0.1", engine.port)) as extra:
            assert read_until_closed(extra) == b""
    finally:
        for sock in held:
            sock.close()
    for _attempt in range(50):  # the engine notices the closes asynchronously
        try:
            with socket.create_connection(("127.0.0.1", engine.port)) as sock:
                assert msa(send_and_receive(sock, good(200)))[1] == b"AA"
                return
        except ConnectionError:
            time.sleep(0.1)
    pytest.fail("no connection was served after the held ones closed")
