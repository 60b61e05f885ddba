#!/usr/bin/env python3
"""End-to-end benchmark: MLLP in, filter and transform, MLLP out to an EHR, on SQLite.

One channel (fed by the engine's own listener) filters and transforms IHE PCD-01 reports
of a simulated unit (`profiles.pcd.simulated`, as `interlink simulate` sends them:
monitors and infusion pumps, fixed seed) and delivers them over MLLP to
`../shared/tools/mllp_sink.py` standing in for the EHR. `../shared/tools/mllp_load.py`
drives the engine for a bounded time (every ACK checked) while the queue depth is sampled
from the store. Then the queue drains, and the store tells how many messages were received
and delivered in the measuring window, and how long delivery took: a message's
`received_at` to the commit of its delivery's SENT outcome (`deliveries.updated_at`).
The bare Twisted + SQLite ceiling (`ceiling_twisted_sqlite.py`, as bench/ingest.py runs it)
is driven with the same messages in the same run, for a ratio: absolute rates drift
between runs on shared machines.

Each load runs twice by default (`--lanes none patient`): once with one lane in arrival
order over one EHR connection (every message waits for the previous one's ACK: the rate
of one MLLP conversation), once with lanes by patient (PID-3.1) over one EHR connection
per patient of the simulated unit (8).

    .venv/bin/python bench/end_to_end.py [--duration 15] [--connections 10 100]
                                         [--lanes none patient]
"""

from __future__ import annotations

import argparse
import json
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ingest import PY, REPO, TOOLS, free_port, start_ceiling, start_interlink, wait_listening

from profiles.pcd.simulated import SimulatedUnit

UNIT = {"seed": 1, "monitors": 8, "pumps": 4}
REPORTS = 50
"""Each simulated device's reports in the load generator's rotation (it renews MSH-10)."""

CHANNEL = """\
# The benchmark's channel: fed by the engine's own listener (mllp.channel: inbound).
name: inbound
filter: {{all: ["MSH-9.1 == ORU", "MSH-9.2 == R01"]}}
transformer:
  - {{set: MSH-5, value: EHR_VITALS}}
  - {{set: MSH-6, value: GENERAL_HOSPITAL}}
  - rename_code: OBX-3
    from: 150456^MDC_PULS_OXIM_SAT_O2^MDC
    to: 59408-5^Oxygen saturation in Arterial blood by Pulse oximetry^LN
  - rename_code: OBX-3
    from: 151562^MDC_RESP_RATE^MDC
    to: 9279-1^Respiratory rate^LN
destinations:
  - name: ehr{lanes}
    to: {{type: mllp, host: 127.0.0.1, port: {port}, ack_timeout_seconds: 10, connections: {links}}}
    retry: {{initial_seconds: 0.5, max_seconds: 5, max_attempts: null}}
"""
LANES = {
    "none": ("", 1),
    "patient": ("\n    lanes: PID-3.1", UNIT["monitors"]),
}
"""Delivery order: `none` is one lane in arrival order over one connection (each message
waits for the previous one's ACK); `patient` keeps each patient's order and delivers
different patients in parallel, each over a connection of its own (one patient per
monitor)."""


def write_simulated(corpus: Path) -> str:
    """The simulated unit's PCD-01 reports (no alarms) as one file; says what they are."""
    start, interval = 1_795_000_000.0, 5.0
    unit = SimulatedUnit(start=start, alarms=False, **UNIT)
    count = len(unit.devices)
    with (corpus / "simulated-unit.hl7").open("wb") as out:
        for k in range(REPORTS):
            for device in range(count):
                for message in unit.report(device, start + interval * (k + device / count)):
                    out.write(message.raw)
    return (f"{REPORTS * count} simulated PCD-01 reports of {UNIT['monitors']} monitors and "
            f"{UNIT['pumps']} pumps (seed {UNIT['seed']})")


def load(port: int, connections: int, duration: float, corpus: Path,
         label: str) -> dict[str, Any]:
    """mllp_load.py against a port with the benchmark's message; its JSON summary."""
    out = subprocess.run(
        [PY, str(TOOLS / "mllp_load.py"), "--port", str(port), "--connections",
         str(connections), "--duration", str(duration), "--warmup", str(min(2.0, duration / 4)),
         "--corpus", str(corpus), "--label", label],
        capture_output=True, text=True, timeout=duration + 120)
    summary: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    return summary


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def ehr_control_ids(path: Path) -> list[bytes]:
    """MSH-10 of every message the EHR stand-in appended to its file, in arrival order."""
    ids = []
    for frame in path.read_bytes().split(b"\x1c\r")[:-1]:
        msh = frame[frame.find(b"\x0b") + 1:].split(b"\r", 1)[0]
        ids.append(msh.split(msh[3:4])[9])
    return ids


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))]


class DepthSampler(threading.Thread):
    """QUEUED and RECEIVED counts read from the store once a second (read-only)."""

    def __init__(self, db: Path) -> None:
        super().__init__(daemon=True)
        self.db = db
        self.samples: list[tuple[float, int, int]] = []
        self.done = threading.Event()

    def depth(self) -> tuple[int, int]:
        with sqlite3.connect(f"file:{self.db}?mode=ro", uri=True, timeout=10) as conn:
            queued = conn.execute(
                "SELECT count(*) FROM deliveries WHERE status = 'QUEUED'").fetchone()[0]
            received = conn.execute(
                "SELECT count(*) FROM messages WHERE status = 'RECEIVED'").fetchone()[0]
        return int(queued), int(received)

    def run(self) -> None:
        while not self.done.wait(1.0):
            try:
                queued, received = self.depth()
            except sqlite3.Error:
                continue
            self.samples.append((time.time(), queued, received))


def slope(samples: list[tuple[float, int, int]]) -> float:
    """Least-squares growth of the QUEUED count, messages per second."""
    if len(samples) < 2:
        return 0.0
    t0 = samples[0][0]
    xs = [s[0] - t0 for s in samples]
    ys = [float(s[1]) for s in samples]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def run_engine(workdir: Path, connections: int, duration: float,
               corpus: Path, lanes: str = "none") -> dict[str, Any]:
    ehr, port = free_port(), free_port()
    channels = workdir / "channels"
    channels.mkdir()
    lane_line, links = LANES[lanes]
    (channels / "inbound.yaml").write_text(CHANNEL.format(port=ehr, lanes=lane_line,
                                                          links=links))
    sink = subprocess.Popen(
        [PY, str(TOOLS / "mllp_sink.py"), "--port", str(ehr), "--max-seconds",
         str(duration + 600), "--store", str(workdir / "ehr.hl7")],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    engine = start_interlink(workdir, port, channels)
    db = workdir / "interlink" / "interlink.db"
    try:
        wait_listening(ehr, sink)
        wait_listening(port, engine)
        sampler = DepthSampler(db)
        sampler.start()
        started = time.time()
        summary = load(port, connections, duration, corpus, f"end-to-end-{connections}")
        load_end = time.time()
        sampler.done.set()
        sampler.join()
        deadline = time.monotonic() + 300
        drained = sampler.depth()
        while drained != (0, 0) and time.monotonic() < deadline:
            time.sleep(0.2)
            drained = sampler.depth()
        drained_at = time.time()
    finally:
        stop(engine)
        stop(sink)
    sink_stats = json.loads((sink.stderr.read() if sink.stderr else b"{}").decode()
                            .strip().splitlines()[-1] or "{}")

    warmup = min(2.0, duration / 4)
    win_start_us = int((started + warmup) * 1e6)
    win_end_us = int(load_end * 1e6)
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        received = conn.execute(
            "SELECT count(*) FROM messages WHERE received_at BETWEEN ? AND ?",
            (win_start_us, win_end_us)).fetchone()[0]
        delivered = conn.execute(
            "SELECT count(*) FROM deliveries WHERE status = 'SENT' "
            "AND updated_at BETWEEN ? AND ?", (win_start_us, win_end_us)).fetchone()[0]
        latencies = [(u - r) / 1000 for r, u in conn.execute(
            "SELECT m.received_at, d.updated_at FROM deliveries d "
            "JOIN messages m ON m.id = d.message_id WHERE d.status = 'SENT' "
            "AND m.received_at BETWEEN ? AND ?", (win_start_us, win_end_us))]
        totals = dict(conn.execute("SELECT status, count(*) FROM messages GROUP BY status"))
    window = (win_end_us - win_start_us) / 1e6
    at_ehr = ehr_control_ids(workdir / "ehr.hl7")
    depth_during = [q for t, q, _ in sampler.samples if started + warmup <= t <= load_end]
    return {
        "load": summary,
        "received_per_s": received / window,
        "delivered_per_s": delivered / window,
        "latency_ms": {"p50": percentile(latencies, 50), "p99": percentile(latencies, 99),
                       "max": max(latencies, default=float("nan"))},
        "queue": {"samples": [q for _, q, _ in sampler.samples],
                  "max": max(depth_during, default=0),
                  "at_end_of_load": depth_during[-1] if depth_during else 0,
                  "growth_per_s": slope([s for s in sampler.samples
                                         if started + warmup <= s[0] <= load_end])},
        "drain_seconds": drained_at - load_end,
        "drained": drained == (0, 0),
        "statuses": totals,
        "sink_messages": sink_stats.get("messages"),
        "ehr_received": len(at_ehr),
        "ehr_duplicates": len(at_ehr) - len(set(at_ehr)),
    }


def run_ceiling(workdir: Path, connections: int, duration: float,
                corpus: Path) -> dict[str, Any]:
    port = free_port()
    proc = start_ceiling(workdir, port, duration + 60)
    try:
        wait_listening(port, proc)
        return load(port, connections, duration, corpus, f"ceiling-{connections}")
    finally:
        stop(proc)


def report(connections: int, duration: float, ceiling: dict[str, Any],
           engine: dict[str, Any], messages: str, lanes: str) -> dict[str, Any]:
    """Print one run's figures; returns its row for the JSON file."""
    load_ok = bool(engine["load"]["ok"])
    steady = engine["queue"]["growth_per_s"] < 0.02 * engine["received_per_s"]
    ratio = engine["received_per_s"] / ceiling["msgs_per_s"] if ceiling["msgs_per_s"] else 0.0
    lat, queue = engine["latency_ms"], engine["queue"]
    order = ("one lane in arrival order, 1 EHR connection" if lanes == "none"
             else f"lanes by patient (PID-3.1), {UNIT['monitors']} EHR connections")
    print(f"\n{connections} connections, {duration:g} s of load, {messages} "
          f"(the first is {engine['load']['message_bytes']} bytes); delivery: {order}")
    print(f"  ceiling (bare Twisted + SQLite, ACK only)  {ceiling['msgs_per_s']:>9,.0f} msg/s")
    print(f"  interlink received (ACKed, stored)         {engine['received_per_s']:>9,.0f} msg/s"
          f"   ACK p50/p99 {engine['load']['latency_ms']['p50']:.2f}/"
          f"{engine['load']['latency_ms']['p99']:.2f} ms")
    print(f"  interlink delivered (EHR ACKed, SENT)      {engine['delivered_per_s']:>9,.0f} msg/s"
          f"   delivery p50/p99 {lat['p50']:.1f}/{lat['p99']:.1f} ms (max {lat['max']:.0f})")
    print(f"  received / ceiling                         {ratio:>9.1%}")
    print(f"  queue during load: max {queue['max']}, at end {queue['at_end_of_load']}, "
          f"trend {queue['growth_per_s']:+.1f} msg/s -> "
          f"{'not growing' if steady else 'GROWING'}; drained "
          f"{engine['drain_seconds']:.1f} s after the load ({engine['drained']})")
    print(f"  store: {engine['statuses']}; EHR got {engine['ehr_received']} "
          f"({engine['ehr_duplicates']} more than once); every ACK positive: {load_ok}")
    return {"connections": connections, "duration": duration, "lanes": lanes,
            "ceiling": ceiling,
            "interlink": engine, "ratio": round(ratio, 3), "queue_growing": not steady,
            "ok": load_ok and engine["drained"] and engine["ehr_duplicates"] == 0}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=15.0)
    parser.add_argument("--connections", type=int, nargs="+", default=[10, 100])
    parser.add_argument("--lanes", choices=sorted(LANES), nargs="+",
                        default=["none", "patient"])
    parser.add_argument("--json-out", type=Path,
                        default=REPO / "bench" / "results" / "end_to_end.json")
    args = parser.parse_args()
    rows = []
    for n in args.connections:
        with tempfile.TemporaryDirectory(prefix="interlink-e2e-") as tmp:
            corpus = Path(tmp) / "corpus"
            corpus.mkdir()
            messages = write_simulated(corpus)
            ceiling = run_ceiling(Path(tmp), n, args.duration, corpus)
            for lanes in args.lanes:
                workdir = Path(tmp) / f"engine-{lanes}"
                workdir.mkdir()
                engine = run_engine(workdir, n, args.duration, corpus, lanes)
                rows.append(report(n, args.duration, ceiling, engine, messages, lanes))
    args.json_out.parent.mkdir(parents=True, exist_ok=True)
    args.json_out.write_text(json.dumps(rows, indent=2))
    return 0 if all(row["ok"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
