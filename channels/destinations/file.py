"""The file destination: one message per file, written atomically, never clobbered.

A reader polling the directory must never see half a file, and a crash must never leave a
truncated one under the final name: the payload goes to a hidden temporary file in the
same directory, is fsynced, then linked under its final name (``os.link`` fails instead of
replacing an existing file) and the directory is fsynced. Disk work runs on the reactor's
thread pool so the reactor never waits on a disk.

If the name is taken, ``if_exists: suffix`` (the default) writes ``name-1.hl7``,
``name-2.hl7`` … so a retried or reprocessed message never overwrites an earlier file;
``if_exists: fail`` dead-letters the message instead.
"""

from __future__ import annotations

import errno
import os
import re
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from string import Formatter
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from twisted.internet.defer import Deferred, DeferredList, succeed
from twisted.internet.threads import deferToThreadPool
from twisted.logger import Logger
from twisted.python.failure import Failure

from channels.destinations.base import DeliveryResult, Envelope, Verdict

PLACEHOLDERS: Final = frozenset(
    {"channel", "destination", "message_id", "control_id", "message_type", "attempt", "date"}
)
"""Names a filename template may use; ``date`` is received_at in UTC (``{date:%Y%m%d}``)."""

MAX_SUFFIX: Final = 1000
MAX_NAME_BYTES: Final = 255
_UNSAFE_VALUE = re.compile(r"[^A-Za-z0-9._-]")
_UNSAFE_NAME = re.compile(r"[/\\\x00-\x1f\x7f]")
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV}

log = Logger()


class FileDestinationConfig(BaseModel):
    """Where files go and how they are named."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    type: Literal["file"]
    directory: Path
    filename: str = Field("{channel}-{message_id}-{control_id}.hl7", min_length=1)
    if_exists: Literal["suffix", "fail"] = "suffix"

    @field_validator("filename")
    @classmethod
    def _template(cls, template: str) -> str:
        if _UNSAFE_NAME.search(template):
            raise ValueError("filename is a name, not a path: no '/', '\\' or control characters")
        try:
            fields = list(Formatter().parse(template))
        except ValueError as error:
            raise ValueError(f"filename template does not format: {error}") from None
        for _, name, _spec, conversion in fields:
            if name is None:
                continue
            if name not in PLACEHOLDERS:
                known = ", ".join(sorted(PLACEHOLDERS))
                raise ValueError(f"unknown placeholder {{{name}}}; use one of {known}")
            if conversion is not None:
                raise ValueError(f"placeholder {{{name}}} takes no !{conversion} conversion")
        try:
            render(template, _SAMPLE)
        except (ValueError, TypeError) as error:
            raise ValueError(f"filename template does not format: {error}") from None
        return template


_SAMPLE: Final = Envelope(
    message_id=1,
    channel="channel",
    destination="destination",
    control_id="CONTROL1",
    message_type="ORU^R01",
    attempt=1,
    received_at=0.0,
)


def _safe(value: str) -> str:
    """A value that cannot leave the directory or hide the file: [A-Za-z0-9._-] only."""
    return _UNSAFE_VALUE.sub("_", value)


def render(template: str, envelope: Envelope) -> str:
    """The file name for one message: sanitised values, never a path, never hidden."""
    name = template.format(
        channel=_safe(envelope.channel),
        destination=_safe(envelope.destination),
        message_id=envelope.message_id,
        control_id=_safe(envelope.control_id),
        message_type=_safe(envelope.message_type),
        attempt=envelope.attempt,
        date=datetime.fromtimestamp(envelope.received_at, UTC),
    )
    name = _UNSAFE_NAME.sub("_", name)
    if name.startswith("."):
        name = "_" + name[1:]
    return name


class NameTaken(Exception):
    """The file name exists and the policy says not to pick another."""


def _candidates(name: str) -> list[str]:
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem:
        stem, ext = name, ""
    tail = f".{ext}" if ext else ""
    return [name] + [f"{stem}-{n}{tail}" for n in range(1, MAX_SUFFIX + 1)]


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _place(temporary: Path, directory: Path, name: str, if_exists: str) -> str:
    """Give the written file its final name without replacing anything; returns the name."""
    for candidate in _candidates(name):
        target = directory / candidate
        try:
            os.link(temporary, target)
            return candidate
        except FileExistsError:
            if if_exists == "fail":
                raise NameTaken(candidate) from None
        except OSError as error:
            if error.errno not in _NO_LINKS:
                raise
            # No hard links on this file system: check, then rename (a small race remains).
            if not target.exists():
                os.replace(temporary, target)
                return candidate
            if if_exists == "fail":
                raise NameTaken(candidate) from None
    raise NameTaken(name)


def write_atomically(directory: Path, name: str, payload: bytes, if_exists: str) -> str:
    """Write ``payload`` as ``directory/name`` (or a suffixed name); blocking, run in a thread."""
    fd, temporary_name = tempfile.mkstemp(dir=directory, prefix=".interlink-", suffix=".tmp")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        final = _place(temporary, directory, name, if_exists)
    finally:
        temporary.unlink(missing_ok=True)
    _fsync_directory(directory)
    return final


def _os_detail(error: OSError) -> str:
    code = errno.errorcode.get(error.errno or 0, "")
    return f"{type(error).__name__} ({code})" if code else type(error).__name__


class FileDestination:
    """A Destination writing each payload to its own file."""

    def __init__(self, name: str, config: FileDestinationConfig, reactor: Any) -> None:
        self.name = name
        self.config = config
        self._reactor = reactor
        self._writing: set[Deferred[DeliveryResult]] = set()

    def start(self) -> None:
        """Create the directory (and its parents) at deploy, as a new interface expects."""
        try:
            Path(self.config.directory).mkdir(parents=True, exist_ok=True)
        except OSError as error:
            log.warn("destination {name}: cannot create its directory: {detail}",
                     name=self.name, detail=_os_detail(error))

    def stop(self) -> Deferred[None]:
        """Fires once every write already started has finished."""
        return DeferredList(list(self._writing), consumeErrors=True).addCallback(lambda _: None)

    def send(self, payload: bytes, envelope: Envelope) -> Deferred[DeliveryResult]:
        """Write one file; disk errors are RETRY, an unusable or taken name is FAIL."""
        name = render(self.config.filename, envelope)
        if not name or len(name.encode()) > MAX_NAME_BYTES:
            detail = f"file name is empty or longer than {MAX_NAME_BYTES} bytes"
            return succeed(DeliveryResult(Verdict.FAIL, None, detail))
        writing = deferToThreadPool(
            self._reactor,
            self._reactor.getThreadPool(),
            write_atomically,
            self.config.directory,
            name,
            payload,
            self.config.if_exists,
        ).addCallbacks(self._written, self._not_written)
        self._writing.add(writing)
        writing.addBoth(self._forget, writing)
        return writing

    def _forget(self, result: Any, writing: Deferred[DeliveryResult]) -> Any:
        self._writing.discard(writing)
        return result

    def _written(self, final: str) -> DeliveryResult:
        return DeliveryResult(Verdict.SENT, None, f"wrote {final}")

    def _not_written(self, reason: Failure) -> DeliveryResult:
        if reason.check(NameTaken):
            return DeliveryResult(Verdict.FAIL, None, f"file exists: {reason.value}")
        reason.trap(OSError)
        error = reason.value
        assert isinstance(error, OSError)
        return DeliveryResult(Verdict.RETRY, None, _os_detail(error))
