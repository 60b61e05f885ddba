"""The single writer: group commit without a time window.

Everything that changes the store goes through here. Work that arrives while a commit
runs waits for the next transaction, and the next commit starts as soon as the previous
one returns, so under load many messages share one fsync while a lone message is never
held back by a timer (status changes alone may be, briefly: `_hold_changes`). The
database runs on one dedicated thread; callers get Deferreds that fire on the reactor
thread after the transaction that holds their work committed.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from engine.store.deliveries import DeliveryOutcome, Routing
from engine.store.store import IncomingMessage, Store, StoredMessage, Transition
from engine.threads import DaemonThreadPool

log = Logger()
T = TypeVar("T")
HOLD_SECONDS = 0.002
"""How long status changes alone wait for a received message to share their commit."""
RECEIVING_SECONDS = 0.05
"""Messages committed this recently mean more are coming: changes alone are held."""
CommitHook = Callable[[list[StoredMessage], "Changes"], None]
"""Told of every committed batch (metrics count it); runs on the reactor thread."""


@dataclass(slots=True)
class Changes:
    """Status changes that share one transaction with whatever else is waiting."""

    transitions: list[Transition] = field(default_factory=list)
    routings: list[Routing] = field(default_factory=list)
    outcomes: list[DeliveryOutcome] = field(default_factory=list)
    not_delivered: list[int] = field(default_factory=list)
    """Messages whose sender was answered AE/CE after all (`after_delivery`)."""

    @property
    def size(self) -> int:
        return (len(self.transitions) + len(self.routings) + len(self.outcomes)
                + len(self.not_delivered))

    def extend(self, other: Changes) -> None:
        self.transitions.extend(other.transitions)
        self.routings.extend(other.routings)
        self.outcomes.extend(other.outcomes)
        self.not_delivered.extend(other.not_delivered)


class WriterClosed(Exception):
    """The writer is stopping and takes no more work."""


class GroupCommitWriter:
    """Batches store writes into as few transactions as the store's speed allows.

    The writer's thread takes the next batch itself as soon as a commit returns, so
    consecutive commits never wait for the reactor to come round; the results go back to
    the reactor thread in commit order. Work queues are shared with the reactor thread
    under one lock.
    """

    def __init__(
        self,
        store: Store,
        reactor: Any,
        *,
        max_batch: int = 512,
        threadpool: ThreadPool | None = None,
        on_commit: CommitHook | None = None,
    ) -> None:
        self._store = store
        self._reactor: IReactorTime & IReactorThreads = reactor
        self._max_batch = max_batch
        self._pool = threadpool or DaemonThreadPool(minthreads=1, maxthreads=1,
                                                    name="store-writer")
        self._own_pool = threadpool is None
        self._on_commit = on_commit
        self._lock = threading.Lock()
        self._arrived = threading.Condition(self._lock)
        """Signalled when a message is submitted (for changes held to share its commit)."""
        self._hold_seconds = HOLD_SECONDS
        self._last_receipt = float("-inf")
        """When the last commit with received messages returned (writer's thread)."""
        self._incoming: list[tuple[IncomingMessage, defer.Deferred[StoredMessage]]] = []
        self._changes: deque[tuple[Changes, defer.Deferred[None]]] = deque()
        self._calls: deque[tuple[Callable[..., Any], tuple[Any, ...],
                                 defer.Deferred[Any]]] = deque()
        self._pending_changes = 0
        self._running = False
        """A job on the writer's thread is taking batches (guarded by `_lock`)."""
        self._scheduled = False
        self._unanswered = 0
        """Work handed in whose Deferred has not fired yet (reactor thread only)."""
        self._closed = False
        self._idle: list[defer.Deferred[None]] = []
        self.commits = 0
        self.messages_written = 0
        self.transitions_written = 0

    def start(self) -> None:
        """Start the writer's thread."""
        if self._own_pool:
            self._pool.start()

    def submit(self, message: IncomingMessage) -> defer.Deferred[StoredMessage]:
        """Queue a received message; fires with its stored id once committed."""
        if self._closed:
            return defer.fail(WriterClosed("the store writer is stopping"))
        d: defer.Deferred[StoredMessage] = defer.Deferred()
        self._unanswered += 1
        with self._lock:
            self._incoming.append((message, d))
            self._arrived.notify()
        self._kick()
        return d

    def transition(self, transitions: Sequence[Transition]) -> defer.Deferred[None]:
        """Queue status changes; fires once they are committed."""
        return self._queue_changes(Changes(transitions=list(transitions)))

    def route(self, routings: Sequence[Routing]) -> defer.Deferred[None]:
        """Queue routing decisions (status, deliveries, payloads); fires once committed."""
        return self._queue_changes(Changes(routings=list(routings)))

    def record(self, outcomes: Sequence[DeliveryOutcome]) -> defer.Deferred[None]:
        """Queue delivery outcomes; fires once committed."""
        return self._queue_changes(Changes(outcomes=list(outcomes)))

    def answer_not_delivered(self, message_ids: Sequence[int]) -> defer.Deferred[None]:
        """Queue the record that these messages' senders hear AE/CE (delivery failed or
        timed out); fires once committed, before the answer goes out."""
        return self._queue_changes(Changes(not_delivered=list(message_ids)))

    def call(self, fn: Callable[..., T], *args: Any) -> defer.Deferred[T]:
        """Run `fn(*args)` on the writer's thread, between two commits (e.g. reprocess)."""
        if self._closed:
            return defer.fail(WriterClosed("the store writer is stopping"))
        d: defer.Deferred[T] = defer.Deferred()
        self._unanswered += 1
        with self._lock:
            self._calls.append((fn, args, d))
        self._kick()
        return d

    def _queue_changes(self, changes: Changes) -> defer.Deferred[None]:
        if self._closed:
            return defer.fail(WriterClosed("the store writer is stopping"))
        d: defer.Deferred[None] = defer.Deferred()
        self._unanswered += 1
        with self._lock:
            self._changes.append((changes, d))
            self._pending_changes += changes.size
        self._kick()
        return d

    @property
    def running(self) -> bool:
        """Taking work and its thread is up (readiness)."""
        return not self._closed and bool(self._pool.started)

    @property
    def backlog(self) -> int:
        """Work waiting for a transaction (a gauge for back-pressure and metrics)."""
        return len(self._incoming) + self._pending_changes

    # -- the reactor side ----------------------------------------------------------------

    def _kick(self) -> None:
        # callLater(0) lets everything that arrived in this reactor turn join the first
        # batch after a quiet spell; a running job picks new work up by itself.
        if self._scheduled or self._running:
            return
        self._scheduled = True
        self._reactor.callLater(0, self._start_job)

    def _start_job(self) -> None:
        self._scheduled = False
        with self._lock:
            if self._running or not (self._incoming or self._changes or self._calls):
                return
            self._running = True
        self._pool.callInThread(self._work)

    # -- the writer's thread ---------------------------------------------------------------

    def _work(self) -> None:
        """Commit batch after batch until the queues are empty, then hand back the thread."""
        call_back = self._reactor.callFromThread
        while True:
            with self._lock:
                if self._hold_changes():
                    self._arrived.wait(self._hold_seconds)
                incoming = self._incoming[: self._max_batch]
                del self._incoming[: self._max_batch]
                changes = self._take_changes()
                calls = list(self._calls)
                self._calls.clear()
                if not (incoming or changes or calls):
                    self._running = False
                    return
            if incoming or changes:
                merged = Changes()
                for c, _ in changes:
                    merged.extend(c)
                try:
                    stored = self._store.commit_batch(
                        [m for m, _ in incoming], merged.transitions, merged.routings,
                        merged.outcomes, merged.not_delivered)
                except BaseException:
                    call_back(self._failed, Failure(), incoming, changes)
                else:
                    if incoming:
                        self._last_receipt = time.monotonic()
                    call_back(self._committed, stored, incoming, changes, merged)
            for fn, args, d in calls:
                try:
                    result = fn(*args)
                except BaseException:
                    call_back(self._answer, d, Failure())
                else:
                    call_back(self._answer, d, result)

    def _hold_changes(self) -> bool:
        """Whether status changes alone should wait (briefly) for a received message.

        While messages arrive, each is followed by its routing; committing that routing
        alone makes the next message, which lands during that commit, wait for two
        fsyncs instead of one. So when only changes wait and messages were committed a
        moment ago, they wait up to `HOLD_SECONDS` for the next message to share its
        commit. Called under `_lock`.
        """
        return (self._hold_seconds > 0 and not self._incoming and not self._calls
                and bool(self._changes) and not self._closed
                and time.monotonic() - self._last_receipt < RECEIVING_SECONDS)

    def _take_changes(self) -> list[tuple[Changes, defer.Deferred[None]]]:
        taken, size = [], 0
        while self._changes and (not taken or size + self._changes[0][0].size
                                 <= self._max_batch):
            item = self._changes.popleft()
            taken.append(item)
            size += item[0].size
        self._pending_changes -= size
        return taken

    # -- results, back on the reactor thread ---------------------------------------------------

    def _committed(self, stored: list[StoredMessage], incoming: list[Any],
                   changes: list[Any], merged: Changes) -> None:
        self.commits += 1
        self.messages_written += len(incoming)
        self.transitions_written += merged.size
        if self._on_commit is not None:
            try:
                self._on_commit(stored, merged)
            except Exception:  # counting must never keep an ACK from its sender
                log.failure("commit hook failed")
        self._unanswered -= len(incoming) + len(changes)
        for (_, d), result in zip(incoming, stored, strict=True):
            d.callback(result)
        for _, d in changes:
            d.callback(None)
        self._notify_idle()

    def _failed(self, failure: Failure, incoming: list[Any], changes: list[Any]) -> None:
        # By type only: a driver's error text may quote a row's values (promise 6).
        log.error("store commit failed for {n} messages and {t} change sets: {kind}",
                  n=len(incoming), t=len(changes), kind=failure.type.__name__)
        self._unanswered -= len(incoming) + len(changes)
        for _, d in incoming:
            d.errback(failure)
        for _, d in changes:
            d.errback(failure)
        self._notify_idle()

    def _answer(self, d: defer.Deferred[Any], result: Any) -> None:
        self._unanswered -= 1
        if isinstance(result, Failure):
            d.errback(result)
        else:
            d.callback(result)
        self._notify_idle()

    def _notify_idle(self) -> None:
        if self._unanswered == 0 and self._idle:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> defer.Deferred[None]:
        """Fires when everything submitted so far has been committed (or failed)."""
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        self._notify_idle()
        return d

    @defer.inlineCallbacks
    def stop(self) -> Any:
        """Refuse new work, commit what is held, close the store, stop the thread."""
        self._closed = True
        yield self.drain()
        log.info("store writer: {messages} messages and {transitions} transitions in "
                 "{commits} commits", messages=self.messages_written,
                 transitions=self.transitions_written, commits=self.commits)
        yield deferToThreadPool(self._reactor, self._pool, self._store.close)
        if self._own_pool:
            self._pool.stop()
