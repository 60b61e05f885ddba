"""The file source: take HL7 files from a directory, store them, file them by their ACK.

A pass (`FileSource.poll`) lists ``directory`` for names matching ``pattern`` that have
not changed for ``min_age_seconds`` (a file still being written is left for later), in
name order (then mtime), at most ``max_files_per_poll`` of them. Files one at a time, in
that order:

1. *Take*: rename it into ``<directory>/work/``. A rename is atomic, so two pollers (two
   nodes on a shared directory) never both take a file: the loser finds it gone. A name
   already in ``work/`` is left in place until the earlier file of that name is filed.
2. *Read* it in a thread. A file that cannot be read, or is larger than
   ``max_file_bytes``, goes to ``error/`` with a ``<name>.error`` note naming the reason.
3. *Receive*: hand the bytes to ``receive(raw, "file:<name>")`` and wait for its ACK,
   which comes only after the commit (promise 1).
4. *File* it: to ``done/`` when every MSA-1 of the ACK is AA/CA, else to ``error/`` with
   ``<name>.ack`` beside it holding the ACK (segments on separate lines). An existing
   name in done/ or error/ is never overwritten: ``a.hl7`` becomes ``a-1.hl7``.

What a file may hold is what `receive` (the MLLP source) takes: one message; an FHS/BHS
batch; or several plain messages one after another, each starting with an MSH line, with
or without blank lines between them (``profiles.hl7.batch.split_batch``). Any line ending
works. Each message is stored and acknowledged on its own; the file's verdict is the
worst of them. Hidden files (``.name``) and anything that is not a regular file are
ignored.

The first pass creates the directory, ``work/``, ``done/`` and ``error/`` if missing.
At-least-once: the first pass after start processes again whatever a crash left in
``work/`` (the store marks repeats as duplicates). With several nodes on one directory a
node's restart may also re-take a file another node holds in ``work/`` at that moment;
the duplicate window covers that too.

Scheduling: APScheduler 3's `TwistedScheduler` takes a ``reactor`` option, but it calls
``reactor.callFromThread`` and computes due times from ``datetime.now()``, so a
`task.Clock` cannot drive it. The scheduler is therefore kept thin (one interval job whose
only work is to start `poll` unless one is running, run on the reactor thread by
APScheduler's direct executor), and `poll` itself is the tested unit: tests call it, or
drive it with a `LoopingCall` on a `task.Clock`; only one test runs the real scheduler.
File-system work runs through an injected ``run_in_thread`` (the reactor's thread pool by
default) so those tests can run it inline.

Logs carry counts, the directory and error types; never file contents, nor the names of
incoming files (senders may put patient ids in them): the store records each message's
peer ``file:<name>``, and error/ shows the name.
"""

from __future__ import annotations

import errno
import fnmatch
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from apscheduler.executors.debug import DebugExecutor
from apscheduler.schedulers.twisted import TwistedScheduler
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from twisted.application.service import Service
from twisted.internet import defer, threads
from twisted.logger import Logger

from channels.sources import Receive

log = Logger()

RunInThread = Callable[..., "defer.Deferred[Any]"]
WORK = "work"
POSITIVE = frozenset({"AA", "CA"})


class FileSourceConfig(BaseModel):
    """A watched directory; done/ and error/ default to subdirectories of it."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["file"]
    directory: Path
    pattern: str = Field("*.hl7", min_length=1, description="fnmatch glob on file names")
    poll_seconds: float = Field(5.0, gt=0)
    done_directory: Path = Field(None, validate_default=False)  # type: ignore[assignment]
    error_directory: Path = Field(None, validate_default=False)  # type: ignore[assignment]
    min_age_seconds: float = Field(1.0, ge=0, description="skip files changed more recently")
    max_files_per_poll: int = Field(100, gt=0)
    max_file_bytes: int = Field(64 * 1024 * 1024, gt=0)

    @model_validator(mode="before")
    @classmethod
    def _default_subdirectories(cls, data: Any) -> Any:
        if isinstance(data, dict) and isinstance(data.get("directory"), str | Path):
            base = Path(data["directory"])
            data = {"done_directory": base / "done", "error_directory": base / "error", **data}
        return data

    @field_validator("pattern")
    @classmethod
    def _name_only(cls, value: str) -> str:
        if "/" in value or os.sep in value:
            raise ValueError("pattern matches file names in the directory, not paths")
        return value

    @model_validator(mode="after")
    def _distinct(self) -> FileSourceConfig:
        for name in ("done_directory", "error_directory"):
            if Path(getattr(self, name)) in (self.directory, self.work_directory):
                raise ValueError(f"{name} must differ from the watched directory and work/")
        return self

    @property
    def work_directory(self) -> Path:
        """Where taken files sit while being received (same file system, so renames hold)."""
        return self.directory / WORK

    def relative_to(self, base: Path) -> FileSourceConfig:
        """This config with relative directories taken relative to `base` (the config's)."""
        return self.model_copy(update={
            name: base / getattr(self, name)
            for name in ("directory", "done_directory", "error_directory")
        })


@dataclass(frozen=True, slots=True)
class Filed:
    """Where one file ended up after a pass: ``done`` or ``error``."""

    name: str
    verdict: Literal["done", "error"]
    path: Path


@dataclass(frozen=True, slots=True)
class _Unreadable:
    reason: str


def ack_codes(ack: bytes) -> list[str]:
    """Every MSA-1 in an answer (several for a batch), read without trusting its shape."""
    start = ack.find(b"MSH")
    separator = ack[start + 3:start + 4] if start >= 0 else b"|"
    codes = []
    for line in re.split(rb"\r\n|\r|\n", ack):
        if line.startswith(b"MSA"):
            fields = line.split(separator or b"|")
            codes.append(fields[1].decode("ascii", "replace").strip() if len(fields) > 1
                         else "")
    return codes


def is_positive(ack: bytes | None) -> bool:
    """True when there is an answer and every message in it was accepted (AA/CA)."""
    codes = ack_codes(ack) if ack else []
    return bool(codes) and all(code in POSITIVE for code in codes)


class FileSource(Service):
    """Polls one directory and hands each file to `receive`; files it by the answer."""

    def __init__(
        self,
        config: FileSourceConfig,
        receive: Receive,
        *,
        reactor: Any,
        clock: Any = None,
        run_in_thread: RunInThread | None = None,
    ) -> None:
        self.config = config
        self._receive = receive
        self._reactor = reactor
        self._clock = clock if clock is not None else reactor
        self._run = run_in_thread or (
            lambda f, *a: threads.deferToThreadPool(reactor, reactor.getThreadPool(), f, *a))
        self._prepared = False
        self._recovered = False
        self._polling = False
        self._stopping = False
        self._idle_waiters: list[defer.Deferred[None]] = []
        self._scheduler: TwistedScheduler | None = None

    # -- service -------------------------------------------------------------------------

    def startService(self) -> None:
        """Poll at once, then every ``poll_seconds``."""
        super().startService()
        self._stopping = False
        scheduler = TwistedScheduler(
            reactor=self._reactor,
            timezone=UTC,
            executors={"default": DebugExecutor()},
            job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        )
        scheduler.add_job(self._tick, "interval", seconds=self.config.poll_seconds,
                          next_run_time=datetime.now(UTC),
                          name=f"poll {self.config.directory}")
        scheduler.start()
        self._scheduler = scheduler

    def stopService(self) -> defer.Deferred[None]:
        """Stop polling, then wait for the file in hand to be received and filed.

        Files not yet taken stay where they are for the next start.
        """
        super().stopService()
        self._stopping = True
        scheduler, self._scheduler = self._scheduler, None
        stopped: defer.Deferred[None] = defer.Deferred()
        if scheduler is not None and scheduler.running:
            scheduler.shutdown(wait=False)
            # The shutdown is queued with callFromThread; this runs right after it.
            self._reactor.callFromThread(stopped.callback, None)
        else:
            stopped.callback(None)
        return stopped.addCallback(lambda _: self.idle())

    def idle(self) -> defer.Deferred[None]:
        """Fires once no pass is running."""
        if not self._polling:
            return defer.succeed(None)
        d: defer.Deferred[None] = defer.Deferred()
        self._idle_waiters.append(d)
        return d

    def _tick(self) -> None:
        if self.running and not self._polling:
            self.poll().addErrback(lambda f: log.error(
                "file poll of {directory} failed: {kind}",
                directory=str(self.config.directory), kind=f.type.__name__))

    # -- one pass ------------------------------------------------------------------------

    def poll(self) -> defer.Deferred[list[Filed]]:
        """One pass over the directory (the first also retakes leftovers in work/).

        A call while a pass is running does nothing and fires with an empty list.
        """
        if self._polling:
            return defer.succeed([])
        self._polling = True
        d = defer.ensureDeferred(self._poll())

        def done(result: Any) -> Any:
            self._polling = False
            waiters, self._idle_waiters = self._idle_waiters, []
            for waiter in waiters:
                waiter.callback(None)
            return result

        return d.addBoth(done)

    async def _poll(self) -> list[Filed]:
        cfg = self.config
        if not self._prepared:
            await self._run(_prepare, cfg)
            self._prepared = True
        filed: list[Filed] = []
        if not self._recovered:
            leftovers = await self._run(_leftovers, cfg.work_directory)
            self._recovered = True
            if leftovers:
                log.warn("file source {directory}: {count} file(s) left in work/ are "
                         "processed again", directory=str(cfg.directory), count=len(leftovers))
            for name in leftovers:
                filed.append(await self._process(name))
        names = await self._run(_candidates, cfg, self._clock.seconds())
        for name in names:
            if self._stopping:
                break
            if await self._run(_take, cfg, name):
                filed.append(await self._process(name))
        if filed:
            bad = sum(1 for f in filed if f.verdict == "error")
            log.info("file source {directory}: {count} file(s) received, {bad} to error/",
                     directory=str(cfg.directory), count=len(filed), bad=bad)
        return filed

    async def _process(self, name: str) -> Filed:
        """Read, receive and file one taken file; a failure here still files it."""
        cfg = self.config
        raw = await self._run(_read, cfg.work_directory / name, cfg.max_file_bytes)
        if isinstance(raw, _Unreadable):
            log.error("file source {directory}: a file could not be read ({reason}); "
                      "moved to error/", directory=str(cfg.directory), reason=raw.reason)
            path = await self._run(_file_away, cfg, name, False, None, raw.reason)
            return Filed(name, "error", path)
        try:
            ack = await self._receive(raw, f"file:{name}")
        except Exception as error:  # the receiver failed: nothing says it was stored
            log.error("file source {directory}: receive failed ({kind}); file moved to "
                      "error/", directory=str(cfg.directory), kind=type(error).__name__)
            path = await self._run(_file_away, cfg, name, False, None,
                                   f"receive failed: {type(error).__name__}")
            return Filed(name, "error", path)
        positive = is_positive(ack)
        note = None if ack else "no acknowledgment"
        path = await self._run(_file_away, cfg, name, positive, ack, note)
        return Filed(name, "done" if positive else "error", path)


# -- file-system steps (run in a thread) ---------------------------------------------------

def _prepare(cfg: FileSourceConfig) -> None:
    for directory in (cfg.work_directory, cfg.done_directory, cfg.error_directory):
        directory.mkdir(parents=True, exist_ok=True)


def _leftovers(work: Path) -> list[str]:
    return sorted(e.name for e in os.scandir(work) if e.is_file(follow_symlinks=False))


def _candidates(cfg: FileSourceConfig, now: float) -> list[str]:
    """Names ready to take, in name order then mtime, at most ``max_files_per_poll``."""
    ready: list[tuple[str, float]] = []
    with os.scandir(cfg.directory) as entries:
        for entry in entries:
            if entry.name.startswith(".") or not fnmatch.fnmatchcase(entry.name, cfg.pattern):
                continue
            try:
                if not entry.is_file(follow_symlinks=False):
                    continue
                mtime = entry.stat(follow_symlinks=False).st_mtime
            except FileNotFoundError:  # taken by another poller meanwhile
                continue
            if now - mtime >= cfg.min_age_seconds:
                ready.append((entry.name, mtime))
    ready.sort()
    return [name for name, _ in ready[:cfg.max_files_per_poll]]


def _take(cfg: FileSourceConfig, name: str) -> bool:
    """Move the file into work/; False when someone else took it or the name is busy."""
    target = cfg.work_directory / name
    if target.exists():
        return False
    try:
        os.rename(cfg.directory / name, target)
    except FileNotFoundError:
        return False
    return True


def _read(path: Path, limit: int) -> bytes | _Unreadable:
    try:
        with path.open("rb") as f:
            raw = f.read(limit + 1)
    except OSError as error:
        return _Unreadable(_reason(error))
    if len(raw) > limit:
        return _Unreadable(f"larger than {limit} bytes")
    return raw


def _reason(error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0)
    return f"{type(error).__name__} ({code})" if code else type(error).__name__


def _file_away(cfg: FileSourceConfig, name: str, positive: bool, ack: bytes | None,
               note: str | None) -> Path:
    """Move a taken file to done/ or error/ (never overwriting); leave its ACK or note."""
    directory = cfg.done_directory if positive else cfg.error_directory
    target = _free_name(directory, name)
    shutil.move(cfg.work_directory / name, target)
    if not positive:
        if ack:
            _write_beside(target, ".ack", ack.replace(b"\r\n", b"\n").replace(b"\r", b"\n"))
        if note:
            _write_beside(target, ".error", note.encode("utf-8") + b"\n")
    return target


def _free_name(directory: Path, name: str) -> Path:
    target = directory / name
    n = 0
    while target.exists() or target.with_name(target.name + ".ack").exists():
        n += 1
        stem, dot, suffix = name.rpartition(".")
        target = directory / (f"{stem}-{n}.{suffix}" if dot and stem else f"{name}-{n}")
    return target


def _write_beside(target: Path, extension: str, content: bytes) -> None:
    beside = target.with_name(target.name + extension)
    beside.write_bytes(content)
