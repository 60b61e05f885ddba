"""`DeliveryWatch` on the test clock: what an `after_delivery` sender waits for, also when
another node of a shared store delivers the message."""

from __future__ import annotations

from collections.abc import Sequence

from twisted.internet import defer, task

from engine.store.deliveries import NewDelivery, Routing
from engine.store.status import Status
from engine.watch import DeliveryWatch


def queued(message_id: int, *destinations: str) -> Routing:
    return Routing(message_id, "pumps", Status.QUEUED,
                   deliveries=[NewDelivery(d, b"OUT", "") for d in destinations])


def results(d: defer.Deferred[bool]) -> list[bool]:
    fired: list[bool] = []
    d.addCallback(fired.append)
    return fired


class FakeStore:
    """Final delivery states as another node recorded them; the reads asked for."""

    def __init__(self) -> None:
        self.states: list[tuple[int, str, str]] = []
        self.reads: list[list[int]] = []
        self.fail = False

    def final_states(self, ids: list[int]) -> defer.Deferred[Sequence[tuple[int, str, str]]]:
        self.reads.append(ids)
        if self.fail:
            return defer.fail(ConnectionError("store unreachable"))
        return defer.succeed([s for s in self.states if s[0] in ids])


def test_delivered_everywhere_by_this_node_answers_true() -> None:
    clock = task.Clock()
    watch = DeliveryWatch(clock)
    fired = results(watch.wait(1, timeout=30))
    watch.routed([queued(1, "ehr", "archive")])
    watch.delivery_final(1, "ehr", Status.SENT)
    assert fired == []
    watch.delivery_final(1, "archive", Status.SENT)
    assert fired == [True]
    assert not clock.getDelayedCalls()


def test_a_dead_letter_or_the_timeout_answers_false() -> None:
    clock = task.Clock()
    watch = DeliveryWatch(clock)
    dead, late = results(watch.wait(1, timeout=30)), results(watch.wait(2, timeout=30))
    watch.routed([queued(1, "ehr"), queued(2, "ehr")])
    watch.delivery_final(1, "ehr", Status.ERROR)
    assert dead == [False] and late == []
    clock.advance(30)
    assert late == [False]


def test_a_delivery_by_another_node_is_read_from_the_store() -> None:
    """The lane was held elsewhere, so this node's queues never report the message: the
    watch finds it SENT in the store and the sender hears AA, not AE at the timeout."""
    clock, store = task.Clock(), FakeStore()
    watch = DeliveryWatch(clock, follow_seconds=0.5)
    watch.follow_store(store.final_states)
    assert store.reads == [] and not clock.getDelayedCalls()  # nothing awaited, no reads
    delivered = results(watch.wait(1, timeout=30))
    failed = results(watch.wait(2, timeout=30))
    watch.routed([queued(1, "ehr"), queued(2, "ehr")])
    clock.advance(0.5)
    assert store.reads == [[1, 2]] and delivered == failed == []
    store.states = [(1, "ehr", "SENT"), (2, "ehr", "ERROR")]
    clock.advance(0.5)
    assert delivered == [True] and failed == [False]
    clock.advance(5)
    assert store.reads == [[1, 2], [1, 2]]  # no reads once nothing is awaited


def test_a_failed_read_is_tried_again_and_stop_ends_the_reads() -> None:
    clock, store = task.Clock(), FakeStore()
    watch = DeliveryWatch(clock, follow_seconds=0.5)
    watch.follow_store(store.final_states)
    fired = results(watch.wait(1, timeout=30))
    watch.routed([queued(1, "ehr")])
    store.fail = True
    clock.advance(0.5)
    store.fail = False
    store.states = [(1, "ehr", "SENT")]
    clock.advance(0.5)
    assert fired == [True] and len(store.reads) == 2

    late = results(watch.wait(2, timeout=30))
    watch.stop()
    clock.advance(10)
    assert len(store.reads) == 2 and late == []
    clock.advance(20)
    assert late == [False]  # its timeout still answers


def test_an_outcome_read_before_the_routing_is_heard_counts() -> None:
    """The store may show another node's SENT before this node's routing callback."""
    clock, store = task.Clock(), FakeStore()
    watch = DeliveryWatch(clock, follow_seconds=0.5)
    watch.follow_store(store.final_states)
    fired = results(watch.wait(1, timeout=30))
    store.states = [(1, "ehr", "SENT")]
    clock.advance(0.5)
    assert fired == []
    watch.routed([queued(1, "ehr")])
    assert fired == [True]
