"""Promise 1 under SIGKILL: every control id that got AA/CA is in the store after restart."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.support import REPO, start_engine

pytestmark = pytest.mark.integration

LOAD = REPO.parent / "shared" / "tools" / "mllp_load.py"


def first_ack_seen(acked_log: Path, load: subprocess.Popen[bytes]) -> None:
    """Wait until the load generator has logged an ACK, so a busy machine still crashes
    the engine mid-load rather than before the first message was answered."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and load.poll() is None:
        if acked_log.exists() and acked_log.stat().st_size:
            return
        time.sleep(0.02)
    raise AssertionError("the load generator got no ACK within 60 s")


@pytest.mark.parametrize("kill_after", [0.3, 1.1, 2.3])
def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path: Path, kill_after: float
                                                          ) -> None:
    """Kill -9 mid-load at moments after the first ACK; restart; all acknowledged ids are
    stored."""
    data = tmp_path / "data"
    engine = start_engine(data)
    acked_log = tmp_path / "acked.txt"
    load = subprocess.Popen(
        [sys.executable, str(LOAD), "--port", str(engine.port), "--connections", "20",
         "--duration", "8", "--timeout", "5", "--acked-log", str(acked_log),
         "--label", f"kill-after-{kill_after}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    first_ack_seen(acked_log, load)
    time.sleep(kill_after)  # the moment of the crash after load began, not a timing assertion
    engine.stop(signal.SIGKILL)
    load.communicate(timeout=60)
    acked = {line.strip() for line in acked_log.read_text().splitlines() if line.strip()}
    assert acked, "the load generator got no ACK before the crash; kill later"

    restarted = start_engine(data, engine.port)
    try:
        listing = restarted.run_cli("messages", "list", "--format", "jsonl")
        assert listing.returncode == 0, listing.stderr
        stored = {json.loads(line)["control_id"] for line in listing.stdout.splitlines()}
        missing = acked - stored
        assert not missing, f"{len(missing)} acknowledged messages lost, e.g. {sorted(missing)[:5]}"
    finally:
        assert restarted.stop() == 0
    after = restarted.run_cli("messages", "list", "--status", "RECEIVED", "--format", "jsonl")
    assert after.stdout.strip() == "", "recovery left messages unrouted"
