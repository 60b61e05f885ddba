"""The file source over real directories, with a real MLLP source as its receiver.

File-system steps run inline and time is a `task.Clock`, so each pass completes as soon
as the commits it waits for have fired; one test at the end runs the real scheduler and
thread pool on the reactor.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from twisted.internet import defer, task
from twisted.internet import reactor as _reactor
from twisted.python.failure import Failure
from twisted.trial.unittest import TestCase

from channels.ids import ControlIdSource
from channels.mllp_source import MLLPSource, Received
from channels.sources.file import (
    Filed,
    FileSource,
    FileSourceConfig,
    ack_codes,
    is_positive,
)
from tests.support import msa

reactor: Any = _reactor
NOW = 1_764_072_000.0

ADT = (b"MSH|^~\\&|HIS|WARD|||20261125120000||ADT^A08^ADT_A01|C-1|P|2.5\r"
       b"EVN|A08\rPID|||MRN1\rPV1||I\r")


def adt(control_id: str, ending: bytes = b"\r") -> bytes:
    return ADT.replace(b"C-1", control_id.encode()).replace(b"\r", ending)


class Commits:
    """The store's commit: records each message; fires at once, fails, or is held."""

    def __init__(self, mode: str = "ok") -> None:
        self.mode = mode
        self.received: list[Received] = []
        self.pending: list[defer.Deferred[Any]] = []

    def __call__(self, received: Received) -> defer.Deferred[Any]:
        self.received.append(received)
        if self.mode == "fail":
            return defer.fail(OSError("disk full"))
        if self.mode == "hold":
            d: defer.Deferred[Any] = defer.Deferred()
            self.pending.append(d)
            return d
        return defer.succeed(None)

    @property
    def peers(self) -> list[str]:
        return [r.peer for r in self.received]


def inline(f: Any, *args: Any) -> defer.Deferred[Any]:
    return defer.maybeDeferred(f, *args)


def make(tmp_path: Path, mode: str = "ok", clock: task.Clock | None = None, **options: Any
         ) -> tuple[FileSource, Commits, FileSourceConfig]:
    if clock is None:
        clock = task.Clock()
        clock.advance(NOW)
    commits = Commits(mode)
    mllp = MLLPSource("files", commits, clock=clock, control_ids=ControlIdSource(NOW))
    config = FileSourceConfig(type="file", directory=tmp_path / "in", **options)
    config.directory.mkdir(exist_ok=True)
    source = FileSource(config, mllp.frame_received, reactor=clock, clock=clock,
                        run_in_thread=inline)
    return source, commits, config


def drop(config: FileSourceConfig, name: str, content: bytes, age: float = 10.0) -> Path:
    """Write a file into the watched directory, last modified ``age`` seconds before NOW."""
    path = config.directory / name
    path.write_bytes(content)
    os.utime(path, (NOW - age, NOW - age))
    return path


def result_of(d: defer.Deferred[Any]) -> Any:
    out: list[Any] = []
    d.addBoth(out.append)
    assert out, "the pass has not finished"
    if isinstance(out[0], Failure):
        out[0].raiseException()
    return out[0]


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# -- config ----------------------------------------------------------------------------------

def test_config_defaults_follow_the_directory(tmp_path: Path) -> None:
    """done/ and error/ default to subdirectories of the watched directory."""
    config = FileSourceConfig.model_validate({"type": "file", "directory": "inbox"})
    assert config.done_directory == Path("inbox/done")
    assert config.error_directory == Path("inbox/error")
    assert config.work_directory == Path("inbox/work")
    assert (config.pattern, config.poll_seconds, config.min_age_seconds) == ("*.hl7", 5.0, 1.0)
    moved = config.relative_to(tmp_path)
    assert moved.directory == tmp_path / "inbox" and moved.done_directory == tmp_path / "inbox/done"


def test_config_rejects_unknown_keys_paths_in_pattern_and_loops() -> None:
    """Typos, a pattern with a slash and done/ equal to the watched directory are errors."""
    for bad in ({"type": "file", "directory": "in", "polll_seconds": 1},
                {"type": "file", "directory": "in", "pattern": "sub/*.hl7"},
                {"type": "file", "directory": "in", "done_directory": "in"},
                {"type": "file", "directory": "in", "poll_seconds": 0},
                {"type": "mllp", "directory": "in"}):
        with pytest.raises(ValidationError):
            FileSourceConfig.model_validate(bad)


def test_ack_verdicts() -> None:
    """A file is done only when every MSA-1 in its answer is AA or CA."""
    assert ack_codes(b"MSH|^~\\&|X\rMSA|AA|1\rMSH|^~\\&|X\rMSA|AE|2\r") == ["AA", "AE"]
    assert is_positive(b"MSH|^~\\&\rMSA|CA|1\r") and not is_positive(b"MSH|^~\\&\r")
    assert not is_positive(None) and not is_positive(b"MSH|^~\\&\rMSA|AA|1\rMSA|AR|2\r")


# -- one pass --------------------------------------------------------------------------------

def test_a_message_file_is_stored_and_moved_to_done(tmp_path: Path) -> None:
    """The bytes reach the store with peer file:<name>; the file ends in done/."""
    source, commits, config = make(tmp_path)
    drop(config, "a.hl7", ADT)
    [filed] = result_of(source.poll())
    assert filed == Filed("a.hl7", "done", config.done_directory / "a.hl7")
    assert [(r.raw, r.peer, r.ack_code) for r in commits.received] == [(ADT, "file:a.hl7", "AA")]
    assert (config.done_directory / "a.hl7").read_bytes() == ADT
    assert names(config.directory) == ["done", "error", "work"]
    assert names(config.work_directory) == []


def test_file_stays_in_work_until_the_commit_returns(tmp_path: Path) -> None:
    """Promise 1 for files: nothing is filed as done before the store's commit fired."""
    source, commits, config = make(tmp_path, mode="hold")
    drop(config, "a.hl7", ADT)
    d = source.poll()
    assert names(config.work_directory) == ["a.hl7"] and not d.called
    assert names(config.done_directory) == []
    commits.pending[0].callback(None)
    assert [f.verdict for f in result_of(d)] == ["done"]
    assert names(config.work_directory) == []


def test_rejected_message_goes_to_error_with_its_ack(tmp_path: Path) -> None:
    """Unreadable content is still stored; the file goes to error/ with the AR beside it."""
    source, commits, config = make(tmp_path)
    drop(config, "junk.hl7", b"this is not HL7\n")
    [filed] = result_of(source.poll())
    assert filed.verdict == "error" and filed.path == config.error_directory / "junk.hl7"
    assert commits.received[0].raw == b"this is not HL7\n"
    ack = (config.error_directory / "junk.hl7.ack").read_bytes()
    assert msa(ack)[1] == b"AR" and b"\r" not in ack


def test_store_failure_sends_the_file_to_error(tmp_path: Path) -> None:
    """When the commit fails the ACK is AE (ERR 207), so the file is not filed as done."""
    source, _, config = make(tmp_path, mode="fail")
    drop(config, "a.hl7", ADT)
    [filed] = result_of(source.poll())
    assert filed.verdict == "error"
    assert msa((config.error_directory / "a.hl7.ack").read_bytes())[1] == b"AE"


def test_receiver_failure_sends_the_file_to_error_with_a_note(tmp_path: Path) -> None:
    """A receive that fails outright leaves no ACK; the note names the failure's type."""
    config = FileSourceConfig(type="file", directory=tmp_path)
    clock = task.Clock()
    clock.advance(NOW)
    source = FileSource(config, lambda raw, peer: defer.fail(RuntimeError("boom MRN1")),
                        reactor=clock, run_in_thread=inline)
    drop(config, "a.hl7", ADT)
    [filed] = result_of(source.poll())
    assert filed.verdict == "error"
    note = (config.error_directory / "a.hl7.error").read_text()
    assert "RuntimeError" in note and "MRN1" not in note


def test_oversize_file_goes_to_error_unread(tmp_path: Path) -> None:
    """A file over max_file_bytes is not read into memory; error/ says why."""
    source, commits, config = make(tmp_path, max_file_bytes=16)
    drop(config, "big.hl7", ADT)
    [filed] = result_of(source.poll())
    assert filed.verdict == "error" and commits.received == []
    assert "larger than 16 bytes" in (config.error_directory / "big.hl7.error").read_text()


def test_several_messages_in_one_file_each_stored(tmp_path: Path) -> None:
    """Back-to-back MSH messages, blank lines between them, any line ending."""
    source, commits, config = make(tmp_path)
    content = adt("C-1", b"\r\n") + b"\r\n" + adt("C-2", b"\r\n") + adt("C-3", b"\r\n") + b"\n\n"
    drop(config, "three.hl7", content)
    [filed] = result_of(source.poll())
    assert filed.verdict == "done"
    assert [r.header.control_id for r in commits.received if r.header] == ["C-1", "C-2", "C-3"]
    assert {r.peer for r in commits.received} == {"file:three.hl7"}


def test_batch_file_each_message_stored(tmp_path: Path) -> None:
    """An FHS/BHS file yields one stored message per MSH."""
    source, commits, config = make(tmp_path)
    batch = (b"FHS|^~\\&|HIS\rBHS|^~\\&|HIS\r" + adt("C-1") + adt("C-2")
             + b"BTS|2\rFTS|1\r")
    drop(config, "batch.hl7", batch)
    assert [f.verdict for f in result_of(source.poll())] == ["done"]
    assert [r.raw for r in commits.received] == [adt("C-1"), adt("C-2")]


def test_one_bad_message_in_a_file_sends_it_to_error(tmp_path: Path) -> None:
    """The file's verdict is the worst of its messages."""
    source, commits, config = make(tmp_path)
    drop(config, "mixed.hl7", adt("C-1") + adt("C-2").replace(b"ADT^A08^ADT_A01", b"ABC^XYZ"))
    [filed] = result_of(source.poll())
    assert filed.verdict == "error" and len(commits.received) == 2
    ack = (config.error_directory / "mixed.hl7.ack").read_bytes()
    assert ack_codes(ack) == ["AA", "AR"]


def test_name_order_and_limit_per_pass(tmp_path: Path) -> None:
    """Files go in name order; a pass takes at most max_files_per_poll of them."""
    source, commits, config = make(tmp_path, max_files_per_poll=2)
    for name, control_id in (("c.hl7", "C-3"), ("a.hl7", "C-1"), ("b.hl7", "C-2")):
        drop(config, name, adt(control_id))
    assert [f.name for f in result_of(source.poll())] == ["a.hl7", "b.hl7"]
    assert names(config.directory) == ["c.hl7", "done", "error", "work"]
    assert [f.name for f in result_of(source.poll())] == ["c.hl7"]
    assert commits.peers == ["file:a.hl7", "file:b.hl7", "file:c.hl7"]


def test_pattern_hidden_files_and_directories_are_left_alone(tmp_path: Path) -> None:
    """Only regular, visible files matching the glob are taken."""
    source, commits, config = make(tmp_path, pattern="*.hl7")
    drop(config, "a.txt", ADT)
    drop(config, ".partial.hl7", ADT)
    (config.directory / "dir.hl7").mkdir()
    drop(config, "b.hl7", ADT)
    assert [f.name for f in result_of(source.poll())] == ["b.hl7"]
    assert commits.peers == ["file:b.hl7"]
    assert {"a.txt", ".partial.hl7", "dir.hl7"} <= set(names(config.directory))


def test_young_files_wait_for_min_age_across_looping_passes(tmp_path: Path) -> None:
    """Driven by a LoopingCall on a Clock: a file changed just now is taken a pass later."""
    clock = task.Clock()
    clock.advance(NOW)
    source, commits, config = make(tmp_path, clock=clock, min_age_seconds=3, poll_seconds=2)
    drop(config, "young.hl7", ADT, age=0)
    loop = task.LoopingCall(source.poll)
    loop.clock = clock
    loop.start(config.poll_seconds)          # pass at NOW: too young
    assert commits.received == []
    clock.advance(2)                          # pass at NOW+2: still too young
    assert commits.received == []
    clock.advance(2)                          # pass at NOW+4: old enough
    assert commits.peers == ["file:young.hl7"]
    loop.stop()


def test_leftovers_in_work_are_processed_first_after_a_restart(tmp_path: Path) -> None:
    """At-least-once: a file a crash left in work/ is received again, before new files."""
    source, commits, config = make(tmp_path)
    config.work_directory.mkdir(parents=True)
    (config.work_directory / "a.hl7").write_bytes(adt("C-OLD"))
    drop(config, "a.hl7", adt("C-NEW"))
    drop(config, "0first.hl7", adt("C-0"))
    filed = result_of(source.poll())
    assert [(f.name, f.path.name) for f in filed] == [
        ("a.hl7", "a.hl7"), ("0first.hl7", "0first.hl7"), ("a.hl7", "a-1.hl7")]
    assert [r.header.control_id for r in commits.received if r.header] == [
        "C-OLD", "C-0", "C-NEW"]
    assert (config.done_directory / "a-1.hl7").read_bytes() == adt("C-NEW")


def test_two_pollers_never_take_the_same_file(tmp_path: Path) -> None:
    """While one poller holds a file, another takes the next; the first then skips it."""
    first, first_commits, config = make(tmp_path, mode="hold")
    second, second_commits, _ = make(tmp_path)
    assert result_of(second.poll()) == []     # its start-up recovery is behind it
    drop(config, "a.hl7", adt("C-1"))
    drop(config, "b.hl7", adt("C-2"))
    d = first.poll()                          # holds a.hl7 in work/, commit pending
    assert [f.name for f in result_of(second.poll())] == ["b.hl7"]
    first_commits.pending[0].callback(None)
    assert [f.name for f in result_of(d)] == ["a.hl7"]
    assert first_commits.peers == ["file:a.hl7"] and second_commits.peers == ["file:b.hl7"]


def test_a_name_still_in_work_is_not_taken_again(tmp_path: Path) -> None:
    """A new file named like one still held in work/ waits; nothing is overwritten."""
    first, first_commits, config = make(tmp_path, mode="hold")
    second, second_commits, _ = make(tmp_path)
    assert result_of(second.poll()) == []
    drop(config, "a.hl7", adt("C-1"))
    d = first.poll()                          # holds a.hl7 in work/
    drop(config, "a.hl7", adt("C-2"))
    assert result_of(second.poll()) == [] and "a.hl7" in names(config.directory)
    first_commits.pending[0].callback(None)
    result_of(d)
    assert [f.path.name for f in result_of(second.poll())] == ["a-1.hl7"]
    assert (config.done_directory / "a.hl7").read_bytes() == adt("C-1")
    assert (config.done_directory / "a-1.hl7").read_bytes() == adt("C-2")
    assert second_commits.peers == ["file:a.hl7"]


def test_a_poll_while_one_runs_does_nothing(tmp_path: Path) -> None:
    """Passes never overlap: a second call during a pass fires at once with nothing."""
    source, commits, config = make(tmp_path, mode="hold")
    drop(config, "a.hl7", ADT)
    d = source.poll()
    idle = source.idle()
    assert result_of(source.poll()) == [] and not idle.called
    commits.pending[0].callback(None)
    assert result_of(d)[0].verdict == "done" and idle.called


def test_stopping_finishes_the_file_in_hand_and_takes_no_more(tmp_path: Path) -> None:
    """Stop waits for the held file to be filed; untaken files stay for the next start."""
    source, commits, config = make(tmp_path, mode="hold")
    drop(config, "a.hl7", adt("C-1"))
    drop(config, "b.hl7", adt("C-2"))
    d = source.poll()
    stopped: list[None] = []
    source.stopService().addCallback(stopped.append)
    assert stopped == []
    commits.pending[0].callback(None)
    assert stopped == [None] and [f.name for f in result_of(d)] == ["a.hl7"]
    assert names(config.done_directory) == ["a.hl7"]
    assert "b.hl7" in names(config.directory)


# -- the real scheduler ----------------------------------------------------------------------

class SchedulerTests(TestCase):
    """APScheduler's TwistedScheduler on the real reactor, files read in its thread pool."""

    timeout = 30

    @defer.inlineCallbacks
    def test_started_service_polls_and_stops_cleanly(self) -> Any:
        """Starting polls at once; stopping waits for the file in hand to be filed."""
        tmp_path = Path(tempfile.mkdtemp(prefix="interlink-file-source-"))
        self.addCleanup(shutil.rmtree, tmp_path, True)
        config = FileSourceConfig(type="file", directory=tmp_path, min_age_seconds=0,
                                  poll_seconds=60)
        tmp_path.mkdir(parents=True, exist_ok=True)
        (tmp_path / "a.hl7").write_bytes(ADT)
        commits = Commits()
        mllp = MLLPSource("files", commits, clock=reactor, control_ids=ControlIdSource(NOW))
        got: defer.Deferred[None] = defer.Deferred()

        def receive(raw: bytes, peer: str) -> defer.Deferred[bytes | None]:
            d = mllp.frame_received(raw, peer)
            if not got.called:
                got.callback(None)
            return d

        source = FileSource(config, receive, reactor=reactor)
        source.startService()
        yield got
        yield source.stopService()
        assert commits.peers == ["file:a.hl7"]
        assert names(config.done_directory) == ["a.hl7"]
        assert names(config.work_directory) == []
