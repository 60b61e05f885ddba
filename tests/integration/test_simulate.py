"""`interlink simulate` against a real engine: every simulated message is acknowledged,
stored once, and the summary the command prints agrees with the store.

The simulator runs as its own process for a few seconds over loopback; the engine is a
real `interlink run` on its own SQLite file. What the engine kept is read back with
`interlink messages list --format jsonl`. Seed 14 makes a monitor's SpO2 dip below its
limit within the first reports, so the run carries PCD-04 alarms as well as PCD-01.
"""

from __future__ import annotations

import json
import re
import subprocess
from collections import Counter
from collections.abc import Iterator

import pytest

from tests.support import INTERLINK, REPO, EngineProcess, free_port, start_engine

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EngineProcess]:
    process = start_engine(tmp_path_factory.mktemp("simulate"))
    yield process
    process.stop()


def simulate(*args: str) -> tuple[subprocess.CompletedProcess[str], dict[str, int], str]:
    """Run the command; its exit, the summary's figures by label, and its MSH-10 prefix."""
    done = subprocess.run(
        [*INTERLINK, "simulate", *args], cwd=REPO, capture_output=True, text=True, timeout=120
    )
    figures: dict[str, int] = {}
    for line in done.stdout.splitlines():
        label, _, rest = line.rpartition("  ")
        if not label:
            continue
        figures[label.strip()] = int(rest.split()[0])
        for kind, count in re.findall(r"(PCD-0\d) (\d+)", rest):
            figures[kind] = int(count)
    prefix = re.search(r"MSH-10 prefix (\w+)", done.stderr)
    return done, figures, prefix.group(1) if prefix else ""


def stored(engine: EngineProcess, prefix: str) -> list[dict[str, object]]:
    result = engine.run_cli("messages", "list", "--format", "jsonl", "--limit", "100000")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines() if line.strip()]
    return [r for r in rows if str(r["control_id"]).startswith(f"{prefix}-")]


def test_every_simulated_message_is_acknowledged_and_stored(engine: EngineProcess) -> None:
    """Two monitors and two pumps for three seconds: the engine acknowledged each message
    (CA: the devices ask for enhanced mode) and stored each once, PCD-01 and PCD-04 alike."""
    done, figures, prefix = simulate(
        "--to",
        f"127.0.0.1:{engine.port}",
        "--monitors",
        "2",
        "--pumps",
        "2",
        "--interval",
        "0.25",
        "--duration",
        "3",
        "--seed",
        "14",
    )
    assert done.returncode == 0, (done.stdout, done.stderr)
    assert prefix
    assert figures["PCD-01"] == 48  # four devices, twelve reports each
    assert figures["PCD-04"] >= 1
    assert figures["sent"] == figures["PCD-01"] + figures["PCD-04"]
    assert figures["accepted (AA/CA)"] == figures["sent"]
    for failure in ("refused (AE/AR/CE/CR)", "no answer", "connection errors"):
        assert figures[failure] == 0

    rows = stored(engine, prefix)
    assert len(rows) == figures["sent"]
    assert len({r["control_id"] for r in rows}) == len(rows)
    assert {r["ack_code"] for r in rows} == {"CA"}
    assert not any(r["duplicate"] for r in rows)
    types = Counter(r["message_type"] for r in rows)
    assert types == {"ORU^R01": figures["PCD-01"], "ORU^R40": figures["PCD-04"]}
    peers = {r["peer"] for r in rows}
    assert len(peers) == 4  # a connection per device


def test_one_shared_connection_and_a_second_run_are_not_duplicates(engine: EngineProcess) -> None:
    """With --connections shared every message comes over one connection; running the same
    seed again gets new control ids, so nothing is taken for a duplicate."""
    runs = []
    for _ in range(2):
        done, figures, prefix = simulate(
            "--to",
            f"127.0.0.1:{engine.port}",
            "--monitors",
            "1",
            "--pumps",
            "1",
            "--interval",
            "0.5",
            "--duration",
            "1.5",
            "--connections",
            "shared",
            "--no-alarms",
        )
        assert done.returncode == 0, (done.stdout, done.stderr)
        assert figures["sent"] == figures["accepted (AA/CA)"] == 6
        assert figures["PCD-04"] == 0
        rows = stored(engine, prefix)
        assert len(rows) == 6 and not any(r["duplicate"] for r in rows)
        assert len({r["peer"] for r in rows}) == 1
        runs.append(prefix)
    assert runs[0] != runs[1]


def test_nobody_listening_is_reported_and_fails() -> None:
    """No receiver: the run still ends by itself, counts connection errors, exits 1."""
    done, figures, _ = simulate(
        "--to",
        f"127.0.0.1:{free_port()}",
        "--monitors",
        "1",
        "--interval",
        "0.5",
        "--duration",
        "1",
        "--timeout",
        "1",
    )
    assert done.returncode == 1
    assert figures["sent"] == 2 and figures["connection errors"] == 2
    assert figures["accepted (AA/CA)"] == 0
