"""Batch and file splitting with exact bytes, and malformed envelopes."""

from __future__ import annotations

import pytest

from profiles.hl7.batch import BatchError, is_batch, split_batch
from profiles.hl7.header import read_header
from tests.profiles.corpus import corpus_files, file_id, read

MSH_A = b"MSH|^~\\&|A|B|||20240101||ADT^A01|ID1|P|2.5"
MSH_B = b"MSH|^~\\&|A|B|||20240101||ADT^A01|ID2|P|2.5"


@pytest.mark.parametrize(
    ("name", "control_ids"),
    [
        ("edge/pythonhl7-batch-bhs-two-msgs-bts.hl7", ["12334456778890", "12334456778891"]),
        ("edge/pythonhl7-batch-no-header-trailer.hl7", ["12334456778890", "12334456778891"]),
        (
            "edge/pythonhl7-file-fhs-two-batches-fts.hl7",
            ["12334456778890", "12334456778891", "12334456778890"],
        ),
    ],
)
def test_corpus_batches_split_into_exact_messages(name: str, control_ids: list[str]) -> None:
    """Each batch yields its messages, byte for byte as they sit in the file."""
    raw = read(name)
    assert is_batch(raw)
    messages = split_batch(raw)
    assert [read_header(m).control_id for m in messages] == control_ids
    for message in messages:
        assert message.startswith(b"MSH|") and message.endswith(b"\r")
        assert message in raw
        assert b"BHS" not in message and b"BTS" not in message


@pytest.mark.parametrize(
    ("name", "reason"),
    [
        ("edge/pythonhl7-bad-batch-bhs-without-msh.hl7", "outside any message"),
        ("edge/pythonhl7-bad-batch-nested-bhs.hl7", "inside an open batch"),
        ("edge/pythonhl7-bad-file-nested-fhs.hl7", "file header must come first"),
    ],
)
def test_malformed_corpus_batches(name: str, reason: str) -> None:
    """Malformed envelopes raise BatchError with a reason naming the broken rule."""
    with pytest.raises(BatchError) as caught:
        split_batch(read(name))
    assert reason in caught.value.reason


@pytest.mark.parametrize(
    "path",
    [p for p in corpus_files() if "batch" not in p.name and "file" not in p.name],
    ids=file_id,
)
def test_single_messages_come_back_whole(path) -> None:  # type: ignore[no-untyped-def]
    """A plain message is its own one-element batch, unchanged, and not flagged as a batch."""
    raw = path.read_bytes()
    if not raw.lstrip().startswith(b"MSH"):
        pytest.skip("not a message")
    assert split_batch(raw) == [raw]
    assert not is_batch(raw)


@pytest.mark.parametrize("eol", [b"\r", b"\n", b"\r\n"])
def test_terminators_are_kept(eol: bytes) -> None:
    """CR, LF and CRLF batches return messages with their own terminators intact."""
    one = MSH_A + eol + b"PID|||1" + eol + eol
    two = MSH_B + eol + b"PID|||2" + eol
    raw = b"BHS|^~\\&" + eol + one + two + b"BTS|2" + eol
    assert split_batch(raw) == [one, two]


def test_empty_batch_is_allowed() -> None:
    """A well-formed batch holding no messages yields an empty list."""
    assert split_batch(b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|1\r") == []


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"", "no segments"),
        (b"BHS|^~\\&\r" + MSH_A + b"\rBTS|2\r", "declares 2 messages"),
        (b"BHS|^~\\&\r" + MSH_A + b"\r", "not closed by BTS"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSH_A + b"\rBTS|1\r", "not closed by FTS"),
        (b"FHS|^~\\&\rBHS|^~\\&\rBTS|0\rFTS|3\r", "declares 3 batches"),
        (MSH_A + b"\rBTS|1\r", "never opened"),
        (MSH_A + b"\rFTS|1\r", "never opened"),
        (MSH_A + b"\rBHS|^~\\&\r" + MSH_B + b"\rBTS|1\r", "follows messages outside"),
        (b"FHS|^~\\&\rFTS|0\r" + MSH_A, "follows FTS"),
        (b"FHS|^~\\&\rBHS|^~\\&\r" + MSH_A + b"\rFTS|1\r", "before the open batch"),
    ],
)
def test_broken_envelopes(raw: bytes, reason: str) -> None:
    """Missing, miscounting or misplaced headers and trailers raise BatchError."""
    with pytest.raises(BatchError) as caught:
        split_batch(raw)
    assert reason in caught.value.reason
