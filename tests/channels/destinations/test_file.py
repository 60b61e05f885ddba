"""The file destination: names from templates, atomic writes in a thread, no clobbering."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from twisted.internet import reactor as _reactor
from twisted.internet.defer import gatherResults, inlineCallbacks
from twisted.trial.unittest import TestCase

from channels.destinations import DeliveryResult, Envelope, Verdict
from channels.destinations.file import FileDestination, FileDestinationConfig, render

reactor: Any = _reactor

PAYLOAD = b"MSH|^~\\&|PUMP|ICU|EHR|HOSP|20240101120000||ORU^R01|PUMP0001|P|2.6\rPID|||12345\r"


def envelope(control_id: str = "PUMP0001", **changes: Any) -> Envelope:
    facts: dict[str, Any] = {
        "message_id": 42,
        "channel": "icu",
        "destination": "archive",
        "control_id": control_id,
        "message_type": "ORU^R01",
        "attempt": 1,
        "received_at": 1_700_000_000.5,  # 2023-11-14 22:13:20.5 UTC
        **changes,
    }
    return Envelope(**facts)


def config(directory: Path | str = "/tmp/out", **overrides: Any) -> FileDestinationConfig:
    return FileDestinationConfig.model_validate(
        {"type": "file", "directory": str(directory), **overrides}
    )


# --- configuration and names -----------------------------------------------------------


def test_default_name_is_channel_message_id_and_control_id() -> None:
    """Without a template the name is {channel}-{message_id}-{control_id}.hl7."""
    assert render(config().filename, envelope()) == "icu-42-PUMP0001.hl7"


def test_template_formats_the_received_time_in_utc_and_pads_ids() -> None:
    """``{date:...}`` is strftime of received_at in UTC; ids take format specs."""
    template = "{date:%Y%m%d-%H%M%S}_{message_id:08d}_{message_type}_{destination}_{attempt}.hl7"
    name = render(config(filename=template).filename, envelope())
    assert name == "20231114-221320_00000042_ORU_R01_archive_1.hl7"


@pytest.mark.parametrize(
    ("template", "complaint"),
    [
        ("{patient}.hl7", "unknown placeholder {patient}"),
        ("{channel.__class__}.hl7", "unknown placeholder"),
        ("{control_id!r}.hl7", "no !r conversion"),
        ("out/{control_id}.hl7", "a name, not a path"),
        ("..\\{control_id}", "a name, not a path"),
        ("{message_id:%Y}.hl7", "does not format"),
        ("{control_id", "does not format"),
    ],
)
def test_bad_templates_are_config_errors(template: str, complaint: str) -> None:
    """Unknown names, attribute access, paths and broken specs fail validation."""
    with pytest.raises(ValidationError, match=complaint):
        config(filename=template)


def test_config_rejects_unknown_keys_and_policies() -> None:
    """Typos and policies other than suffix / fail are errors."""
    with pytest.raises(ValidationError):
        config(dir="/tmp")
    with pytest.raises(ValidationError):
        config(if_exists="overwrite")


@pytest.mark.parametrize(
    ("control_id", "expected"),
    [
        ("../../etc/passwd", "_._.._etc_passwd.hl7"),
        ("..", "_..hl7"),
        ("a\\b\x00c d", "a_b_c_d.hl7"),
    ],
)
def test_control_id_can_never_leave_the_directory(control_id: str, expected: str) -> None:
    """Separators and odd characters become '_'; a name never starts with a dot."""
    assert render("{control_id}.hl7", envelope(control_id)) == expected


# --- writing ---------------------------------------------------------------------------


class FileDestinationTest(TestCase):
    """Real files in a temporary directory, written on the reactor's thread pool."""

    timeout = 30

    def setUp(self) -> None:
        self.directory = Path(tempfile.mkdtemp())
        self.addCleanup(shutil.rmtree, self.directory)

    def destination(self, **overrides: Any) -> FileDestination:
        dest = FileDestination("archive", config(self.directory, **overrides), reactor)
        dest.start()
        self.addCleanup(dest.stop)
        return dest

    def listing(self) -> list[str]:
        return sorted(os.listdir(self.directory))

    @inlineCallbacks
    def test_payload_is_written_whole_and_nothing_else_is_left(self) -> Any:
        """The file holds exactly the payload; no temporary file remains."""
        result = yield self.destination().send(PAYLOAD, envelope())
        self.assertEqual(result, DeliveryResult(Verdict.SENT, None, "wrote icu-42-PUMP0001.hl7"))
        self.assertEqual(self.listing(), ["icu-42-PUMP0001.hl7"])
        self.assertEqual((self.directory / "icu-42-PUMP0001.hl7").read_bytes(), PAYLOAD)

    @inlineCallbacks
    def test_hostile_control_id_stays_inside_the_directory(self) -> Any:
        """A control id of ../../x writes a file in the directory, nowhere else."""
        inner = self.directory / "inner"
        inner.mkdir()
        dest = FileDestination("archive", config(inner, filename="{control_id}"), reactor)
        result = yield dest.send(PAYLOAD, envelope("../../escaped"))
        self.assertEqual(result.verdict, Verdict.SENT)
        self.assertEqual(os.listdir(inner), ["_._.._escaped"])
        self.assertEqual(self.listing(), ["inner"])

    @inlineCallbacks
    def test_existing_file_gets_a_suffix_and_is_left_alone(self) -> Any:
        """With if_exists: suffix the second write lands in name-1.hl7."""
        (self.directory / "icu-42-PUMP0001.hl7").write_bytes(b"earlier")
        result = yield self.destination().send(PAYLOAD, envelope())
        self.assertEqual(result.detail, "wrote icu-42-PUMP0001-1.hl7")
        self.assertEqual((self.directory / "icu-42-PUMP0001.hl7").read_bytes(), b"earlier")
        self.assertEqual((self.directory / "icu-42-PUMP0001-1.hl7").read_bytes(), PAYLOAD)

    @inlineCallbacks
    def test_existing_file_with_fail_policy_dead_letters(self) -> Any:
        """With if_exists: fail the message is FAIL and the old file is untouched."""
        (self.directory / "icu-42-PUMP0001.hl7").write_bytes(b"earlier")
        result = yield self.destination(if_exists="fail").send(PAYLOAD, envelope())
        self.assertEqual(
            result, DeliveryResult(Verdict.FAIL, None, "file exists: icu-42-PUMP0001.hl7")
        )
        self.assertEqual(self.listing(), ["icu-42-PUMP0001.hl7"])
        self.assertEqual((self.directory / "icu-42-PUMP0001.hl7").read_bytes(), b"earlier")

    @inlineCallbacks
    def test_concurrent_writes_of_one_name_never_overwrite_each_other(self) -> Any:
        """Twenty writes racing for one name in threads end as twenty distinct files."""
        dest = self.destination(filename="same.hl7")
        payloads = [PAYLOAD + b"OBX|%d\r" % n for n in range(20)]
        results = yield gatherResults([dest.send(p, envelope()) for p in payloads])
        self.assertEqual({r.verdict for r in results}, {Verdict.SENT})
        self.assertEqual(len(self.listing()), 20)
        contents = sorted((self.directory / n).read_bytes() for n in self.listing())
        self.assertEqual(contents, sorted(payloads))

    @inlineCallbacks
    def test_missing_directory_is_retried_with_the_error_type(self) -> Any:
        """A directory that is not there (yet) is RETRY, naming the errno, not the path."""
        dest = FileDestination("archive", config(self.directory / "absent"), reactor)
        result = yield dest.send(PAYLOAD, envelope())
        self.assertEqual(result, DeliveryResult(Verdict.RETRY, None, "FileNotFoundError (ENOENT)"))

    @inlineCallbacks
    def test_directory_that_is_a_file_is_retried(self) -> Any:
        """A misconfigured directory (a plain file) is RETRY with ENOTDIR."""
        plain = self.directory / "plain"
        plain.write_bytes(b"")
        result = yield FileDestination("archive", config(plain), reactor).send(
            PAYLOAD, envelope()
        )
        self.assertEqual(
            result, DeliveryResult(Verdict.RETRY, None, "NotADirectoryError (ENOTDIR)")
        )

    @inlineCallbacks
    def test_unwritable_directory_is_retried(self) -> Any:
        """Permission denied is RETRY: an operator can fix it without losing the message."""
        if os.geteuid() == 0:
            self.skipTest("root ignores directory permissions")
        locked = self.directory / "locked"
        locked.mkdir(mode=0o500)
        self.addCleanup(locked.chmod, 0o700)
        result = yield FileDestination("archive", config(locked), reactor).send(
            PAYLOAD, envelope()
        )
        self.assertEqual(result, DeliveryResult(Verdict.RETRY, None, "PermissionError (EACCES)"))

    @inlineCallbacks
    def test_empty_name_is_a_failure(self) -> Any:
        """A template that renders to nothing (empty control id) cannot be written: FAIL."""
        result = yield self.destination(filename="{control_id}").send(PAYLOAD, envelope(""))
        self.assertEqual(result.verdict, Verdict.FAIL)
        self.assertEqual(self.listing(), [])

    @inlineCallbacks
    def test_stop_waits_for_writes_in_progress(self) -> Any:
        """stop() fires only after the writes already started have finished."""
        dest = self.destination()
        writing = [dest.send(PAYLOAD, envelope(f"C{n}")) for n in range(5)]
        yield dest.stop()
        self.assertTrue(all(w.called for w in writing))
        self.assertEqual(len(self.listing()), 5)
