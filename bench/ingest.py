#!/usr/bin/env python3
"""Ingest benchmark: Interlink against the bare Twisted + SQLite ceiling, in one run.

For each connection count it starts the reference server
(`shared/tools/ceiling_twisted_sqlite.py --commit batch --batch-ms 0 --sync FULL`) and
then `interlink run`, drives each with `shared/tools/mllp_load.py` (a 2 KB IHE PCD-01
message, every ACK checked), and prints msgs/s, p50/p99 ACK latency and Interlink's
throughput as a ratio of the ceiling's. Absolute rates drift between runs on shared
machines; the ratio is the figure to compare.

    .venv/bin/python bench/ingest.py [--duration 10] [--connections 1 10 100] [--repeat 3]

With `--repeat N` each connection count is measured N times (ceiling, then Interlink,
each time) and the median ratio is printed after the runs: on a noisy machine one pair
of runs can be a quarter off.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TOOLS = REPO.parent / "shared" / "tools"
PY = sys.executable


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(port)


def start_ceiling(workdir: Path, port: int, seconds: float) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [PY, str(TOOLS / "ceiling_twisted_sqlite.py"), "--port", str(port),
         "--db", str(workdir / "ceiling.db"), "--commit", "batch", "--batch-ms", "0",
         "--sync", "FULL", "--max-seconds", str(seconds)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def start_interlink(workdir: Path, port: int,
                    channels: Path | None = None) -> subprocess.Popen[bytes]:
    """The engine on its own data dir; with no channel files unless `channels` names some,
    so the ingest figures measure receiving, not the example channels' deliveries."""
    if channels is None:
        channels = workdir / "no-channels"
        channels.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, INTERLINK_DATA_DIR=str(workdir / "interlink"),
               INTERLINK_MLLP_PORT=str(port), INTERLINK_ADMIN_PORT=str(free_port()),
               INTERLINK_CHANNELS_DIR=str(channels.resolve()))
    log = (workdir / "interlink.log").open("ab")
    return subprocess.Popen([PY, "-m", "engine.cli", "run"], cwd=REPO, env=env,
                            stdout=log, stderr=subprocess.STDOUT)


def drive(port: int, connections: int, duration: float, label: str) -> dict[str, object]:
    out = subprocess.run(
        [PY, str(TOOLS / "mllp_load.py"), "--port", str(port), "--connections",
         str(connections), "--duration", str(duration), "--warmup", str(min(2.0, duration / 4)),
         "--label", label],
        capture_output=True, text=True, timeout=duration + 120)
    summary: dict[str, object] = json.loads(out.stdout.strip().splitlines()[-1])
    return summary


def measure(kind: str, connections: int, duration: float, workdir: Path) -> dict[str, object]:
    port = free_port()
    proc = (start_ceiling(workdir, port, duration + 60) if kind == "ceiling"
            else start_interlink(workdir, port))
    try:
        wait_listening(port, proc)
        return drive(port, connections, duration, f"{kind}-{connections}")
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=10.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[1, 10, 100])
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per connection count; the median ratio is printed")
    parser.add_argument("--json-out", type=Path, default=REPO / "bench" / "results"
                        / "ingest.json")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory(prefix="interlink-bench-") as tmp:
        for n in args.connections:
            for run in range(1, args.repeat + 1):
                ceiling = measure("ceiling", n, args.duration, Path(tmp))
                engine = measure("interlink", n, args.duration, Path(tmp))
                rows.append({"connections": n, "run": run, "ceiling": ceiling,
                             "interlink": engine})
    print(f"{'conns':>5}  {'ceiling msg/s':>13}  {'p50/p99 ms':>13}  "
          f"{'interlink msg/s':>15}  {'p50/p99 ms':>13}  {'ratio':>6}  ok")
    all_ok = True
    for row in rows:
        c, e = row["ceiling"], row["interlink"]
        ratio = e["msgs_per_s"] / c["msgs_per_s"] if c["msgs_per_s"] else 0.0
        row["ratio"] = round(ratio, 3)
        all_ok &= bool(e["ok"])
        print(f"{row['connections']:>5}  {c['msgs_per_s']:>13,.0f}  "
              f"{c['latency_ms']['p50']:>6.2f}/{c['latency_ms']['p99']:<6.2f}  "
              f"{e['msgs_per_s']:>15,.0f}  "
              f"{e['latency_ms']['p50']:>6.2f}/{e['latency_ms']['p99']:<6.2f}  "
              f"{ratio:>6.1%}  {e['ok']}")
    if args.repeat > 1:
        for n in args.connections:
            ratios = [row["ratio"] for row in rows if row["connections"] == n]
            print(f"{n:>5}  median ratio of {len(ratios)} runs: "
                  f"{statistics.median(ratios):.1%} (from {min(ratios):.1%} to "
                  f"{max(ratios):.1%})")
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(rows, indent=2))
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main())
