"""Thread pools for the store whose threads never keep a finished process alive.

The writer and the readers are stopped in order by `EngineService`; if a process ends
without that (a crash, a failed test), a non-daemon idle thread would hang interpreter
exit forever. SQLite and PostgreSQL commits are atomic, so nothing is lost by not
waiting for such a thread.
"""

from __future__ import annotations

from functools import partial
from threading import Thread

from twisted.python.threadpool import ThreadPool


class DaemonThreadPool(ThreadPool):
    """A Twisted ThreadPool whose worker threads are daemon threads."""

    threadFactory = partial(Thread, daemon=True)  # type: ignore[assignment]
