"""The durable queue in the store, on SQLite and PostgreSQL: routing writes deliveries,
outcomes re-summarise messages, reprocess re-queues, and nodes share lanes safely."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from engine.store import store as store_module
from engine.store.deliveries import DeliveryOutcome, NewDelivery, Routing, summarise
from engine.store.status import ContentKind, Status
from engine.store.store import Store, now_us, open_store
from tests.engine.test_store import incoming


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    s = open_store(store_url)
    yield s
    s.close()


def routed(store: Store, n: int, lanes: tuple[str, ...] = ("",)) -> list[int]:
    stored = store.commit_batch([incoming(f"C{i}") for i in range(n)])
    store.commit_batch([], routings=[
        Routing(s.id, "inbound", Status.QUEUED, deliveries=[
            NewDelivery("ehr", b"OUT%d" % s.id, lanes[i % len(lanes)]),
            NewDelivery("archive", None, status=Status.FILTERED, reason="not for archive")])
        for i, s in enumerate(stored)])
    return [s.id for s in stored]


def outcome(row, status: Status, attempts: int = 1, **kw) -> DeliveryOutcome:
    return DeliveryOutcome(row.id, row.message_id, "inbound", "ehr", status, attempts,
                           now_us(), now_us(), **kw)


def test_routing_queues_deliveries_with_their_payloads(store: Store) -> None:
    """QUEUED rows come back in arrival order with payload and header facts."""
    ids = routed(store, 3)
    claim = store.claim("inbound", "ehr", node="a")
    rows, held = claim.rows, claim.held
    assert [r.message_id for r in rows] == ids
    assert [r.payload for r in rows] == [b"OUT%d" % i for i in ids]
    assert rows[0].control_id == "C0" and held == set()
    assert {r["status"] for r in store.list_messages()} == {"QUEUED"}
    assert [d["status"] for d in store.deliveries_of(ids[0])] == ["QUEUED", "FILTERED"]
    assert store.queue_depths() == {("inbound", "ehr"): 3}
    assert store.claim("inbound", "ehr", node="a", after_id=rows[1].id).rows[0].id == rows[2].id


def test_final_deliveries_are_the_sent_and_dead_lettered_ones(store: Store) -> None:
    """What a node awaiting `after_delivery` messages reads: settled rows only, of the
    messages it asks about, whoever recorded them."""
    ids = routed(store, 3)
    rows = store.claim("inbound", "ehr", node="a").rows
    assert store.final_deliveries(ids) == []
    store.commit_batch([], outcomes=[outcome(rows[0], Status.SENT),
                                     outcome(rows[1], Status.ERROR, 3, error="AR")])
    assert sorted(store.final_deliveries(ids)) == [(ids[0], "ehr", "SENT"),
                                                   (ids[1], "ehr", "ERROR")]
    assert store.final_deliveries([ids[1], ids[2]]) == [(ids[1], "ehr", "ERROR")]
    assert store.final_deliveries([]) == []


def test_outcomes_summarise_the_message_and_keep_the_response(store: Store) -> None:
    """SENT everywhere → message SENT; a dead letter → ERROR with the delivery's error."""
    ids = routed(store, 2)
    rows = store.claim("inbound", "ehr", node="a").rows
    store.commit_batch([], outcomes=[
        outcome(rows[0], Status.SENT, response=b"MSA|AA|C0"),
        outcome(rows[1], Status.ERROR, 3, error="AR", held=True)])
    by_id = {m["id"]: m for m in store.list_messages()}
    assert by_id[ids[0]]["status"] == "SENT" and by_id[ids[1]]["status"] == "ERROR"
    assert store.content(ids[0], ContentKind.RESPONSE) == b"MSA|AA|C0"
    (ehr, _) = store.deliveries_of(ids[1])
    assert ehr["attempts"] == 3 and ehr["last_error"] == "AR" and ehr["held"] == 1
    assert store.held_lanes("inbound", "ehr") == {""}
    actions = [e["action"] for e in store.audit_trail(ids[1])]
    assert actions == ["message.received", "message.routed", "delivery.error",
                       "message.status"]
    assert store.verify_audit()[1] is None


def test_reprocess_requeues_dead_letters_and_reroutes_the_unrouted(store: Store) -> None:
    """ERROR deliveries go back to QUEUED; an ERROR from a step is routed again."""
    ids = routed(store, 1)
    rows = store.claim("inbound", "ehr", node="a").rows
    store.commit_batch([], outcomes=[outcome(rows[0], Status.ERROR, 10, error="timeout",
                                             held=True)])
    (failed_step,) = store.commit_batch([incoming("X1")])
    store.commit_batch([], routings=[Routing(failed_step.id, "inbound", Status.ERROR,
                                             "step t[0] failed", "traceback…")])
    requeued, reroute = store.reprocess([ids[0], failed_step.id], actor="operator")
    assert requeued == [ids[0]] and reroute == [failed_step.id]
    by_id = {m["id"]: m for m in store.list_messages()}
    assert by_id[ids[0]]["status"] == "QUEUED"
    assert by_id[failed_step.id]["status"] == "RECEIVED" and by_id[failed_step.id]["error"] is None
    (row,) = store.claim("inbound", "ehr", node="a").rows
    assert row.attempts == 0 and store.held_lanes("inbound", "ehr") == set()
    assert store.audit_trail(ids[0])[-1]["actor"] == "operator"


def test_summary_prefers_queued_then_error_then_sent() -> None:
    """A message is as far along as its slowest delivery."""
    assert summarise(["SENT", "QUEUED"]) is Status.QUEUED
    assert summarise(["SENT", "ERROR"]) is Status.ERROR
    assert summarise(["SENT", "FILTERED"]) is Status.SENT
    assert summarise(["FILTERED"]) is Status.FILTERED


def test_a_lane_is_held_by_one_node_at_a_time(postgres_url: str) -> None:
    """On PostgreSQL two nodes never both get rows of the same lane while a lease lasts."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        routed(a, 6, lanes=("P1", "P2"))
        rows_a = a.claim("inbound", "ehr", node="a", lease_seconds=30).rows
        assert {r.lane_key for r in rows_a} == {"P1", "P2"}
        rows_b = b.claim("inbound", "ehr", node="b", lease_seconds=30).rows
        assert rows_b == []
        again = a.claim("inbound", "ehr", node="a", lease_seconds=30).rows
        assert len(again) == 6
    finally:
        a.close()
        b.close()


def test_an_expired_lease_lets_another_node_take_the_lane(postgres_url: str) -> None:
    """A node that stops renewing (crashed) loses its lanes when the lease runs out."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        routed(a, 2, lanes=("P1",))
        assert len(a.claim("inbound", "ehr", node="a", lease_seconds=0.000001).rows) == 2
        assert len(b.claim("inbound", "ehr", node="b", lease_seconds=30).rows) == 2
        assert a.claim("inbound", "ehr", node="a", lease_seconds=30).rows == []
    finally:
        a.close()
        b.close()


def test_a_locked_row_ends_the_claim_so_order_holds(postgres_url: str) -> None:
    """SKIP LOCKED skips a row another transaction holds, and the claim ends before it: its
    position stays below the row, so no later row of its lane can be taken first."""
    store = open_store(postgres_url)
    try:
        routed(store, 4, lanes=("P1", "P2"))
        rows = store.claim("inbound", "ehr", node="a").rows
        second_p1 = [r for r in rows if r.lane_key == "P1"][1]
        with store.engine.connect() as other:
            other.exec_driver_sql("SELECT id FROM deliveries WHERE id = %s FOR UPDATE",
                                  (second_p1.id,))
            claimed = store.claim("inbound", "ehr", node="a", limit=4)
            other.rollback()
        assert [r.id for r in claimed.rows] == [r.id for r in rows if r.id < second_p1.id]
        assert [r.lane_key for r in claimed.rows] == ["P1", "P2"]
        assert claimed.position == max(r.id for r in rows if r.id < second_p1.id)
        assert not claimed.more
        assert len(store.claim("inbound", "ehr", node="a").rows) == 4
    finally:
        store.close()


def routed_in_lanes(store: Store, lanes: list[str], prefix: str = "L") -> list[int]:
    """One message per entry of `lanes`, routed to `ehr` in that lane, in that order."""
    stored = store.commit_batch([incoming(f"{prefix}{i}") for i in range(len(lanes))])
    store.commit_batch([], routings=[
        Routing(s.id, "inbound", Status.QUEUED, deliveries=[
            NewDelivery("ehr", b"OUT%d" % s.id, lane)])
        for s, lane in zip(stored, lanes, strict=True)])
    return [s.id for s in stored]


def lease_rows(store: Store) -> dict[str, str]:
    with store.engine.connect() as conn:
        return dict(conn.exec_driver_sql("SELECT lane_key, node FROM lane_leases").all())


def test_a_claim_says_how_far_it_read_and_whether_to_read_on(store: Store) -> None:
    """A full read says there may be more and where it stopped; the last read says not."""
    ids = routed(store, 3)
    first = store.claim("inbound", "ehr", node="a", limit=2)
    assert [r.message_id for r in first.rows] == ids[:2]
    assert first.position == first.rows[-1].id and first.more
    rest = store.claim("inbound", "ehr", node="a", after_id=first.position, limit=2)
    assert [r.message_id for r in rest.rows] == ids[2:]
    assert rest.position == rest.rows[-1].id and not rest.more
    empty = store.claim("inbound", "ehr", node="a", after_id=rest.position)
    assert empty.rows == [] and empty.position == rest.position and not empty.more


def test_alone_a_store_keeps_no_leases(tmp_path) -> None:
    """SQLite has one node: renewing answers every lane, releasing does nothing, and no
    claim writes a lease."""
    store = open_store(f"sqlite:///{tmp_path / 'one.db'}")
    try:
        routed_in_lanes(store, ["P1", "P2"])
        assert len(store.claim("inbound", "ehr", node="a").rows) == 2
        assert store.renew_leases("inbound", "ehr", node="a", lanes=["P1", "P9"]) == {
            "P1", "P9"}
        store.release_leases("inbound", "ehr", node="a", lanes=["P1"])
        assert lease_rows(store) == {}
    finally:
        store.close()


def test_a_claim_reads_past_lanes_another_node_holds(postgres_url: str) -> None:
    """Node a holds lane BIG with more rows than one read; node b's reads move past them
    to the lanes behind, and the rows of BIG come back to b at a read from the start
    once the lane is free."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        routed_in_lanes(a, ["BIG"] * 5 + ["P1", "P2"])
        assert len(a.claim("inbound", "ehr", node="a", limit=5).rows) == 5
        first = b.claim("inbound", "ehr", node="b", limit=3)
        assert first.rows == [] and first.others == {"BIG"} and first.more
        second = b.claim("inbound", "ehr", node="b", after_id=first.position, limit=3)
        assert [r.lane_key for r in second.rows] == ["P1"]
        assert second.others == {"BIG"} and second.more
        assert second.rows[0].payload == b"OUT%d" % second.rows[0].message_id
        third = b.claim("inbound", "ehr", node="b", after_id=second.position, limit=3)
        assert [r.lane_key for r in third.rows] == ["P2"] and not third.more
        a.release_leases("inbound", "ehr", node="a", lanes=["BIG"])
        again = b.claim("inbound", "ehr", node="b", limit=10)
        assert [r.lane_key for r in again.rows] == ["BIG"] * 5 + ["P1", "P2"]
    finally:
        a.close()
        b.close()


def test_rows_the_node_holds_are_not_given_again(postgres_url: str) -> None:
    """A read from the start over rows the queue holds (`have`) gives only the others,
    and still renews their lanes' leases."""
    store = open_store(postgres_url)
    try:
        routed_in_lanes(store, ["P1", "P2", "P1"])
        rows = store.claim("inbound", "ehr", node="a").rows
        again = store.claim("inbound", "ehr", node="a", have=frozenset(r.id for r in rows[:2]))
        assert [r.id for r in again.rows] == [rows[2].id]
        assert again.position == rows[2].id and lease_rows(store) == {"P1": "a", "P2": "a"}
    finally:
        store.close()


def test_the_position_stops_before_a_message_not_routed_yet(postgres_url: str) -> None:
    """A message stored but not routed yet may belong before the rows read after it: the
    position does not pass it, and no read on is asked for."""
    store = open_store(postgres_url)
    try:
        first, waiting, last = store.commit_batch([incoming(f"C{i}") for i in range(3)])
        store.commit_batch([], routings=[
            Routing(s.id, "inbound", Status.QUEUED, deliveries=[NewDelivery("ehr", b"x", "P1")])
            for s in (first, last)])
        claim = store.claim("inbound", "ehr", node="a", limit=2)
        assert [r.message_id for r in claim.rows] == [first.id]
        assert claim.position == claim.rows[0].id and not claim.more
        assert waiting.id not in [r.message_id for r in claim.rows]
    finally:
        store.close()


def test_renewing_keeps_only_the_leases_this_node_still_holds(postgres_url: str) -> None:
    """Renewal extends this node's leases, also one that ran out but that no one took; a
    lane another node took, or never held here, is not renewed."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        routed_in_lanes(a, ["P1", "P2", "P3"])
        a.claim("inbound", "ehr", node="a", lease_seconds=0.000001)
        assert b.claim("inbound", "ehr", node="b", after_id=0, limit=1).rows[0].lane_key == "P1"
        kept = a.renew_leases("inbound", "ehr", node="a", lanes=["P1", "P2", "P3", "P9"])
        assert kept == {"P2", "P3"}
        assert lease_rows(a) == {"P1": "b", "P2": "a", "P3": "a"}
        assert b.claim("inbound", "ehr", node="b").others == {"P2", "P3"}
    finally:
        a.close()
        b.close()


def test_releasing_hands_a_lane_over_at_once(postgres_url: str) -> None:
    """A released lane goes to the next node that reads it; a node cannot release a lease
    it does not hold."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        routed_in_lanes(a, ["P1", "P1"])
        assert len(a.claim("inbound", "ehr", node="a").rows) == 2
        b.release_leases("inbound", "ehr", node="b", lanes=["P1"])
        assert b.claim("inbound", "ehr", node="b").rows == []
        a.release_leases("inbound", "ehr", node="a", lanes=["P1"])
        assert len(b.claim("inbound", "ehr", node="b").rows) == 2
        assert lease_rows(a) == {"P1": "b"}
    finally:
        a.close()
        b.close()


def test_rows_settled_while_a_claim_takes_their_lane_are_not_given_again(
        postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Node b reads the queue; before it takes lane P1's lease, node a (which held it)
    sends the first row, retries the second, records both and releases the lane. b's
    read still has them QUEUED as they were: the claim gives only the retried row, with
    the attempts and next attempt a recorded, never the row already sent."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        routed_in_lanes(a, ["P1", "P1"])
        sent, retried = a.claim("inbound", "ehr", node="a").rows
        later = now_us() + 60_000_000
        read_queue = store_module.fetch_queued

        def a_settles_after_the_read(*args, **kwargs):
            rows = read_queue(*args, **kwargs)
            assert [r.id for r in rows] == [sent.id, retried.id]
            a.commit_batch([], outcomes=[
                outcome(sent, Status.SENT),
                DeliveryOutcome(retried.id, retried.message_id, "inbound", "ehr",
                                Status.QUEUED, 1, later, now_us(), "retry")])
            a.release_leases("inbound", "ehr", node="a", lanes=["P1"])
            return rows

        monkeypatch.setattr(store_module, "fetch_queued", a_settles_after_the_read)
        (row,) = b.claim("inbound", "ehr", node="b").rows
        assert row.id == retried.id and row.payload == retried.payload
        assert (row.attempts, row.next_attempt_at) == (1, later)
        assert row.first_attempt_at is not None
    finally:
        a.close()
        b.close()


def test_a_message_is_routed_once_even_when_two_nodes_route_it(store_url: str) -> None:
    """A node starting up routes every RECEIVED message, also one a live node routes at
    the same time: whichever routing commits second finds the message routed and is
    dropped, so there is one set of deliveries and one `message.routed`."""
    a, b = open_store(store_url), open_store(store_url)
    try:
        (first,) = a.commit_batch([incoming("C1")])
        assert b.pending_routing() == [(first.id, "inbound")]

        def routing(payload: bytes) -> Routing:
            return Routing(first.id, "inbound", Status.QUEUED,
                           deliveries=[NewDelivery("ehr", payload, "P1")])

        a.commit_batch([], routings=[routing(b"FROM A")])
        b.commit_batch([], routings=[routing(b"FROM B")])
        assert [d["status"] for d in a.deliveries_of(first.id)] == ["QUEUED"]
        (row,) = a.claim("inbound", "ehr", node="a").rows
        assert row.payload == b"FROM A"
        actions = [e["action"] for e in a.audit_trail(first.id)]
        assert actions == ["message.received", "message.routed"]
        assert a.verify_audit()[1] is None
    finally:
        a.close()
        b.close()
