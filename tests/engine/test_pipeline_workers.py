"""Pipeline workers: the frames, the child's answers, real child processes, the router's use."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any, ClassVar

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from channels.catalog import load_channel
from channels.hooks import HookLoader
from channels.pipeline import ChannelPipeline, Decision, Verdict
from channels.transforms import PythonStep
from engine.router import WORKER_WAIT_SECONDS, Router
from engine.store.status import Status
from engine.workers.child import Defect, Worker
from engine.workers.framing import FrameReader, encode
from engine.workers.pool import (
    SOCKET_BUFFER_BYTES,
    PipelineWorkers,
    WorkerEnded,
    WorkerOverdue,
    WorkersUnavailable,
    _Child,
)
from tests.support import REPO

CHANNEL = REPO / "conf" / "channels" / "inbound.yaml"
CORPUS = REPO.parent / "shared" / "corpus"


def corpus_messages(limit: int = 12) -> list[bytes]:
    files = sorted(CORPUS.glob("pcd01-*/*.hl7"))[:limit]
    assert files, "the shared corpus is missing"
    return [f.read_bytes().replace(b"\r\n", b"\r").replace(b"\n", b"\r") for f in files]


def inbound_config() -> Any:
    loaded, _ = load_channel(CHANNEL)
    return loaded.config, loaded.pipeline


# -- frames --------------------------------------------------------------------------------


@given(st.lists(st.binary(max_size=300), min_size=1, max_size=5), st.data())
def test_frames_come_out_whole_however_the_bytes_are_split(payloads: list[bytes],
                                                           data: Any) -> None:
    stream = b"".join(encode(("decided", p)) for p in payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    reader, got = FrameReader(), []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        got.extend(reader.feed(stream[start:end]))
    assert got == [("decided", p) for p in payloads]
    assert reader.pending == 0


# -- the child's side, in this process -------------------------------------------------------


def test_a_worker_decides_exactly_as_the_engine_would() -> None:
    config, pipeline = inbound_config()
    worker = Worker()
    assert worker.handle(("configure", {config.name: config})) is None
    messages = corpus_messages()
    kind, answers = worker.handle(("decide", [(i, config.name, raw)
                                              for i, raw in enumerate(messages)]))
    assert kind == "decided"
    assert answers == [pipeline.run(raw) for raw in messages]
    assert any(a.verdict is Verdict.QUEUED for a in answers)


def test_unknown_channels_and_defects_are_answered_not_raised() -> None:
    class Broken:
        def run(self, raw: bytes) -> Decision:
            raise RuntimeError("a defect in a step")

    worker = Worker()
    worker._pipelines = {"broken": Broken()}
    _, answers = worker.handle(("decide", [(1, "broken", b"MSH|x"), (2, "gone", b"MSH|y")]))
    assert answers == [Defect("RuntimeError"), None]


# -- real child processes --------------------------------------------------------------------


class PipelineWorkersTests(unittest.TestCase):
    """Worker processes started by the reactor, as the engine starts them."""

    def setUp(self) -> None:
        self.config, self.pipeline = inbound_config()
        self.configs = {self.config.name: self.config}
        self.workers = PipelineWorkers(reactor, 2, lambda: self.configs,
                                       restart_seconds=(0.1,))
        self.workers.start()
        self.addCleanup(self.workers.stop)

    @defer.inlineCallbacks
    def wait_ready(self, count: int) -> Any:
        for _ in range(600):
            if self.workers.ready >= count:
                return
            yield task.deferLater(reactor, 0.05, lambda: None)
        self.fail(f"{count} workers not ready ({self.workers.ready})")

    @defer.inlineCallbacks
    def test_batches_are_decided_in_order_across_workers(self) -> Any:
        yield self.wait_ready(2)
        messages = corpus_messages() * 3
        answers = yield self.workers.decide([(i, self.config.name, raw)
                                             for i, raw in enumerate(messages)])
        self.assertEqual(answers, [self.pipeline.run(raw) for raw in messages])

    @defer.inlineCallbacks
    def test_a_batch_of_megabytes_crosses_whole(self) -> Any:
        """Requests and answers far larger than the socket's buffers arrive complete."""
        yield self.wait_ready(2)
        messages = [raw + f"NTE|1||copy {i}\r".encode()
                    for i, raw in enumerate(corpus_messages() * 300)]
        items = [(i, self.config.name, raw) for i, raw in enumerate(messages)]
        assert len(encode(("decide", items))) > SOCKET_BUFFER_BYTES
        answers = yield self.workers.decide(items)
        self.assertEqual(answers, [self.pipeline.run(raw) for raw in messages])

    @defer.inlineCallbacks
    def test_what_a_hook_prints_stays_out_of_the_frames(self) -> Any:
        """A hook writing to stdout in the worker does not corrupt the answers."""
        yield self.wait_ready(2)
        config = self.config.model_copy(update={"transformer": [
            *self.config.transformer,
            PythonStep(python="tests.channels.hook_samples:chatty_tag_ward")]})
        self.configs = {config.name: config}
        pipeline = ChannelPipeline(config, HookLoader())
        messages = corpus_messages() * 4
        answers = yield self.workers.decide([(i, config.name, raw)
                                             for i, raw in enumerate(messages)])
        self.assertEqual(answers, [pipeline.run(raw) for raw in messages])
        self.assertTrue(all(b"HOOKED" in a.outputs[0].payload for a in answers
                            if a.verdict is Verdict.QUEUED))
        self.assertEqual(self.workers.ready, 2)

    @defer.inlineCallbacks
    def test_a_hook_that_ends_its_worker_fails_the_batch_as_ended(self) -> Any:
        """The batch in flight fails with WorkerEnded naming its messages and the exit; the
        worker is replaced and decides the next batch."""
        yield self.wait_ready(2)
        config = self.config.model_copy(update={"transformer": [
            *self.config.transformer,
            PythonStep(python="tests.channels.hook_samples:ends_the_process")]})
        self.configs = {config.name: config}
        raw = corpus_messages(1)[0]
        first, rest = raw.split(b"\r", 1)
        fields = first.split(b"|")
        fields[9] = b"END-THE-PROCESS"
        fatal = b"|".join(fields) + b"\r" + rest
        ended = yield self.assertFailure(
            self.workers.decide([(1, config.name, fatal), (2, config.name, raw)]), WorkerEnded)
        self.assertEqual((ended.message_ids, ended.how), ((1,), "exit 3"))
        yield self.wait_ready(2)
        both = yield self.assertFailure(
            self.workers.decide([(4, config.name, fatal), (5, config.name, fatal)]),
            WorkerEnded)
        self.assertEqual(both.message_ids, (4, 5))  # one part per worker, both lost
        yield self.wait_ready(2)
        answers = yield self.workers.decide([(3, config.name, raw)])
        self.assertIn(b"HOOKED", answers[0].outputs[0].payload)

    @defer.inlineCallbacks
    def test_a_worker_that_dies_is_replaced(self) -> Any:
        """Its batch fails with WorkersUnavailable (WorkerEnded when it was in flight)."""
        yield self.wait_ready(2)
        for child in self.workers._children:
            os.kill(child.transport.pid, signal.SIGKILL)
        messages = corpus_messages(2)
        failed = self.workers.decide([(1, self.config.name, messages[0])])
        yield self.assertFailure(failed, WorkersUnavailable)
        yield self.wait_ready(2)
        answers = yield self.workers.decide([(1, self.config.name, messages[1])])
        self.assertEqual(answers, [self.pipeline.run(messages[1])])

    @defer.inlineCallbacks
    def test_a_redeployed_channel_reaches_the_workers(self) -> Any:
        yield self.wait_ready(2)
        raw = corpus_messages(1)[0]
        self.configs = {}
        answers = yield self.workers.decide([(1, self.config.name, raw)])
        self.assertEqual(answers, [None])
        self.configs = {self.config.name: self.config.model_copy()}
        answers = yield self.workers.decide([(1, self.config.name, raw)])
        self.assertEqual(answers, [self.pipeline.run(raw)])

    @defer.inlineCallbacks
    def test_stopping_ends_the_processes(self) -> Any:
        yield self.wait_ready(2)
        pids = [child.transport.pid for child in self.workers._children]
        yield self.workers.stop()
        for pid in pids:
            self.assertFalse(_alive(pid))
        yield self.assertFailure(self.workers.decide([(1, "x", b"")]), WorkersUnavailable)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


# -- the router with workers ---------------------------------------------------------------------


class FakeWorkers:
    """Answers with given decisions, or is unavailable; remembers what it was asked.

    `answers` are used one per batch (the last one for every batch after)."""

    def __init__(self, *answers: Any) -> None:
        self.answers = list(answers)
        self.asked: list[list[tuple[int, str, bytes]]] = []
        self.ready: defer.Deferred[None] = defer.Deferred()
        self.waited: list[float] = []

    def decide(self, items: list[tuple[int, str, bytes]]) -> defer.Deferred[list[Any]]:
        self.asked.append(list(items))
        answer = self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]
        if isinstance(answer, Exception):
            return defer.fail(answer)
        return defer.succeed([answer(item) for item in items])

    def when_ready(self, timeout: float) -> defer.Deferred[None]:
        self.waited.append(timeout)
        return self.ready


class NeverHere:
    """A pipeline that must not be run in the engine process."""

    dedupe_window_seconds = None

    def prepare(self, raw: bytes) -> Any:
        raise AssertionError("decided in the engine process")


def route_all(router: Router, clock: task.Clock, items: list[tuple[int, str, bytes]]) -> None:
    for item in items:
        router.route(*item)
    clock.advance(0)


def test_the_router_records_what_the_workers_decided() -> None:
    recorded: list[Any] = []
    clock = task.Clock()
    decision = Decision(Verdict.FILTERED, "filtered by the channel")
    workers = FakeWorkers(lambda item: decision)
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock,
                    lambda channel: NeverHere(), workers=workers)  # type: ignore[arg-type]
    route_all(router, clock, [(1, "inbound", b"a"), (2, "inbound", b"b")])
    assert [(r.message_id, r.status, r.reason) for r in recorded] == [
        (1, Status.FILTERED, "filtered by the channel"),
        (2, Status.FILTERED, "filtered by the channel")]
    assert workers.asked == [[(1, "inbound", b"a"), (2, "inbound", b"b")]]


def test_without_workers_the_router_decides_itself() -> None:
    recorded: list[Any] = []
    clock = task.Clock()
    config, pipeline = inbound_config()
    raw = corpus_messages(1)[0]
    workers = FakeWorkers(WorkersUnavailable("none running"))
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock,
                    lambda channel: pipeline, workers=workers)  # type: ignore[arg-type]
    route_all(router, clock, [(7, config.name, raw)])
    expected = pipeline.run(raw)
    assert [(r.message_id, r.status.value) for r in recorded] == [(7, expected.verdict.value)]
    assert len(workers.asked) == 1


def test_messages_a_worker_never_answered_are_errors_and_not_decided_here() -> None:
    """A stuck worker's batch may hold what stuck it: those messages become ERROR (to be
    reprocessed), never run on the reactor thread; the rest of the batch is decided here."""
    recorded: list[Any] = []
    ran_here: list[bytes] = []
    clock = task.Clock()
    config, pipeline = inbound_config()
    raw = corpus_messages(1)[0]

    class Recording:
        def __getattr__(self, name: str) -> Any:
            return getattr(pipeline, name)

        def prepare(self, message: bytes) -> Any:
            ran_here.append(message)
            return pipeline.prepare(message)

    workers = FakeWorkers(WorkerOverdue([1], 60.0))
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock,
                    lambda channel: Recording(), workers=workers)  # type: ignore[arg-type]
    route_all(router, clock, [(1, config.name, b"MSH|the one that hangs"),
                              (2, config.name, raw)])
    assert ran_here == [raw]
    assert [(r.message_id, r.status.value, r.error) for r in recorded] == [
        (1, "ERROR", "pipeline gave no answer in 60 s (worker restarted)"),
        (2, pipeline.run(raw).verdict.value, None)]


class Hooked(NeverHere):
    """A pipeline with a Python hook: never to be run in the engine process."""

    hooks: ClassVar[dict[str, str]] = {"site_hooks:tag": ""}


def hooked_and_plain() -> tuple[Any, Any]:
    """A lookup giving "hooked" a hook-running pipeline and "inbound" the example's."""
    _, pipeline = inbound_config()
    return (lambda channel: Hooked() if channel == "hooked" else pipeline), pipeline


def test_a_worker_that_ended_leaves_hook_messages_error_and_decides_the_rest_here() -> None:
    """One of a hook-running channel's messages may have ended the worker: they are ERROR
    (to be reprocessed); a channel without hooks cannot have, and is decided here."""
    recorded: list[Any] = []
    clock = task.Clock()
    lookup, pipeline = hooked_and_plain()
    raw = corpus_messages(1)[0]
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock, lookup,
                    workers=FakeWorkers(WorkerEnded([1, 2], "signal 11")))  # type: ignore[arg-type]
    route_all(router, clock, [(1, "hooked", b"MSH|x"), (2, "inbound", raw)])
    text = "pipeline worker ended (signal 11) while deciding; reprocess once fixed"
    assert [(r.message_id, r.status.value, r.error) for r in recorded] == [
        (1, "ERROR", text), (2, pipeline.run(raw).verdict.value, None)]


def test_with_no_worker_running_a_batch_with_hooks_waits_for_one() -> None:
    """Nothing is recorded (or run here) until a worker is back; then it decides."""
    recorded: list[Any] = []
    clock = task.Clock()
    lookup, _ = hooked_and_plain()
    decision = Decision(Verdict.FILTERED, "filtered by the hook")
    workers = FakeWorkers(WorkersUnavailable("none running"), lambda item: decision)
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock, lookup,
                    workers=workers)  # type: ignore[arg-type]
    route_all(router, clock, [(1, "hooked", b"MSH|x")])
    route_all(router, clock, [(2, "hooked", b"MSH|y")])
    assert (recorded, workers.waited) == ([], [WORKER_WAIT_SECONDS])
    workers.ready.callback(None)
    assert [(r.message_id, r.reason) for r in recorded] == [
        (1, "filtered by the hook"), (2, "filtered by the hook")]
    assert [[mid for mid, _, _ in batch] for batch in workers.asked] == [[1], [1], [2]]


def test_when_no_worker_comes_back_hook_messages_are_errors() -> None:
    recorded: list[Any] = []
    clock = task.Clock()
    lookup, pipeline = hooked_and_plain()
    raw = corpus_messages(1)[0]
    workers = FakeWorkers(WorkersUnavailable("none running"))
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock, lookup,
                    workers=workers)  # type: ignore[arg-type]
    route_all(router, clock, [(1, "hooked", b"MSH|x"), (2, "inbound", raw)])
    workers.ready.errback(WorkersUnavailable("no pipeline worker ready in 60 s"))
    assert [(r.message_id, r.status.value, r.error) for r in recorded] == [
        (1, "ERROR", "no pipeline worker: no pipeline worker ready in 60 s; reprocess once "
                     "one runs"),
        (2, pipeline.run(raw).verdict.value, None)]


def test_waiting_for_a_worker_ends_when_one_is_ready_or_at_the_timeout() -> None:
    clock = task.Clock()
    workers = PipelineWorkers(clock, 1, dict)
    outcomes: list[Any] = []
    workers.when_ready(5).addBoth(outcomes.append)
    workers.when_ready(50).addBoth(outcomes.append)
    clock.advance(5)
    assert len(outcomes) == 1 and outcomes[0].check(WorkersUnavailable)
    child = _Child(workers)
    child.transport = type("Transport", (), {"pid": 1})()  # type: ignore[assignment]
    workers._ready(child)
    assert outcomes[1:] == [None] and not clock.getDelayedCalls()
    workers.when_ready(5).addBoth(outcomes.append)
    workers.stop()
    assert outcomes[2].check(WorkersUnavailable)


def test_a_defect_in_a_worker_is_an_error_on_the_message() -> None:
    recorded: list[Any] = []
    clock = task.Clock()
    router = Router(lambda r: recorded.extend(r) or defer.succeed(None), clock,
                    lambda channel: NeverHere(),  # type: ignore[arg-type]
                    workers=FakeWorkers(lambda item: Defect("KeyError")))  # type: ignore[arg-type]
    route_all(router, clock, [(3, "inbound", b"x")])
    assert [(r.status, r.error) for r in recorded] == [(Status.ERROR, "pipeline failed: KeyError")]


def test_channels_that_deduplicate_are_never_sent_to_workers() -> None:
    class Deduplicating(NeverHere):
        dedupe_window_seconds = 60.0

    clock = task.Clock()
    workers = FakeWorkers(lambda item: None)
    router = Router(lambda r: defer.succeed(None), clock,
                    lambda channel: Deduplicating() if channel == "pcd" else None,
                    workers=workers)  # type: ignore[arg-type]
    route_all(router, clock, [(1, "pcd", b"x")])
    assert workers.asked == []


class StuckWorkerTests(unittest.TestCase):
    """A worker that does not answer in time is ended; its batch goes back to the router."""

    @defer.inlineCallbacks
    def test_a_stuck_worker_is_replaced(self) -> Any:
        config, pipeline = inbound_config()
        workers = PipelineWorkers(reactor, 1, lambda: {config.name: config},
                                  restart_seconds=(0.1,), answer_seconds=1.0)
        workers.start()
        self.addCleanup(workers.stop)
        for _ in range(600):
            if workers.ready:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        [child] = workers._children
        os.kill(child.transport.pid, signal.SIGSTOP)  # alive, but answering nothing
        stuck = workers.decide([(1, config.name, corpus_messages(1)[0])])
        overdue = yield self.assertFailure(stuck, WorkerOverdue)
        self.assertEqual((overdue.message_ids, overdue.seconds), ((1,), 1.0))
        for _ in range(600):
            if workers.ready:
                break
            yield task.deferLater(reactor, 0.05, lambda: None)
        raw = corpus_messages(1)[0]
        answers = yield workers.decide([(2, config.name, raw)])
        self.assertEqual(answers, [pipeline.run(raw)])


def test_a_worker_whose_socket_is_gone_refuses_at_once() -> None:
    """No frame socket (the worker is ending): the batch goes back now, not after the
    answer timeout."""
    clock = task.Clock()
    child = _Child(PipelineWorkers(clock, 1, dict))
    failures: list[Any] = []
    child.decide([(1, "inbound", b"MSH|^~\\&|\r")]).addErrback(failures.append)
    assert failures and failures[0].check(WorkersUnavailable)
    assert not clock.getDelayedCalls()
