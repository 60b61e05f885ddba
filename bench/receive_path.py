#!/usr/bin/env python3
"""The two halves of receiving, measured apart: the store's group commit and the Python
the reactor runs per message.

`bench/ingest.py` measures both together over sockets, where they share one interpreter
lock and two cores with the load generator. This one takes them apart, in one process
with nothing else running, to show where a change moves the cost:

- store commit: `Store.commit_batch` of N received messages (2 KB PCD-01) together with
  the routing of the N before, on a SQLite file in WAL with synchronous=FULL, against the
  ceiling's own statement (`executemany` of the raw messages into one table) in the same
  run; median milliseconds per commit and their ratio.
- receive path: microseconds of Python per message from `MLLPServerProtocol.dataReceived`
  through `MLLPSource` and `Ingest` to the ACK written, with a writer that answers at once
  (no sockets, no store): the part of the reactor's time that is ours rather than
  Twisted's or the kernel's.

    .venv/bin/python bench/receive_path.py [--batches 1 10 50 100] [--commits 200]
"""

from __future__ import annotations

import argparse
import importlib.util
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from twisted.internet import defer, task  # noqa: E402
from twisted.internet.testing import StringTransport  # noqa: E402

from channels.mllp_source import MLLPSource  # noqa: E402
from engine.ingest import Ingest  # noqa: E402
from engine.store.deliveries import Routing  # noqa: E402
from engine.store.status import Status  # noqa: E402
from engine.store.store import IncomingMessage, StoredMessage, now_us, open_store  # noqa: E402
from mllp.server import MLLPServerFactory  # noqa: E402

TOOLS = REPO.parent / "shared" / "tools"
ACK = b"MSH|^~\\&|INTERLINK||MON|ICU|20261126||ACK^R01^ACK|1|P|2.6\rMSA|AA|1\r"


def pcd01_message() -> bytes:
    """The load generator's built-in 2 KB PCD-01 message, as `bench/ingest.py` sends it."""
    spec = importlib.util.spec_from_file_location("mllp_load", TOOLS / "mllp_load.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return bytes(module.builtin_pcd01())


def median_ms(run: Callable[[], None], times: int) -> float:
    samples = []
    for _ in range(times):
        start = time.perf_counter()
        run()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples) * 1000


def interlink_committer(directory: Path, raw: bytes, batch: int) -> tuple[Any, Any]:
    """One Interlink commit per call, and how to close the store afterwards."""
    store = open_store(f"sqlite:///{directory / 'interlink.db'}")
    previous: list[StoredMessage] = []
    counter = iter(range(10**9))

    def commit() -> None:
        nonlocal previous
        incoming = [IncomingMessage(
            channel="inbound", received_at=now_us(), peer="127.0.0.1:40000", raw=raw,
            ack_code="AA", control_id=f"C{next(counter)}", message_type="ORU^R01",
            version="2.6", sending_application="MON", sending_facility="ICU",
            patient_id="MRN1", ack=ACK) for _ in range(batch)]
        routings = [Routing(m.id, "inbound", Status.FILTERED, "channel has no destinations")
                    for m in previous]
        previous = store.commit_batch(incoming, routings=routings)

    return commit, store.close


def ceiling_committer(directory: Path, raw: bytes, batch: int) -> tuple[Any, Any]:
    """`ceiling_twisted_sqlite.py`'s table and statements, without its server."""
    db = sqlite3.connect(directory / "ceiling.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE message (id INTEGER PRIMARY KEY, control_id TEXT NOT NULL,"
               " received_at REAL NOT NULL, raw BLOB NOT NULL)")
    insert = "INSERT INTO message (control_id, received_at, raw) VALUES (?, ?, ?)"
    counter = iter(range(10**9))

    def commit() -> None:
        rows = [(f"C{next(counter)}", time.time(), raw) for _ in range(batch)]
        db.execute("BEGIN")
        db.executemany(insert, rows)
        db.execute("COMMIT")

    return commit, db.close


def commit_ms(directory: Path, raw: bytes, batch: int, commits: int) -> tuple[float, float]:
    """Median ms per commit, Interlink's and the ceiling's, taken turn about so that the
    disk's drift (fsync times wander on shared machines) falls on both alike."""
    ours, close_ours = interlink_committer(directory, raw, batch)
    theirs, close_theirs = ceiling_committer(directory, raw, batch)
    try:
        for _ in range(10):  # warm: statements compiled, tables past their first pages
            ours()
            theirs()
        samples: dict[Any, list[float]] = {ours: [], theirs: []}
        for _ in range(commits):
            for commit in (ours, theirs):
                start = time.perf_counter()
                commit()
                samples[commit].append(time.perf_counter() - start)
        return (statistics.median(samples[ours]) * 1000,
                statistics.median(samples[theirs]) * 1000)
    finally:
        close_ours()
        close_theirs()


class AnsweringWriter:
    """Stands in for the store writer: every message submitted is committed at `flush`."""

    def __init__(self) -> None:
        self.waiting: list[tuple[IncomingMessage, defer.Deferred[StoredMessage]]] = []
        self.ids = iter(range(1, 10**9))

    def submit(self, message: IncomingMessage) -> defer.Deferred[StoredMessage]:
        d: defer.Deferred[StoredMessage] = defer.Deferred()
        self.waiting.append((message, d))
        return d

    def flush(self) -> None:
        waiting, self.waiting = self.waiting, []
        for message, d in waiting:
            d.callback(StoredMessage(next(self.ids), message.channel, Status.RECEIVED, None))


class NoRouting:
    def route(self, *args: Any) -> None:
        pass

    def room(self) -> None:
        return None


def receive_path_us(raw: bytes, connections: int = 100, rounds: int = 100) -> float:
    """Python per message, best of five: a frame on each of `connections`, then commit."""
    clock = task.Clock()
    writer = AnsweringWriter()
    control_ids = iter(range(10**9))
    source = MLLPSource("inbound", Ingest(writer, NoRouting()),  # type: ignore[arg-type]
                        clock=clock, control_ids=lambda: str(next(control_ids)),
                        on_answer=lambda seconds: None)
    factory = MLLPServerFactory(source, clock=clock)
    links = []
    for _ in range(connections):
        protocol = factory.buildProtocol(None)
        assert protocol is not None
        transport = StringTransport()
        protocol.makeConnection(transport)
        links.append((protocol, transport))
    frame = b"\x0b" + raw + b"\x1c\r"

    def one_round() -> None:
        for protocol, _ in links:
            protocol.dataReceived(frame)
        writer.flush()
        for _, transport in links:
            answer = transport.value()
            if b"MSA|CA|" not in answer and b"MSA|AA|" not in answer:
                raise AssertionError("a message was not acknowledged positively")
            transport.clear()

    for _ in range(20):
        one_round()
    best = min(median_ms(one_round, rounds) for _ in range(5))
    return best * 1000 / connections


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 10, 50, 100])
    parser.add_argument("--commits", type=int, default=200)
    args = parser.parse_args()
    raw = pcd01_message()
    print("store commit, median per commit (N messages + routing of the N before; "
          "fsync each)")
    print(f"{'N':>5}  {'interlink ms':>12}  {'ceiling ms':>10}  {'ratio':>6}  "
          f"{'interlink µs/msg':>16}")
    for batch in args.batches:
        with tempfile.TemporaryDirectory(prefix="interlink-bench-") as tmp:
            ours, ceiling = commit_ms(Path(tmp), raw, batch, args.commits)
        print(f"{batch:>5}  {ours:>12.2f}  {ceiling:>10.2f}  {ceiling / ours:>6.1%}  "
              f"{ours * 1000 / batch:>16.1f}")
    print(f"receive path (Python per message, no sockets, no store): "
          f"{receive_path_us(raw):.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
