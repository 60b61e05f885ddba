"""The engine's side of its pipeline workers: child processes started and kept by Twisted.

Filtering and transforming a message is the largest piece of work the engine does per
message, and on the reactor thread it would hold up every ACK and every delivery behind
it. Workers run the same compiled channels in their own processes (their own interpreter
lock, another core), so the reactor only hands over raw messages and records decisions.

Frames go both ways over a UNIX socket pair (the child's end is its fd 3), not the
child's stdin and stdout: Twisted reads a process pipe 8 KiB per reactor turn, and a
batch's answer (a thousand transformed messages, megabytes) then took hundreds of turns
on a busy reactor while the worker waited. The socket is read up to `READ_BYTES` a turn,
with buffers large enough that a batch crosses in a few.

A worker is told the deployed channels before the first batch it decides after any
change (a redeploy makes new config objects, so a change is seen by identity). Batches are
split over the workers and answered in order. When no worker can answer (still starting,
crashed, stopping), `decide` fails with `WorkersUnavailable`; the router decides channels
without Python hooks in the engine process and waits for a worker (`when_ready`) for the
others. A batch left unanswered past `ANSWER_SECONDS` fails with `WorkerOverdue`, and one
in flight on a worker that ended by itself (a hook that exits, crashes the interpreter or
exhausts memory) with `WorkerEnded`: those messages are not decided again in the engine
process, where what stopped the worker would stop the engine.
"""

from __future__ import annotations

import contextlib
import os
import socket
import sys
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from twisted.internet import defer, error, protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from engine.workers.child import FRAME_FD
from engine.workers.framing import FrameReader, encode

log = Logger()

Item = tuple[int, str, bytes]
"""(message id, channel, raw message) to decide."""
Configs = Callable[[], Mapping[str, Any]]
"""The deployed channels' configurations by name, as the engine has them now."""

RESTART_SECONDS = (1.0, 2.0, 5.0, 10.0, 30.0)
"""Waits before starting a worker again after it ended by itself, growing per failure."""
STOP_GRACE_SECONDS = 5.0
ANSWER_SECONDS = 60.0
"""A batch not answered by then means a stuck worker: it is ended and replaced."""
READ_BYTES = 1 << 20
"""The most of a worker's frames read, or sent, in one go on the reactor thread."""
SOCKET_BUFFER_BYTES = 4 << 20
"""Asked of the kernel for each direction of the frame socket (it may give less)."""


class WorkersUnavailable(Exception):
    """No worker can decide this batch now; the caller decides it itself."""


class WorkerEnded(WorkersUnavailable):
    """The worker deciding these messages ended by itself before answering.

    One of them may be what ended it (a hook that exits or crashes the interpreter):
    decided again in the engine process it would end the engine.
    """

    def __init__(self, message_ids: Sequence[int], how: str) -> None:
        super().__init__(f"pipeline worker ended ({how}) while deciding")
        self.message_ids = tuple(message_ids)
        self.how = how


class WorkerOverdue(WorkersUnavailable):
    """A worker gave no answer for these messages in time and was ended.

    One of them may be what stuck it (a hook that never returns): decided again on the
    reactor thread it would stop every ACK, so the caller must not decide them itself.
    The rest of the batch it may.
    """

    def __init__(self, message_ids: Sequence[int], seconds: float) -> None:
        super().__init__(f"no answer in {seconds:g} s")
        self.message_ids = tuple(message_ids)
        self.seconds = seconds


class _Frames(protocol.Protocol):
    """A worker's frame socket, read in large pieces; everything goes to its `_Child`."""

    def __init__(self, child: _Child) -> None:
        self._child = child

    def connectionMade(self) -> None:
        # Both are FileDescriptor attributes: bytes read per turn, bytes sent per write.
        self.transport.bufferSize = READ_BYTES  # type: ignore[attr-defined]
        self.transport.SEND_LIMIT = READ_BYTES  # type: ignore[attr-defined]
        self._child.framesConnected(self)

    def dataReceived(self, data: bytes) -> None:
        self._child.framesReceived(data)

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._child.framesLost()


class _Child(protocol.ProcessProtocol):
    """One worker process: requests out and answers in over its frame socket, in order."""

    def __init__(self, pool: PipelineWorkers) -> None:
        self._pool = pool
        self._reader = FrameReader()
        self._frames: _Frames | None = None
        self._closing = False
        self._waiting: deque[tuple[defer.Deferred[list[Any]], tuple[int, ...]]] = deque()
        """Batches sent and not answered yet, with their message ids, in order."""
        self._overdue: defer.Deferred[list[Any]] | None = None
        self.configured: tuple[tuple[str, int], ...] | None = None
        self.running = False
        self.ended: defer.Deferred[None] = defer.Deferred()

    def framesConnected(self, frames: _Frames) -> None:
        self._frames = frames
        self.send(("paths", list(sys.path)))

    def send(self, request: tuple[Any, ...]) -> None:
        if self._frames is not None:
            self._frames.transport.write(encode(request))

    def close(self) -> None:
        """Close the frame socket: the worker reads its end and exits."""
        self._closing = True
        if self._frames is not None:
            self._frames.transport.loseConnection()

    def decide(self, items: Sequence[Item]) -> defer.Deferred[list[Any]]:
        if self._frames is None:  # its socket is gone: it is ending
            return defer.fail(WorkersUnavailable("pipeline worker unreachable"))
        d: defer.Deferred[list[Any]] = defer.Deferred()
        self._waiting.append((d, tuple(mid for mid, _, _ in items)))
        self.send(("decide", list(items)))
        timer = self._pool.clock.callLater(self._pool.answer_seconds, self._stuck, d)
        d.addBoth(_cancel_timer, timer)
        return d

    def _stuck(self, d: defer.Deferred[list[Any]]) -> None:
        """No answer in time (a stuck process): end it. This batch fails as overdue, the
        ones queued behind it go back to the router."""
        if not d.called and self._overdue is None:
            log.error("pipeline worker gave no answer in {s:g} s; restarting it",
                      s=self._pool.answer_seconds)
            self._overdue = d
            _kill(self)

    def framesReceived(self, data: bytes) -> None:
        try:
            answers = self._reader.feed(data)
        except Exception:  # a broken stream: end the child, its batches go back
            log.error("pipeline worker sent something unreadable; restarting it")
            _kill(self)
            return
        for answer in answers:
            if answer[0] == "ready":
                self.running = True
                self._pool._ready(self)
            elif answer[0] == "decided" and self._waiting:
                self._waiting.popleft()[0].callback(answer[1])

    def framesLost(self) -> None:
        """The socket closed: asked to, or the worker is ending (or must: it cannot be
        reached any more)."""
        self._frames = None
        self.running = False
        if not self._closing:
            _kill(self)

    def processEnded(self, reason: Failure) -> None:
        """Fail what it still owed: the stuck batch as overdue; when it ended by itself,
        every batch in flight as `WorkerEnded`; otherwise (asked to stop, or ended for
        being stuck) the rest go back to the router."""
        by_itself = not self._closing and self._overdue is None
        self.running = False
        self.close()
        waiting, self._waiting = self._waiting, deque()
        stuck, self._overdue = self._overdue, None
        for d, message_ids in waiting:
            if d is stuck:
                d.errback(WorkerOverdue(message_ids, self._pool.answer_seconds))
            elif by_itself:
                d.errback(WorkerEnded(message_ids, _how_it_ended(reason)))
            else:
                d.errback(WorkersUnavailable("pipeline worker ended"))
        self.ended.callback(None)
        self._pool._ended(self, reason)


class PipelineWorkers:
    """`count` worker processes deciding batches for the router; see the module docstring."""

    def __init__(self, reactor: Any, count: int, configs: Configs, *,
                 executable: str = sys.executable,
                 restart_seconds: Sequence[float] = RESTART_SECONDS,
                 answer_seconds: float = ANSWER_SECONDS) -> None:
        self._reactor = reactor
        self.clock = reactor
        self.answer_seconds = answer_seconds
        self._restart_seconds = tuple(restart_seconds)
        self._count = count
        self._configs = configs
        self._executable = executable
        self._children: list[_Child] = []
        self._failures = 0
        self._stopping = False
        self._ready_waiters: list[defer.Deferred[None]] = []

    @property
    def ready(self) -> int:
        """Workers that said they are ready and still run."""
        return sum(1 for child in self._children if child.running)

    def start(self) -> None:
        """Start the worker processes (they are ready a moment later)."""
        for _ in range(self._count):
            self._spawn()

    def _spawn(self) -> None:
        if self._stopping:
            return
        child = _Child(self)
        ours, theirs = frame_socket_pair()
        try:
            # The worker's stdout goes to stderr: a hook's print() stays out of the frames.
            self._reactor.spawnProcess(
                child, self._executable, [self._executable, "-m", "engine.workers.child"],
                env=dict(os.environ), path=os.getcwd(),
                childFDs={1: 2, 2: 2, FRAME_FD: theirs.fileno()})
            self._children.append(child)
            factory = protocol.Factory.forProtocol(lambda: _Frames(child))
            self._reactor.adoptStreamConnection(ours.fileno(), socket.AF_UNIX, factory)
        finally:
            ours.close()  # the reactor and the child each hold their own copy now
            theirs.close()

    def _ended(self, child: _Child, reason: Failure) -> None:
        if child in self._children:
            self._children.remove(child)
        if self._stopping:
            return
        delay = self._restart_seconds[min(self._failures, len(self._restart_seconds) - 1)]
        self._failures += 1
        code = reason.value.exitCode if isinstance(reason.value, error.ProcessTerminated) \
            else 0
        log.warn("pipeline worker ended (exit {code}); starting another in {delay:g} s",
                 code=code, delay=delay)
        self._reactor.callLater(delay, self._spawn)

    def decide(self, items: Sequence[Item]) -> defer.Deferred[list[Any]]:
        """Decisions for `items`, in order; fails with WorkersUnavailable when none runs."""
        children = [child for child in self._children if child.running]
        if not children or self._stopping:
            return defer.fail(WorkersUnavailable("no pipeline worker running"))
        self._configure(children)
        share = -(-len(items) // len(children))
        parts = [children[k].decide(items[k * share:(k + 1) * share])
                 for k in range(len(children)) if items[k * share:(k + 1) * share]]
        return defer.DeferredList(parts, consumeErrors=True).addCallback(_joined)

    def when_ready(self, timeout: float) -> defer.Deferred[None]:
        """Fires once a worker runs (at once if one does); fails with WorkersUnavailable
        after `timeout` seconds without one, or when the workers are stopping."""
        if self._stopping:
            return defer.fail(WorkersUnavailable("pipeline workers are stopping"))
        if self.ready:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._ready_waiters.append(d)
        timer = self.clock.callLater(timeout, self._no_worker, d, timeout)
        d.addBoth(_cancel_timer, timer)
        return d

    def _no_worker(self, d: defer.Deferred[None], timeout: float) -> None:
        if d in self._ready_waiters:
            self._ready_waiters.remove(d)
            d.errback(WorkersUnavailable(f"no pipeline worker ready in {timeout:g} s"))

    def _ready(self, child: _Child) -> None:
        self._failures = 0
        log.info("pipeline worker {pid} ready", pid=child.transport.pid)
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.callback(None)

    def _configure(self, children: list[_Child]) -> None:
        configs = dict(self._configs())
        signature = tuple(sorted((name, id(config)) for name, config in configs.items()))
        for child in children:
            if child.configured != signature:
                child.send(("configure", configs))
                child.configured = signature

    def stop(self) -> defer.Deferred[None]:
        """End the workers: close their sockets, and kill those still there after a grace."""
        self._stopping = True
        waiters, self._ready_waiters = self._ready_waiters, []
        for d in waiters:
            d.errback(WorkersUnavailable("pipeline workers are stopping"))
        ending = []
        for child in list(self._children):
            child.close()
            timer = self._reactor.callLater(STOP_GRACE_SECONDS, _kill, child)
            child.ended.addBoth(lambda _, t=timer: t.cancel() if t.active() else None)
            ending.append(child.ended)
        return defer.DeferredList(ending).addCallback(lambda _: None)


def frame_socket_pair() -> tuple[socket.socket, socket.socket]:
    """A connected pair of UNIX stream sockets with large buffers; ours non-blocking."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    for end in (ours, theirs):
        for option in (socket.SO_SNDBUF, socket.SO_RCVBUF):
            with contextlib.suppress(OSError):
                end.setsockopt(socket.SOL_SOCKET, option, SOCKET_BUFFER_BYTES)
    ours.setblocking(False)
    return ours, theirs


def _joined(results: list[tuple[bool, Any]]) -> list[Any] | Failure:
    """The parts' answers in order; or the failure, with the messages of every part a
    worker was lost on (two workers may end on the same hook in one batch)."""
    failures = [result for ok, result in results if not ok]
    if not failures:
        return [a for _, answers in results for a in answers]
    lost = [f.value for f in failures if isinstance(f.value, WorkerEnded | WorkerOverdue)]
    if len(lost) < 2:
        return Failure(lost[0]) if lost else failures[0]
    ids = [mid for e in lost for mid in e.message_ids]
    ended = [e for e in lost if isinstance(e, WorkerEnded)]
    overdue = [e for e in lost if isinstance(e, WorkerOverdue)]
    return Failure(WorkerEnded(ids, ended[0].how) if ended
                   else WorkerOverdue(ids, overdue[0].seconds))


def _how_it_ended(reason: Failure) -> str:
    """"exit 3", "signal 9": how a worker process ended, for the messages' record."""
    value = reason.value
    if getattr(value, "signal", None):
        return f"signal {value.signal}"
    return f"exit {getattr(value, 'exitCode', None)}"


def _kill(child: _Child) -> None:
    with contextlib.suppress(error.ProcessExitedAlready):
        child.transport.signalProcess("KILL")


def _cancel_timer(result: Any, timer: Any) -> Any:
    if timer.active():
        timer.cancel()
    return result
