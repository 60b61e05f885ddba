"""The MLLP codec: each event, the size limit, leniency and split independence."""

from __future__ import annotations

import subprocess
import sys
from itertools import pairwise
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mllp.codec import (
    FRAME_HEAD_BYTES,
    JUNK_HEAD_BYTES,
    ClosedMidFrame,
    Decoder,
    Event,
    Frame,
    FrameAbandoned,
    FrameTooLarge,
    JunkDiscarded,
    encode,
)

MSG = b"MSH|^~\\&|MON|ICU|EHR|HOSP|20240101120000||ORU^R01|MSG00001|P|2.6\rPID|||12345\r"


def decode_whole(stream: bytes, max_frame_bytes: int = 1024) -> list[Event]:
    """Feed a stream in one piece, then close."""
    decoder = Decoder(max_frame_bytes)
    return decoder.feed(stream) + decoder.close()


def decode_chunks(chunks: list[bytes], max_frame_bytes: int = 1024) -> list[Event]:
    """Feed a stream chunk by chunk, then close."""
    decoder = Decoder(max_frame_bytes)
    events: list[Event] = []
    for chunk in chunks:
        events += decoder.feed(chunk)
    return events + decoder.close()


def reference(stream: bytes, max_frame_bytes: int) -> list[Event]:
    """An obviously correct byte-at-a-time model of the decoder's rules."""
    head_limit = min(FRAME_HEAD_BYTES, max_frame_bytes)
    events: list[Event] = []
    inside, after_eb = False, False
    body, junk = bytearray(), bytearray()
    for byte in stream:
        if not inside:
            if after_eb:
                after_eb = False
                if byte == 0x0D:
                    continue
            if byte == 0x0B:
                if junk:
                    events.append(JunkDiscarded(bytes(junk[:JUNK_HEAD_BYTES]), len(junk)))
                    junk.clear()
                inside, body = True, bytearray()
            else:
                junk.append(byte)
        elif byte == 0x1C:
            events.append(Frame(bytes(body)))
            inside, after_eb = False, True
        elif byte == 0x0B:
            events.append(FrameAbandoned(bytes(body[:head_limit]), len(body)))
            body = bytearray()
        else:
            body.append(byte)
            if len(body) > max_frame_bytes:
                events.append(FrameTooLarge(bytes(body[:head_limit]), max_frame_bytes))
                return events
    if inside:
        events.append(ClosedMidFrame(bytes(body[:head_limit]), len(body)))
    elif junk:
        events.append(JunkDiscarded(bytes(junk[:JUNK_HEAD_BYTES]), len(junk)))
    return events


def split_at(stream: bytes, cuts: list[int]) -> list[bytes]:
    """Cut a stream at the given offsets (taken modulo its length)."""
    points = sorted({c % (len(stream) + 1) for c in cuts} | {0, len(stream)})
    return [stream[a:b] for a, b in pairwise(points)]


body_bytes = st.binary(max_size=40).map(lambda b: b.replace(b"\x0b", b"").replace(b"\x1c", b""))
pieces = st.one_of(
    body_bytes.map(encode),
    body_bytes.map(lambda b: b"\x0b" + b + b"\x1c"),
    body_bytes.map(lambda b: b"\x0b" + b),
    st.binary(max_size=30),
    st.sampled_from([b"\x0b", b"\x1c", b"\r", b"\n", b"\r\n", b"\x1c\r", b"MSH|"]),
    st.integers(250, 300).map(lambda n: b"x" * n),
)
streams = st.lists(pieces, max_size=12).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(stream=streams, cuts=st.lists(st.integers(0, 10_000), max_size=20), limit=st.integers(1, 64))
def test_any_split_gives_the_same_events_as_whole_and_as_the_reference(
    stream: bytes, cuts: list[int], limit: int
) -> None:
    """Chunked feeding, whole feeding and the byte-wise model agree on every stream."""
    whole = decode_whole(stream, limit)
    assert whole == reference(stream, limit)
    assert decode_chunks(split_at(stream, cuts), limit) == whole


@settings(max_examples=100, deadline=None)
@given(stream=streams)
def test_one_byte_at_a_time_gives_the_same_events(stream: bytes) -> None:
    """The smallest possible chunks still produce the whole-stream events."""
    one_by_one = [stream[i : i + 1] for i in range(len(stream))]
    assert decode_chunks(one_by_one, 64) == decode_whole(stream, 64)


def test_encode_wraps_payload_in_sb_eb_cr() -> None:
    """A frame is SB, the payload, EB, CR."""
    assert encode(b"abc") == b"\x0babc\x1c\r"


def test_frames_back_to_back_are_decoded_in_order() -> None:
    """Several frames in one chunk come out as several Frame events in order."""
    assert decode_whole(encode(MSG) + encode(b"second")) == [Frame(MSG), Frame(b"second")]


def test_empty_frame_is_a_frame() -> None:
    """SB EB CR is a frame with an empty payload, not an error."""
    assert decode_whole(encode(b"")) == [Frame(b"")]


def test_frame_is_returned_as_soon_as_eb_arrives() -> None:
    """The frame is delivered on EB, without waiting for the CR (EB-only senders)."""
    decoder = Decoder()
    assert decoder.feed(b"\x0bA|B\x1c") == [Frame(b"A|B")]
    assert decoder.feed(b"\r") == []
    assert decoder.close() == []


def test_eb_without_cr_ends_the_frame_and_next_byte_is_not_swallowed() -> None:
    """An EB not followed by CR still ends the frame; the byte after it is kept."""
    assert decode_whole(b"\x0bone\x1c\x0btwo\x1c") == [Frame(b"one"), Frame(b"two")]
    assert decode_whole(b"\x0bone\x1cX\x0btwo\x1c\r") == [
        Frame(b"one"),
        JunkDiscarded(b"X", 1),
        Frame(b"two"),
    ]


def test_cr_after_eb_split_across_feeds_is_consumed() -> None:
    """A CR arriving in the feed after its EB is part of the trailer, not junk."""
    assert decode_chunks([b"\x0bone\x1c", b"\r", b"\x0btwo\x1c", b"\r"]) == [
        Frame(b"one"),
        Frame(b"two"),
    ]


def test_junk_before_start_block_is_reported_once_with_its_size() -> None:
    """Bytes before the first SB become one JunkDiscarded when the frame starts."""
    assert decode_chunks([b"hello ", b"world", b"\x0bmsg\x1c\r"]) == [
        JunkDiscarded(b"hello world", 11),
        Frame(b"msg"),
    ]


def test_stray_newline_between_frames_is_junk() -> None:
    """A LF after EB CR is reported as one byte of junk."""
    assert decode_whole(encode(b"a") + b"\n" + encode(b"b")) == [
        Frame(b"a"),
        JunkDiscarded(b"\n", 1),
        Frame(b"b"),
    ]


def test_junk_head_is_bounded_but_size_counts_everything() -> None:
    """A large junk run keeps only its first 256 bytes but reports its full size."""
    decoder = Decoder()
    for _ in range(1000):
        assert decoder.feed(b"z" * 1000) == []
    assert decoder.junk_pending == 1_000_000
    assert decoder.close() == [JunkDiscarded(b"z" * JUNK_HEAD_BYTES, 1_000_000)]


def test_new_start_block_inside_frame_abandons_partial_frame() -> None:
    """SB inside a frame reports the partial frame as abandoned and starts afresh."""
    assert decode_whole(b"\x0bhalf a mess\x0b" + MSG + b"\x1c\r") == [
        FrameAbandoned(b"half a mess", 11),
        Frame(MSG),
    ]


def test_frame_exactly_at_the_limit_is_accepted() -> None:
    """A body of exactly max_frame_bytes is a normal frame."""
    assert decode_whole(encode(b"x" * 100), max_frame_bytes=100) == [Frame(b"x" * 100)]


def test_frame_one_byte_over_the_limit_is_refused() -> None:
    """A body of max_frame_bytes + 1 gives FrameTooLarge with the head of the body."""
    assert decode_whole(encode(b"x" * 101), max_frame_bytes=100) == [FrameTooLarge(b"x" * 100, 100)]


def test_too_large_is_detected_before_the_end_block_arrives() -> None:
    """The limit is enforced while the frame streams in, so memory stays bounded."""
    decoder = Decoder(max_frame_bytes=100_000)
    assert decoder.feed(b"\x0b" + MSG) == []
    events = decoder.feed(b"y" * 100_000)
    assert events == [FrameTooLarge((MSG + b"y" * FRAME_HEAD_BYTES)[:FRAME_HEAD_BYTES], 100_000)]
    assert decoder.finished


def test_decoder_is_terminal_after_frame_too_large() -> None:
    """After FrameTooLarge, later feeds and close return nothing."""
    decoder = Decoder(max_frame_bytes=4)
    assert decoder.feed(b"\x0b12345\x1c\r" + encode(b"ok")) == [FrameTooLarge(b"1234", 4)]
    assert decoder.feed(encode(b"ok")) == []
    assert decoder.close() == []


def test_close_inside_a_frame_reports_closed_mid_frame() -> None:
    """End of stream inside a frame reports the partial frame's head and size."""
    assert decode_chunks([b"\x0bMSH|", b"partial"]) == [ClosedMidFrame(b"MSH|partial", 11)]


def test_close_right_after_start_block_reports_empty_partial_frame() -> None:
    """A lone SB before the end of stream is an empty unfinished frame."""
    assert decode_whole(b"\x0b") == [ClosedMidFrame(b"", 0)]


def test_close_twice_and_feed_after_close_return_nothing() -> None:
    """A closed decoder ignores further input."""
    decoder = Decoder()
    assert decoder.close() == []
    assert decoder.feed(encode(b"late")) == []
    assert decoder.close() == []


def test_non_bytes_input_yields_bytes_payloads() -> None:
    """A bytearray chunk still gives Frame payloads of type bytes."""
    (frame,) = Decoder().feed(bytearray(encode(b"abc")))
    assert frame == Frame(b"abc")
    assert type(frame.payload) is bytes


def test_invalid_limit_is_rejected() -> None:
    """A zero frame limit is a configuration error."""
    with pytest.raises(ValueError, match="max_frame_bytes"):
        Decoder(0)


def test_large_frame_in_small_chunks_is_linear() -> None:
    """A 16 MiB frame in 4 KiB chunks decodes quickly (no re-scanning of the buffer)."""
    body = b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2||98|%\r" * (16 * 1024 * 1024 // 45)
    stream = encode(body)
    decoder = Decoder()
    events: list[Event] = []
    for i in range(0, len(stream), 4096):
        events += decoder.feed(stream[i : i + 4096])
    assert events == [Frame(body)]


def test_codec_module_does_not_import_twisted() -> None:
    """The codec stays sans-IO: importing it alone loads no Twisted module."""
    code = "import sys, mllp.codec; print(any(m.startswith('twisted') for m in sys.modules))"
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=root
    )
    assert out.stdout.strip() == "False"
