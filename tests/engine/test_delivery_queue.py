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
from engine.store.deliveries import Claim, DeliveryOutcome, QueuedDelivery
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

    def fetch(self, after: int, limit: int, have=frozenset()):
        rows = [replace(r) for i, r in sorted(self.rows.items())
                if i > after and self.status[i] is Status.QUEUED][:limit]
        held = {self.rows[i].lane_key for i, h in self.held.items()
                if h and self.status[i] is Status.ERROR}
        position = rows[-1].id if rows else after
        return defer.succeed(Claim(rows, held, position, more=len(rows) >= limit))

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

    def fetch(after: int, limit: int, have=frozenset()):
        d = real_fetch(after, limit)
        if after > 0:
            return d
        # Reads from the start see lane A only once its lease came to this node.
        return d.addCallback(lambda c: replace(
            c, rows=[x for x in c.rows if x.id not in hidden],
            others={"A"} if hidden else set()))

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


# -- several nodes on one store: reading past other nodes' lanes, lane leases ----------------


class SharedTable(TableQueue):
    """The deliveries table as one node ("me") sees it on a shared store: lane leases with
    their expiry on the test clock, claims that read past lanes another node holds, and
    the renew and release calls the queue makes (a `Fetch` with `LaneLeases`)."""

    lease_seconds = 30.0

    def __init__(self, clock: task.Clock) -> None:
        super().__init__()
        self.clock = clock
        self.leases: dict[str, tuple[str, float]] = {}
        self.reads: list[int] = []
        self.renewals: list[list[str]] = []
        self.releases: list[list[str]] = []
        self.pending_reads: list[defer.Deferred] | None = None
        self.renew_fails = False

    def give(self, lane: str, node: str = "other") -> None:
        """Another node takes (or this node is given) a lane's lease now."""
        self.leases[lane] = (node, self.clock.seconds() + self.lease_seconds)

    def holder(self, lane: str) -> str | None:
        node, expires = self.leases.get(lane, (None, 0.0))
        return node if expires >= self.clock.seconds() else None

    def __call__(self, after: int, limit: int, have=frozenset()):
        self.reads.append(after)
        read = [r for i, r in sorted(self.rows.items())
                if i > after and self.status[i] is Status.QUEUED][:limit]
        mine = set()
        for key in {r.lane_key for r in read}:
            if self.holder(key) in (None, "me"):
                self.give(key, "me")
                mine.add(key)
        rows = [replace(r) for r in read if r.lane_key in mine and r.id not in have]
        others = {r.lane_key for r in read} - mine
        held = {self.rows[i].lane_key for i, h in self.held.items()
                if h and self.status[i] is Status.ERROR}
        claim = Claim(rows, held, read[-1].id if read else after, len(read) >= limit, others)
        if self.pending_reads is not None:
            d: defer.Deferred = defer.Deferred()
            self.pending_reads.append(d)
            return d.addCallback(lambda _: claim)
        return defer.succeed(claim)

    def renew(self, lanes):
        self.renewals.append(list(lanes))
        if self.renew_fails:
            return defer.fail(ConnectionError("store unreachable"))
        kept = {key for key in lanes if self.leases.get(key, ("",))[0] == "me"}
        for key in kept:
            self.give(key, "me")
        return defer.succeed(kept)

    def release(self, lanes):
        self.releases.append(list(lanes))
        for key in lanes:
            if self.leases.get(key, ("",))[0] == "me":
                del self.leases[key]
        return defer.succeed(None)


def shared_queue(table: SharedTable, ehr: ScriptedEHR, clock: task.Clock, *,
                 batch: int = 1000, rescan_seconds: float = 5.0,
                 policy: RetryPolicy | None = None) -> DestinationQueue:
    policy = policy or RetryPolicy(initial_seconds=1, multiplier=2, max_seconds=60, jitter=0,
                                   max_attempts=None)
    q = DestinationQueue("ch", ehr, fetch=table, record=table.record, clock=clock,
                         policy=policy, rng=random.Random(1), batch=batch,
                         rescan_seconds=rescan_seconds, shared=True)
    q.start()
    settle(clock)
    return q


def settle(clock: task.Clock, turns: int = 20) -> None:
    """Let everything due now run (reads, sends, outcome commits, lease calls)."""
    for _ in range(turns):
        clock.advance(0)


def test_reads_go_on_past_rows_of_lanes_other_nodes_hold() -> None:
    """Seven rows of a lane another node holds fill more than two reads of three; the queue
    moves past them and delivers the lane behind, and once the other node lets go of that
    lane its rows come back at the next read from the start, in order."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(7, lane_of=lambda i: "X")
    table.add(2, lane_of=lambda i: "A")
    table.give("X")
    shared_queue(table, ehr, clock, batch=3)
    assert ehr.sent == [b"MSG8", b"MSG9"]
    assert table.reads[:4] == [0, 3, 6, 9]
    del table.leases["X"]
    clock.advance(5)
    settle(clock)
    assert ehr.sent[2:] == [b"MSG%d" % i for i in range(1, 8)]
    assert set(table.status.values()) == {Status.SENT}


def test_a_lane_first_seen_behind_rows_left_to_another_node_waits_for_a_pass() -> None:
    """A lane whose older rows a read left behind (another node held it then) sends nothing
    from a later read until a read from the start has brought those rows; a lane no read
    left behind sends at once."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(2, lane_of=lambda i: "X")
    table.give("X")
    q = shared_queue(table, ehr, clock, rescan_seconds=0)
    assert ehr.sent == []
    table.leases["X"] = ("me", clock.seconds() + 30)  # the other node let go; here now
    slow: list[defer.Deferred] = []

    def reads_from_the_start_wait(after: int, limit: int, have=frozenset()):
        claim = table(after, limit, have)
        if after > 0:
            return claim
        gate: defer.Deferred = defer.Deferred()
        slow.append(gate)
        return gate.addCallback(lambda _: claim)

    q._fetch = reads_from_the_start_wait
    table.add(1, lane_of=lambda i: "X")
    table.add(1, lane_of=lambda i: "B")
    q.wake()
    settle(clock)
    assert ehr.sent == [b"MSG4"]  # B at once; X (row 3) waits for the read from the start
    assert q._lanes["X"].awaiting_rescan
    slow.pop().callback(None)
    settle(clock)
    assert ehr.sent == [b"MSG4", b"MSG1", b"MSG2", b"MSG3"]


def test_every_lane_with_work_is_renewed_well_before_its_lease_runs_out() -> None:
    """Lanes whose rows no read touches again (a send in flight, a retry backing off) are
    renewed together every lease/3, in one call, so their leases never lapse."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(3, lane_of=lambda i: "ABC"[i - 1])
    ehr.script[b"MSG2"] = [Verdict.RETRY] * 100
    ehr.pending = []
    ehr.script[b"MSG1"] = []
    q = shared_queue(table, ehr, clock, rescan_seconds=0)
    ehr.pending[1].callback(DeliveryResult(Verdict.RETRY))  # B backs off, A and C in flight
    settle(clock)
    reads = len(table.reads)
    for _ in range(9):
        clock.advance(10)
        settle(clock)
    assert len(table.reads) == reads
    assert table.renewals == [["A", "B", "C"]] * 9
    assert all(table.holder(lane) == "me" for lane in "ABC")
    assert clock.seconds() == 90 and q.depth == 3


def test_a_lane_whose_renewal_fails_is_dropped_and_comes_back_with_its_lease() -> None:
    """Another node took lane A after all: what is in flight finishes and is recorded,
    nothing more is sent from A and its rows are forgotten; lane B goes on. When A's lease
    comes back, a read from the start brings its rows again."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(4, lane_of=lambda i: "A" if i <= 2 else "B")
    ehr.pending = []
    q = shared_queue(table, ehr, clock)
    assert ehr.sent == [b"MSG1", b"MSG3"]
    table.give("A", "other")
    clock.advance(10)
    settle(clock)
    assert q._lanes["A"].lost and 2 not in q._known
    ehr.pending.pop(0).callback(DeliveryResult(Verdict.SENT))
    ehr.pending.pop(0).callback(DeliveryResult(Verdict.SENT))
    settle(clock)
    assert ehr.sent == [b"MSG1", b"MSG3", b"MSG4"]
    assert table.status[1] is Status.SENT and table.status[2] is Status.QUEUED
    assert "A" not in q._lanes and ["A"] not in table.releases
    ehr.pending = None
    del table.leases["A"]
    clock.advance(5)
    settle(clock)
    assert ehr.sent[-1] == b"MSG2" and table.status[2] is Status.SENT


def test_a_lost_lane_with_a_retry_in_flight_leaves_the_row_queued() -> None:
    """The send in flight when the lease went elsewhere fails: its retry is recorded and
    the row is left QUEUED for the lane's new node, not kept here."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(2, lane_of=lambda i: "A")
    ehr.pending = []
    q = shared_queue(table, ehr, clock, rescan_seconds=0)
    table.give("A", "other")
    clock.advance(10)
    settle(clock)
    ehr.pending.pop(0).callback(DeliveryResult(Verdict.RETRY))
    settle(clock)
    assert table.status[1] is Status.QUEUED and table.rows[1].attempts == 1
    assert q._lanes == {} and q._known == set() and ehr.sent == [b"MSG1"]


def test_renewals_that_cannot_reach_the_store_stop_the_lane_when_its_lease_may_lapse(
) -> None:
    """While renewals fail, the lane goes on only as long as its lease surely lasts; then
    it sends nothing more, since another node may have taken it."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(1, lane_of=lambda i: "A")
    ehr.script[b"MSG1"] = [Verdict.RETRY] * 100
    q = shared_queue(table, ehr, clock, rescan_seconds=0)
    table.renew_fails = True
    for _ in range(60):
        clock.advance(1)
        settle(clock)
    assert len(ehr.sent) == 5  # at 0, 1, 3, 7 and 15 s; the one due at 31 s is not made
    assert "A" not in q._lanes and table.status[1] is Status.QUEUED


def test_a_drained_lane_releases_its_lease_once_its_outcomes_are_committed() -> None:
    """No rows waiting, nothing in flight, the outcome committed: the lease goes back, so
    another node can take the lane at its next read. Not before the commit."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(2, lane_of=lambda i: "AB"[i - 1])
    commits: list[defer.Deferred] = []
    record = table.record

    def slow_record(outcomes):
        d: defer.Deferred = defer.Deferred()
        commits.append(d)
        return d.addCallback(lambda _: record(outcomes))

    table.record = slow_record  # type: ignore[method-assign]
    ehr.script[b"MSG2"] = [Verdict.RETRY]
    q = DestinationQueue("ch", ehr, fetch=table, record=table.record, clock=clock,
                         policy=RetryPolicy(1, 2, 60, 0), rng=random.Random(1),
                         rescan_seconds=0, shared=True)
    q.start()
    settle(clock)
    assert ehr.sent == [b"MSG1", b"MSG2"] and table.releases == []
    commits.pop(0).callback(None)
    settle(clock)
    assert table.releases == [["A"]] and table.holder("A") is None
    assert table.holder("B") == "me"  # backing off: still this node's


def test_a_release_waits_for_the_read_under_way_and_is_dropped_if_it_took_the_lane_back(
) -> None:
    """Lease calls go to the store one at a time: a lane that drains while a read is under
    way is released after it, and not at all when that read brought new rows of it."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(1, lane_of=lambda i: "A")
    ehr.pending = []
    q = shared_queue(table, ehr, clock, rescan_seconds=0)
    table.pending_reads = []
    table.add(1, lane_of=lambda i: "A")
    q.wake()
    settle(clock)
    assert len(table.pending_reads) == 1
    ehr.pending.pop(0).callback(DeliveryResult(Verdict.SENT))
    settle(clock)
    assert table.releases == []  # drained, but the read under way comes first
    table.pending_reads.pop(0).callback(None)
    settle(clock)
    assert table.releases == [] and ehr.sent == [b"MSG1", b"MSG2"]
    ehr.pending.pop(0).callback(DeliveryResult(Verdict.SENT))
    settle(clock)
    assert table.releases == [["A"]]


def test_stopping_releases_the_leases_of_lanes_still_held() -> None:
    """A node that stops hands its lanes over at once instead of after the leases run out."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(2, lane_of=lambda i: "AB"[i - 1])
    ehr.script[b"MSG1"] = [Verdict.RETRY] * 10
    ehr.script[b"MSG2"] = [Verdict.RETRY] * 10
    q = shared_queue(table, ehr, clock, rescan_seconds=0)
    done = q.stop()
    settle(clock)
    assert done.called
    assert table.releases == [["A", "B"]] and table.leases == {}


def test_a_paused_queue_lets_its_lanes_go_and_reads_from_the_start_on_resume() -> None:
    """Paused on a shared store, the queue sends nothing new and reads nothing: lanes with
    nothing in flight are released at once, a lane with a send in flight once its outcome
    is recorded (a retry leaves its row QUEUED), so other nodes deliver them meanwhile.
    Resumed, it reads from the start and takes up what is still there."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(4, lane_of=lambda i: "AABC"[i - 1])
    ehr.pending = []
    q = shared_queue(table, ehr, clock)
    assert ehr.sent == [b"MSG1", b"MSG3", b"MSG4"]
    ehr.pending.pop(2).callback(DeliveryResult(Verdict.SENT))  # C is done
    settle(clock)
    assert table.releases == [["C"]]
    reads = len(table.reads)

    q.pause()
    settle(clock)
    assert table.releases == [["C"]]  # A and B still have a send in flight
    ehr.pending.pop(1).callback(DeliveryResult(Verdict.RETRY))  # B's retry
    ehr.pending.pop(0).callback(DeliveryResult(Verdict.SENT))  # A's first row
    settle(clock)
    assert sorted(key for call in table.releases[1:] for key in call) == ["A", "B"]
    assert table.holder("A") is None and table.holder("B") is None
    assert table.status[3] is Status.QUEUED and table.rows[3].attempts == 1
    assert q._lanes == {} and q.depth == 0
    table.add(1, lane_of=lambda i: "D")
    q.wake()
    clock.advance(30)
    settle(clock)
    assert len(table.reads) == reads and ehr.sent == [b"MSG1", b"MSG3", b"MSG4"]

    ehr.pending = None
    q.resume()
    settle(clock)
    assert table.reads[reads] == 0
    assert ehr.sent[3:] == [b"MSG2", b"MSG3", b"MSG5"]
    assert set(table.status.values()) == {Status.SENT}


def test_a_read_under_way_when_the_queue_pauses_takes_no_lane() -> None:
    """Rows a read brings back after the pause are left to the store and their lanes
    released: the paused node does not sit on lanes it will not send."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    q = shared_queue(table, ehr, clock, rescan_seconds=0)
    table.pending_reads = []
    table.add(2, lane_of=lambda i: "AB"[i - 1])
    q.wake()
    settle(clock)
    q.pause()
    table.pending_reads.pop(0).callback(None)
    settle(clock)
    assert ehr.sent == [] and q._lanes == {}
    assert sorted(key for call in table.releases for key in call) == ["A", "B"]
    assert table.holder("A") is None and table.holder("B") is None


def test_alone_the_queue_makes_no_lease_calls() -> None:
    """Without a shared store there are no renewals, releases or rows left out of a read."""
    clock, ehr = task.Clock(), ScriptedEHR()
    table = SharedTable(clock)
    table.add(3, lane_of=lambda i: f"P{i}")
    ehr.script[b"MSG1"] = [Verdict.RETRY] * 100
    q = DestinationQueue("ch", ehr, fetch=table, record=table.record, clock=clock,
                         policy=RetryPolicy(1, 2, 60, 0), rng=random.Random(1),
                         rescan_seconds=5, shared=False)
    q.start()
    for _ in range(60):
        clock.advance(1)
        settle(clock)
    q.stop()
    settle(clock)
    assert table.renewals == [] and table.releases == []
    assert ehr.sent.count(b"MSG2") == 1 and ehr.sent.count(b"MSG3") == 1
