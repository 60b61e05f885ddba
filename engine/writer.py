"""The single writer: group commit without a time window.

Everything that changes the store goes through here. Work that arrives while a commit
runs waits for the next transaction, and the next commit starts as soon as the previous
one returns, so under load many messages share one fsync while a lone message is never
held back by a timer. The database runs on one dedicated thread; callers get Deferreds
that fire on the reactor thread after the transaction that holds their work committed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from engine.store.store import IncomingMessage, Store, StoredMessage, Transition

log = Logger()


class WriterClosed(Exception):
    """The writer is stopping and takes no more work."""


class GroupCommitWriter:
    """Batches store writes into as few transactions as the store's speed allows."""

    def __init__(
        self,
        store: Store,
        reactor: Any,
        *,
        max_batch: int = 512,
        threadpool: ThreadPool | None = None,
    ) -> None:
        self._store = store
        self._reactor: IReactorTime & IReactorThreads = reactor
        self._max_batch = max_batch
        self._pool = threadpool or ThreadPool(minthreads=1, maxthreads=1, name="store-writer")
        self._own_pool = threadpool is None
        self._incoming: list[tuple[IncomingMessage, defer.Deferred[StoredMessage]]] = []
        self._transitions: list[tuple[Transition, defer.Deferred[None]]] = []
        self._busy = False
        self._scheduled = False
        self._closed = False
        self._idle: list[defer.Deferred[None]] = []
        self.commits = 0
        self.messages_written = 0
        self.transitions_written = 0
        self.busy_seconds = 0.0

    def start(self) -> None:
        """Start the writer's thread."""
        if self._own_pool:
            self._pool.start()

    def submit(self, message: IncomingMessage) -> defer.Deferred[StoredMessage]:
        """Queue a received message; fires with its stored id once committed."""
        if self._closed:
            return defer.fail(WriterClosed("the store writer is stopping"))
        d: defer.Deferred[StoredMessage] = defer.Deferred()
        self._incoming.append((message, d))
        self._kick()
        return d

    def transition(self, transitions: Sequence[Transition]) -> defer.Deferred[None]:
        """Queue status changes; fires once they are committed."""
        if self._closed:
            return defer.fail(WriterClosed("the store writer is stopping"))
        ds = []
        for tr in transitions:
            d: defer.Deferred[None] = defer.Deferred()
            self._transitions.append((tr, d))
            ds.append(d)
        self._kick()
        return defer.gatherResults(ds, consumeErrors=True).addCallback(lambda _: None)

    @property
    def backlog(self) -> int:
        """Work waiting for a transaction (a gauge for back-pressure and metrics)."""
        return len(self._incoming) + len(self._transitions)

    def _kick(self) -> None:
        # callLater(0) lets everything that arrived in this reactor turn join the batch.
        if not self._busy and not self._scheduled:
            self._scheduled = True
            self._reactor.callLater(0, self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        if self._busy or not (self._incoming or self._transitions):
            self._notify_idle()
            return
        incoming = self._incoming[: self._max_batch]
        del self._incoming[: self._max_batch]
        transitions = self._transitions[: self._max_batch]
        del self._transitions[: self._max_batch]
        self._busy = True
        d = self._run(
            self._store.commit_batch,
            [m for m, _ in incoming],
            [t for t, _ in transitions],
        )
        d.addCallbacks(self._committed, self._failed,
                       callbackArgs=(incoming, transitions),
                       errbackArgs=(incoming, transitions))

    def _run(self, fn: Any, *args: Any) -> defer.Deferred[Any]:
        from twisted.internet.threads import deferToThreadPool

        return deferToThreadPool(self._reactor, self._pool, fn, *args)

    def _committed(self, stored: list[StoredMessage], incoming: list[Any],
                   transitions: list[Any]) -> None:
        self._busy = False
        self.commits += 1
        self.messages_written += len(incoming)
        self.transitions_written += len(transitions)
        self._continue()
        for (_, d), result in zip(incoming, stored, strict=True):
            d.callback(result)
        for _, d in transitions:
            d.callback(None)

    def _failed(self, failure: Failure, incoming: list[Any], transitions: list[Any]) -> None:
        self._busy = False
        log.failure("store commit failed for {n} messages and {t} transitions",
                    failure, n=len(incoming), t=len(transitions))
        self._continue()
        for _, d in incoming:
            d.errback(failure)
        for _, d in transitions:
            d.errback(failure)

    def _continue(self) -> None:
        # What arrived during the commit that just returned is committed right away,
        # before the answers of the finished batch are written.
        if self._incoming or self._transitions:
            self._flush()
        else:
            self._notify_idle()

    def _notify_idle(self) -> None:
        if not self._busy and not self._incoming and not self._transitions:
            waiting, self._idle = self._idle, []
            for d in waiting:
                d.callback(None)

    def drain(self) -> defer.Deferred[None]:
        """Fires when everything submitted so far has been committed (or failed)."""
        d: defer.Deferred[None] = defer.Deferred()
        self._idle.append(d)
        if not self._scheduled:
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
        yield self._run(self._store.close)
        if self._own_pool:
            self._pool.stop()
