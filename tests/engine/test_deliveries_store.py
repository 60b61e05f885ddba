"""The durable queue in the store, on SQLite and PostgreSQL: routing writes deliveries,
outcomes re-summarise messages, reprocess re-queues, and nodes share lanes safely."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

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
    rows, held = store.claim("inbound", "ehr", node="a")
    assert [r.message_id for r in rows] == ids
    assert [r.payload for r in rows] == [b"OUT%d" % i for i in ids]
    assert rows[0].control_id == "C0" and held == set()
    assert {r["status"] for r in store.list_messages()} == {"QUEUED"}
    assert [d["status"] for d in store.deliveries_of(ids[0])] == ["QUEUED", "FILTERED"]
    assert store.queue_depths() == {("inbound", "ehr"): 3}
    assert store.claim("inbound", "ehr", node="a", after_id=rows[1].id)[0][0].id == rows[2].id


def test_outcomes_summarise_the_message_and_keep_the_response(store: Store) -> None:
    """SENT everywhere → message SENT; a dead letter → ERROR with the delivery's error."""
    ids = routed(store, 2)
    rows, _ = store.claim("inbound", "ehr", node="a")
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
    rows, _ = store.claim("inbound", "ehr", node="a")
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
    (row,) = store.claim("inbound", "ehr", node="a")[0]
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
        rows_a, _ = a.claim("inbound", "ehr", node="a", lease_seconds=30)
        assert {r.lane_key for r in rows_a} == {"P1", "P2"}
        rows_b, _ = b.claim("inbound", "ehr", node="b", lease_seconds=30)
        assert rows_b == []
        again, _ = a.claim("inbound", "ehr", node="a", lease_seconds=30)
        assert len(again) == 6
    finally:
        a.close()
        b.close()


def test_an_expired_lease_lets_another_node_take_the_lane(postgres_url: str) -> None:
    """A node that stops renewing (crashed) loses its lanes when the lease runs out."""
    a, b = open_store(postgres_url), open_store(postgres_url)
    try:
        routed(a, 2, lanes=("P1",))
        assert len(a.claim("inbound", "ehr", node="a", lease_seconds=0.000001)[0]) == 2
        assert len(b.claim("inbound", "ehr", node="b", lease_seconds=30)[0]) == 2
        assert a.claim("inbound", "ehr", node="a", lease_seconds=30)[0] == []
    finally:
        a.close()
        b.close()


def test_a_locked_row_ends_the_claim_so_order_holds(postgres_url: str) -> None:
    """SKIP LOCKED skips a row another transaction holds, and the claim ends before it: the
    queue's cursor stays below the row, so no later row of its lane can be taken first."""
    store = open_store(postgres_url)
    try:
        routed(store, 4, lanes=("P1", "P2"))
        rows, _ = store.claim("inbound", "ehr", node="a")
        second_p1 = [r for r in rows if r.lane_key == "P1"][1]
        with store.engine.connect() as other:
            other.exec_driver_sql("SELECT id FROM deliveries WHERE id = %s FOR UPDATE",
                                  (second_p1.id,))
            claimed, _ = store.claim("inbound", "ehr", node="a")
            other.rollback()
        assert [r.id for r in claimed] == [r.id for r in rows if r.id < second_p1.id]
        assert [r.lane_key for r in claimed] == ["P1", "P2"]
        assert len(store.claim("inbound", "ehr", node="a")[0]) == 4
    finally:
        store.close()
