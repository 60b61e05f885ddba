"""The router's batches and its back-pressure on sources."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer, task

from channels.mllp_source import Received
from channels.pipeline import Decision, Verdict
from engine.router import MAX_BATCH, ROOM_HIGH, ROOM_LOW, ROOM_MAX_WAIT_SECONDS, Router


class HeldWorkers:
    """Decides nothing until told: each batch waits on its own Deferred."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Any], defer.Deferred[list[Any]]]] = []

    def decide(self, items: list[Any]) -> defer.Deferred[list[Any]]:
        d: defer.Deferred[list[Any]] = defer.Deferred()
        self.batches.append((list(items), d))
        return d

    def answer_next(self) -> None:
        items, d = self.batches.pop(0)
        d.callback([Decision(Verdict.FILTERED, "filtered") for _ in items])


class Pipeline:
    dedupe_window_seconds = None


def make_router() -> tuple[Router, task.Clock, HeldWorkers, list[Any]]:
    clock, workers, recorded = task.Clock(), HeldWorkers(), []
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock,
                    lambda channel: Pipeline(), workers=workers)  # type: ignore[arg-type]
    return router, clock, workers, recorded


def test_batches_are_bounded_and_recorded_in_order() -> None:
    router, clock, workers, recorded = make_router()
    for mid in range(MAX_BATCH * 2 + 5):
        router.route(mid, "inbound", b"raw")
    clock.advance(0)
    clock.advance(0)
    while workers.batches:
        assert len(workers.batches[0][0]) <= MAX_BATCH
        workers.answer_next()
        clock.advance(0)
    assert [r.message_id for r in recorded] == list(range(MAX_BATCH * 2 + 5))
    assert router.backlog == 0


def test_sources_wait_for_room_while_routing_is_behind() -> None:
    """Above the high mark `room` holds answers until the backlog is under the low mark."""
    router, clock, workers, _ = make_router()
    for mid in range(ROOM_HIGH - 1):
        router.route(mid, "inbound", b"raw")
    assert router.room() is None
    router.route(ROOM_HIGH, "inbound", b"raw")
    room = router.room()
    assert room is not None and not room.called
    clock.advance(0)
    for _ in range(6):
        clock.advance(0)
    answered = 0
    while not room.called:
        assert router.backlog > ROOM_LOW
        workers.answer_next()
        answered += 1
        clock.advance(0)
    assert router.backlog <= ROOM_LOW
    assert answered == -(-(ROOM_HIGH - ROOM_LOW) // MAX_BATCH)
    assert router.room() is None


def test_drain_decides_everything_handed_over() -> None:
    router, _, workers, recorded = make_router()
    for mid in range(MAX_BATCH + 10):
        router.route(mid, "inbound", b"raw")
    drained = router.drain()
    while workers.batches:
        workers.answer_next()
    assert drained.called
    assert len(recorded) == MAX_BATCH + 10


def test_an_answer_is_held_for_room_a_few_seconds_at_most() -> None:
    router, clock, _, _ = make_router()
    for mid in range(ROOM_HIGH):
        router.route(mid, "inbound", b"raw")
    room = router.room()
    assert room is not None
    clock.advance(ROOM_MAX_WAIT_SECONDS - 0.1)
    assert not room.called
    clock.advance(0.1)
    assert room.called


def test_ingest_answers_once_routing_has_room() -> None:
    """The commit's result reaches the source only when the router has room again."""
    from engine.ingest import Ingest
    from engine.store.status import Status
    from engine.store.store import StoredMessage

    class Writer:
        def submit(self, message: Any) -> defer.Deferred[StoredMessage]:
            return defer.succeed(StoredMessage(ROOM_HIGH + 1, "inbound", Status.RECEIVED, None))

    router, clock, workers, _ = make_router()
    for mid in range(ROOM_HIGH):
        router.route(mid, "inbound", b"raw")
    clock.advance(0)
    received = Received("inbound", 0.0, "peer", b"MSH|^~\\&|x", "AA", None, None)
    answers: list[Any] = []
    Ingest(Writer(), router)(received).addCallback(answers.append)  # type: ignore[arg-type]
    assert answers == []
    while workers.batches and not answers:
        workers.answer_next()
        clock.advance(0)
    assert router.backlog <= ROOM_LOW
    assert [a.id for a in answers] == [ROOM_HIGH + 1]
