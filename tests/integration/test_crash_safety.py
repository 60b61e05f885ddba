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


@pytest.mark.parametrize("kill_after", [0.3, 1.1, 2.3])
def test_sigkill_under_load_loses_no_acknowledged_message(tmp_path: Path, kill_after: float
                                                          ) -> None:
    """Kill -9 mid-load at different moments; restart; all acknowledged ids are stored."""
    data = tmp_path / "data"
    engine = start_engine(data)
    acked_log = tmp_path / "acked.txt"
    load = subprocess.Popen(
        [sys.executable, str(LOAD), "--port", str(engine.port), "--connections", "20",
         "--duration", "8", "--timeout", "5", "--acked-log", str(acked_log),
         "--label", f"kill-after-{kill_after}"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(kill_after)  # the moment of the crash, not a timing assertion
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
