"""The destination queue: order per lane, backoff on the clock, dead letters, hold vs skip."""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import replace

import pytest
from twisted.internet import defer, task

from channels.destinations.base import DeliveryResult, Envelope, Verdict
from engine.delivery.queue import DestinationQueue, OnExhausted
from engine.delivery.retry import RetryPolicy
from engine.store.deliveries import DeliveryOutcome, QueuedDelivery
from engine.store.status import Status


class TableQueue:
    """An in-memory stand-in for the deliveries table with the store's read/write shape."""

    def __init__(self) -> None:
        self.rows: dict[int, QueuedDelivery] = {}
        self.status: dict[int, Status] = {}
        self.held: dict[int, bool] = {}
        self.outcomes: list[DeliveryOutcome] = []

    def add(self, n: int, lane_of=lambda i: "") -> None:
        for i in range(len(self.rows) + 1, len(self.rows) + n + 1):
            self.rows[i] = QueuedDelivery(i, 100 + i, "ch", "ehr", lane_of(i), 0, 0, None,
                                          f"C{i}", "ORU^R01", 0, b"MSG%d" % i)
            self.status[i] = Status.QUEUED

    def fetch(self, after: int, limit: int):
        rows = [replace(r) for i, r in sorted(self.rows.items())
                if i > after and self.status[i] is Status.QUEUED][:limit]
        held = {self.rows[i].lane_key for i, h in self.held.items()
                if h and self.status[i] is Status.ERROR}
        return defer.succeed((rows, held))

    def record(self, outcomes: Sequence[DeliveryOutcome]):
        for o in outcomes:
            self.outcomes.append(o)
            self.status[o.delivery_id] = o.status
            self.held[o.delivery_id] = o.held
            row = self.rows[o.delivery_id]
            row.attempts, row.next_attempt_at = o.attempts, o.next_attempt_at
            row.first_attempt_at = o.first_attempt_at
        return defer.succeed(None)

    def requeue(self, delivery_id: int) -> None:
        self.status[delivery_id] = Status.QUEUED
        self.held[delivery_id] = False
        self.rows[delivery_id].attempts = 0


class ScriptedEHR:
    """A destination answering from a script per payload (default: accept)."""

    name = "ehr"

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.script: dict[bytes, list[Verdict]] = {}
        self.pending: list[defer.Deferred[DeliveryResult]] | None = None

    def start(self) -> None:
        pass

    def stop(self) -> defer.Deferred[None]:
        return defer.succeed(None)

    def send(self, payload: bytes, envelope: Envelope) -> defer.Deferred[DeliveryResult]:
        self.sent.append(payload)
        if self.pending is not None:
            d: defer.Deferred[DeliveryResult] = defer.Deferred()
            self.pending.append(d)
            return d
        verdicts = self.script.get(payload)
        verdict = verdicts.pop(0) if verdicts else Verdict.SENT
        return defer.succeed(DeliveryResult(verdict, b"ACK", detail=verdict.value))


def make(table: TableQueue, ehr: ScriptedEHR, clock: task.Clock, **kw) -> DestinationQueue:
    policy = kw.pop("policy", RetryPolicy(initial_seconds=1, multiplier=2, max_seconds=60,
                                          jitter=0, max_attempts=4))
    q = DestinationQueue("ch", ehr, fetch=table.fetch, record=table.record, clock=clock,
                         policy=policy, rng=random.Random(1), rescan_seconds=0, **kw)
    q.start()
    clock.advance(0)
    clock.advance(0)
    return q


def test_delivers_everything_in_arrival_order() -> None:
    """Queued rows go out oldest first and end SENT."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(5)
    make(table, ehr, clock)
    clock.advance(0)
    assert ehr.sent == [b"MSG1", b"MSG2", b"MSG3", b"MSG4", b"MSG5"]
    assert set(table.status.values()) == {Status.SENT}


def test_retry_holds_the_lane_and_backs_off_on_the_clock() -> None:
    """A failing head is retried after 1 s, 2 s; nothing behind it overtakes it."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(3)
    ehr.script[b"MSG1"] = [Verdict.RETRY, Verdict.RETRY]
    make(table, ehr, clock)
    assert ehr.sent == [b"MSG1"]
    clock.advance(0.999)
    assert ehr.sent == [b"MSG1"]
    clock.advance(0.001)
    clock.advance(0)
    assert ehr.sent == [b"MSG1", b"MSG1"]
    clock.advance(2)
    clock.advance(0)
    assert ehr.sent == [b"MSG1"] * 3 + [b"MSG2", b"MSG3"]
    assert table.rows[1].attempts == 3


def test_exhausted_with_hold_stops_the_lane_until_reprocessed() -> None:
    """After max attempts the head is ERROR, the lane waits; reprocess resumes in order."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(2)
    ehr.script[b"MSG1"] = [Verdict.RETRY] * 4
    q = make(table, ehr, clock)
    for _ in range(10):
        clock.advance(10)
    assert table.status[1] is Status.ERROR and table.held[1]
    assert table.status[2] is Status.QUEUED
    assert ehr.sent.count(b"MSG2") == 0
    table.requeue(1)
    q.wake(rescan=True)
    clock.advance(0)
    clock.advance(0)
    assert table.status[1] is Status.SENT and table.status[2] is Status.SENT
    assert ehr.sent[-2:] == [b"MSG1", b"MSG2"]


def test_exhausted_with_skip_sets_the_message_aside() -> None:
    """`on_exhausted: skip`: the head goes to ERROR and the next one is delivered."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(2)
    ehr.script[b"MSG1"] = [Verdict.FAIL]
    make(table, ehr, clock, on_exhausted=OnExhausted.SKIP)
    clock.advance(0)
    assert table.status[1] is Status.ERROR and not table.held[1]
    assert table.status[2] is Status.SENT


def test_fail_verdict_dead_letters_without_retrying() -> None:
    """An AR-like FAIL is not retried: one attempt, then ERROR with the detail kept."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(1)
    ehr.script[b"MSG1"] = [Verdict.FAIL]
    make(table, ehr, clock)
    (outcome,) = table.outcomes
    assert outcome.status is Status.ERROR and outcome.attempts == 1 and outcome.error == "FAIL"


def test_lanes_run_in_parallel_and_keep_their_own_order() -> None:
    """A stuck lane does not stop another lane; each lane stays in order."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(6, lane_of=lambda i: "A" if i % 2 else "B")
    ehr.script[b"MSG1"] = [Verdict.RETRY]
    make(table, ehr, clock)
    assert ehr.sent == [b"MSG1", b"MSG2", b"MSG4", b"MSG6"]
    clock.advance(1)
    clock.advance(0)
    assert [p for p in ehr.sent if p in (b"MSG1", b"MSG3", b"MSG5")] == [
        b"MSG1", b"MSG1", b"MSG3", b"MSG5"]


def test_max_age_ends_retries() -> None:
    """With a maximum age, retries stop once the first attempt is that old."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(1)
    ehr.script[b"MSG1"] = [Verdict.RETRY] * 100
    policy = RetryPolicy(initial_seconds=10, multiplier=1, jitter=0, max_attempts=None,
                         max_age_seconds=25)
    make(table, ehr, clock, policy=policy, on_exhausted=OnExhausted.SKIP)
    for _ in range(5):
        clock.advance(10)
        clock.advance(0)
    assert table.status[1] is Status.ERROR
    assert len(ehr.sent) == 4


def test_pause_stops_new_sends_and_resume_continues() -> None:
    """Paused, nothing new is sent; resumed, the queue carries on in order."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    ehr.pending = []
    table.add(3)
    q = make(table, ehr, clock)
    q.pause()
    ehr.pending.pop(0).callback(DeliveryResult(Verdict.SENT))
    clock.advance(0)
    assert ehr.sent == [b"MSG1"]
    ehr.pending = None
    q.resume()
    clock.advance(0)
    assert ehr.sent == [b"MSG1", b"MSG2", b"MSG3"]


@pytest.mark.parametrize("attempt,expected", [(1, 1.0), (2, 2.0), (3, 4.0), (10, 60.0)])
def test_backoff_is_exponential_and_capped(attempt: int, expected: float) -> None:
    """Without jitter the delay doubles per attempt up to the cap."""
    assert RetryPolicy(1, 2, 60, 0).delay(attempt) == expected


def test_jitter_stays_within_its_fraction() -> None:
    """Jitter spreads retries by at most the configured fraction."""
    rng = random.Random(7)
    delays = [RetryPolicy(10, 1, 60, 0.2).delay(1, rng) for _ in range(200)]
    assert 8.0 <= min(delays) < 9.0 and 11.0 < max(delays) <= 12.0


def test_drained_lanes_are_forgotten() -> None:
    """One lane per patient ever seen must not pile up in memory."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(6, lane_of=lambda i: f"P{i}")
    q = make(table, ehr, clock)
    clock.advance(0)
    assert set(table.status.values()) == {Status.SENT}
    assert q._lanes == {}


def test_on_a_shared_store_a_new_lane_waits_for_its_older_rows() -> None:
    """Rows of a lane another node held were skipped below the cursor; when the lane comes
    to this node, it sends nothing until a read from the start brought the older rows."""
    table, ehr, clock = TableQueue(), ScriptedEHR(), task.Clock()
    table.add(4, lane_of=lambda i: "A" if i in (1, 2) else "B")
    hidden = {1, 2}
    real_fetch = table.fetch

    def fetch(after: int, limit: int):
        d = real_fetch(after, limit)
        if after > 0:
            return d
        # Reads from the start see lane A only once its lease came to this node.
        return d.addCallback(lambda r: ([x for x in r[0] if x.id not in hidden], r[1]))

    table.fetch = fetch  # type: ignore[method-assign]
    q = make(table, ehr, clock, shared=True)
    clock.advance(0)
    assert ehr.sent == [b"MSG3", b"MSG4"]
    hidden.clear()
    table.add(1, lane_of=lambda i: "A")
    q.wake()
    for _ in range(4):
        clock.advance(0)
    assert ehr.sent == [b"MSG3", b"MSG4", b"MSG1", b"MSG2", b"MSG5"]
