"""Group commit on a real thread, on a real SQLite file and a real PostgreSQL database."""

from __future__ import annotations

from pathlib import Path

import pytest
from twisted.internet import defer, reactor, task
from twisted.trial import unittest

from engine.store.status import Status
from engine.store.store import IncomingMessage, Transition, now_us, open_store
from engine.writer import RECEIVING_SECONDS, GroupCommitWriter, WriterClosed
from tests.postgres import store_url_for


def incoming(n: int) -> IncomingMessage:
    return IncomingMessage("inbound", now_us(), "peer", b"MSH|^~\\&|x\r", "AA",
                           control_id=f"G{n}", sending_application="APP")


class FailingStore:
    """A store whose disk is gone: every commit raises."""

    def commit_batch(self, *args: object, **kwargs: object) -> object:
        raise OSError("disk I/O error")

    def close(self) -> None:
        pass


class GroupCommitWriterTests(unittest.TestCase):
    """On SQLite; the subclass below runs the same tests on PostgreSQL."""

    backend = "sqlite"

    @pytest.fixture(autouse=True)
    def _store_url(self, request: pytest.FixtureRequest, tmp_path: Path) -> None:
        """Trial test cases cannot be parametrized, so each backend is a subclass."""
        self.store_url = store_url_for(self.backend, request, tmp_path)

    def setUp(self) -> None:
        self.store = open_store(self.store_url)
        self.writer = GroupCommitWriter(self.store, reactor)
        self.writer.start()
        self.addCleanup(self._stop)

    def _stop(self) -> defer.Deferred[None]:
        return self.writer.stop() if not self.writer._closed else defer.succeed(None)

    @defer.inlineCallbacks
    def test_messages_arriving_together_share_commits(self) -> defer.Generator:
        """Messages submitted while a commit runs join the next one: fewer commits than messages."""
        results = yield defer.gatherResults([self.writer.submit(incoming(n)) for n in range(300)])
        self.assertEqual([r.id for r in results], list(range(1, 301)))
        self.assertLess(self.writer.commits, 300)
        self.assertEqual(len(self.store.list_messages()), 300)

    @defer.inlineCallbacks
    def test_result_fires_only_after_commit(self) -> defer.Generator:
        """When a submit's Deferred fires, another connection already sees the row."""
        stored = yield self.writer.submit(incoming(1))
        reader = open_store(str(self.store.engine.url))
        self.assertEqual([r["id"] for r in reader.list_messages()], [stored.id])
        reader.close()

    @defer.inlineCallbacks
    def test_transitions_commit(self) -> defer.Generator:
        """Status changes go through the same writer and land in the store."""
        stored = yield self.writer.submit(incoming(1))
        yield self.writer.transition([Transition(stored.id, "inbound", Status.FILTERED, "x")])
        [row] = self.store.list_messages()
        self.assertEqual(row["status"], "FILTERED")

    @defer.inlineCallbacks
    def test_changes_after_a_receipt_wait_to_share_the_next_commit(self) -> defer.Generator:
        """While messages arrive, a status change waits for the next message and goes
        into its commit instead of taking a commit (an fsync) of its own."""
        self.writer._hold_seconds = 30.0
        stored = yield self.writer.submit(incoming(1))
        commits = self.writer.commits
        changed = self.writer.transition(
            [Transition(stored.id, "inbound", Status.FILTERED, "x")])
        yield task.deferLater(reactor, 0.2, lambda: None)
        self.assertFalse(changed.called, "the change waits for the next message")
        yield self.writer.submit(incoming(2))
        yield changed
        self.assertEqual(self.writer.commits, commits + 1)
        self.assertEqual([r["status"] for r in self.store.list_messages()],
                         ["FILTERED", "RECEIVED"])

    @defer.inlineCallbacks
    def test_changes_commit_at_once_when_no_messages_arrive(self) -> defer.Generator:
        """No message committed lately: a change is not held (here it would be 30 s)."""
        self.writer._hold_seconds = 30.0
        stored = yield self.writer.submit(incoming(1))
        yield task.deferLater(reactor, RECEIVING_SECONDS * 4, lambda: None)
        yield self.writer.transition([Transition(stored.id, "inbound", Status.FILTERED, "x")])
        [row] = self.store.list_messages()
        self.assertEqual(row["status"], "FILTERED")

    test_changes_commit_at_once_when_no_messages_arrive.timeout = 20  # type: ignore[attr-defined]

    @defer.inlineCallbacks
    def test_not_delivered_answers_share_a_commit(self) -> defer.Generator:
        """AE answers given together (an EHR outage timing out many senders) are recorded
        in one commit, not one transaction each."""
        stored = yield defer.gatherResults([self.writer.submit(incoming(n)) for n in range(50)])
        commits = self.writer.commits
        yield defer.gatherResults([self.writer.answer_not_delivered([s.id]) for s in stored])
        # One commit, or two when the writer's thread was still finishing the last one.
        self.assertLessEqual(self.writer.commits, commits + 2)
        self.assertEqual({r["ack_code"] for r in self.store.list_messages()}, {"AE"})

    @defer.inlineCallbacks
    def test_stop_refuses_new_work_after_draining(self) -> defer.Generator:
        """Stopping commits what was submitted, then refuses more."""
        pending = [self.writer.submit(incoming(n)) for n in range(20)]
        yield self.writer.stop()
        results = yield defer.gatherResults(pending)
        self.assertEqual(len(results), 20)
        yield self.assertFailure(self.writer.submit(incoming(99)), WriterClosed)


class GroupCommitWriterPostgresTests(GroupCommitWriterTests):
    backend = "postgresql"


class FailingStoreTests(unittest.TestCase):
    @defer.inlineCallbacks
    def test_store_failure_reaches_every_submitter(self) -> defer.Generator:
        """If the store cannot commit, each waiting submitter gets the failure, not success."""
        writer = GroupCommitWriter(FailingStore(), reactor)  # type: ignore[arg-type]
        writer.start()
        ds = [writer.submit(incoming(n)) for n in range(3)]
        for d in ds:
            yield self.assertFailure(d, OSError)
        yield writer.stop()
        self.flushLoggedErrors(OSError)
