"""One engine per embedded store: an OS lock on `<data_dir>/engine.lock` while it runs.

On SQLite the running engine keeps the audit chain's tail in memory, so a second writer
(another engine, or a command writing to the store itself) would fork the chain. The
engine holds an exclusive `flock` for as long as it runs; the kernel drops it when the
process dies, even by SIGKILL, so a crash never leaves a stale lock behind. Commands that
write to the store directly check it first. PostgreSQL needs none of this: its writers
meet under an advisory lock and read the chain's tail inside it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

LOCK_FILE = "engine.lock"


class StoreInUse(RuntimeError):
    """Another process holds the store's lock."""


class StoreLock:
    """The running engine's claim on its data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / LOCK_FILE
        self._fd: int | None = None

    def acquire(self) -> None:
        """Take the lock, or raise StoreInUse when another process has it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StoreInUse(f"another engine is running on {self.path.parent}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        """Let go (the file stays; only the lock matters)."""
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None


def engine_holds(data_dir: Path) -> bool:
    """True while an engine runs on this data directory's store."""
    probe = StoreLock(data_dir)
    if not probe.path.exists():
        return False
    try:
        probe.acquire()
    except StoreInUse:
        return True
    probe.release()
    return False


def is_embedded(store_url: str) -> bool:
    """True for SQLite, the store only one process may write."""
    return store_url.startswith("sqlite")
