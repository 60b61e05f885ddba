"""`interlink run` as a real process, spoken to over real loopback sockets."""

from __future__ import annotations

import json
import re
import signal
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import (
    CORPUS,
    REPO,
    EngineProcess,
    corpus_files,
    first_line_fields,
    frame,
    msa,
    send_and_receive,
    start_engine,
)

pytestmark = pytest.mark.integration

BATCH_FILES = {"pythonhl7-batch-bhs-two-msgs-bts.hl7", "pythonhl7-file-fhs-two-batches-fts.hl7",
               "pythonhl7-batch-no-header-trailer.hl7"}


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    proc = start_engine(tmp_path_factory.mktemp("engine"))
    yield proc
    assert proc.stop() == 0, proc.log.read_text()


def stored(engine: EngineProcess, *args: str) -> list[dict[str, object]]:
    result = engine.run_cli("messages", "list", "--format", "jsonl", *args)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def control_ids_in(raw: bytes) -> list[bytes]:
    """MSH-10 of every MSH segment in a file (naively), the test's own oracle."""
    out = []
    for line in re.split(rb"\r\n|\r|\n", raw):
        if line.startswith(b"MSH"):
            fields = first_line_fields(line)
            out.append(fields[9] if len(fields) > 9 else b"")
    return out


@pytest.mark.parametrize("path", corpus_files(), ids=lambda p: f"{p.parent.name}/{p.name}")
def test_corpus_message_is_answered_and_stored(engine: EngineProcess, path: Path) -> None:
    """Each corpus file gets an answer per message whose MSA-2 is its MSH-10, then is stored."""
    raw = path.read_bytes()
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        answer = send_and_receive(sock, raw)
    answers = [line for line in re.split(rb"\r\n|\r|\n", answer) if line.startswith(b"MSA")]
    assert answers, answer
    expected_ids = control_ids_in(raw) or [b""]  # no MSH at all: nothing to salvage
    codes = [a.split(answer[3:4])[1] for a in answers]
    if path.name in BATCH_FILES:
        assert len(answers) == len(expected_ids)
    else:
        assert len(answers) == 1
        expected_ids = expected_ids[:1]
    for ack, control_id in zip(answers, expected_ids, strict=True):
        fields = ack.split(answer[3:4])
        assert fields[2] == control_id, (ack, control_id)
    assert all(code in {b"AA", b"AE", b"AR", b"CA", b"CE", b"CR"} for code in codes)
    if path.parent.name.startswith("pcd01"):
        assert set(codes) <= {b"AA", b"CA"}, answer
    for control_id in {c.decode("latin-1") for c in expected_ids if c}:
        assert stored(engine, "--control-id", control_id), control_id


def test_python_hl7_mllp_send_gets_positive_ack(engine: EngineProcess, tmp_path: Path) -> None:
    """python-hl7's own mllp_send client is answered CA (the file asks MSH-15 ER) with its id."""
    sample = CORPUS / "general" / "ipf-adt-a01-v25.hl7"
    result = subprocess.run(
        [str(REPO / ".venv" / "bin" / "mllp_send"), "--loose", "-p", str(engine.port),
         "-f", str(sample), "127.0.0.1"],
        capture_output=True, timeout=60, check=True)
    fields = msa(result.stdout.replace(b"\n", b"\r"))
    assert fields[1] == b"CA"
    assert fields[2] == first_line_fields(sample.read_bytes())[9]


def test_duplicate_is_acknowledged_and_marked(engine: EngineProcess) -> None:
    """The same message twice: both AA, the second stored as a duplicate of the first."""
    raw = b"MSH|^~\\&|DUPAPP|ICU|||20261125120000||ADT^A04^ADT_A01|DUP-1|P|2.5\rEVN|A04\r" \
          b"PID|||MRN-9^^^H^MR||DOE^JOHN\rPV1||I\r"
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        first = msa(send_and_receive(sock, raw))
        second = msa(send_and_receive(sock, raw))
    assert first[1] == second[1] == b"AA"
    rows = stored(engine, "--control-id", "DUP-1")
    assert [r["duplicate"] for r in rows] == [False, True]
    assert rows[1]["duplicate_of"] == rows[0]["id"]
    assert rows[1]["status"] == "FILTERED"


def test_pipelined_messages_are_acknowledged_in_order(engine: EngineProcess) -> None:
    """Fifty messages written at once on one connection come back acked in order."""
    ids = [f"PIPE-{n}" for n in range(50)]
    payload = b"".join(frame(
        f"MSH|^~\\&|PIPE|ICU|||20261125||ADT^A08^ADT_A01|{cid}|P|2.5\rEVN|A08\r"
        f"PID|||{cid}\rPV1||I\r".encode()) for cid in ids)
    with socket.create_connection(("127.0.0.1", engine.port)) as sock:
        sock.sendall(payload)
        sock.settimeout(10)
        buf = b""
        while buf.count(b"\x1c\r") < len(ids):
            chunk = sock.recv(65536)
            assert chunk, "closed early"
            buf += chunk
    answered = [msa(f)[2].decode() for f in buf.split(b"\x1c\r") if f.strip()]
    assert answered == ids


def test_messages_list_table_and_filters(engine: EngineProcess) -> None:
    """The table format prints a header and rows; --status narrows to that status."""
    result = engine.run_cli("messages", "list", "--status", "ERROR")
    assert result.returncode == 0
    header, *rows = result.stdout.splitlines()
    assert header.split()[:3] == ["ID", "CHANNEL", "RECEIVED_AT"]
    assert rows and all(" ERROR " in row for row in rows)


def test_sigterm_stops_cleanly_and_recovers_nothing_lost(tmp_path: Path) -> None:
    """SIGTERM: exit 0, every acknowledged message stored and routed to a final state."""
    eng = start_engine(tmp_path / "data")
    with socket.create_connection(("127.0.0.1", eng.port)) as sock:
        for n in range(20):
            raw = f"MSH|^~\\&|T|ICU|||20261125||ADT^A08^ADT_A01|TERM-{n}|P|2.5\rEVN|A08\r" \
                  f"PID|||X{n}\rPV1||I\r"
            assert msa(send_and_receive(sock, raw.encode()))[1] == b"AA"
    assert eng.stop(signal.SIGTERM) == 0
    rows = stored(eng)
    assert len(rows) == 20
    assert {r["status"] for r in rows} == {"FILTERED"}
    assert "stopped cleanly" in eng.log.read_text()
