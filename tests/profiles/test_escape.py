"""Escape sequence decoding and encoding."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.hl7.delimiters import DEFAULT_DELIMITERS, Delimiters
from profiles.hl7.escape import escape, unescape

D = DEFAULT_DELIMITERS


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("plain", "plain"),
        ("a\\F\\b", "a|b"),
        ("a\\S\\b\\T\\c\\R\\d\\E\\e", "a^b&c~d\\e"),
        ("line1\\.br\\line2", "line1\nline2"),
        ("x\\.sp2\\y", "x\n\ny"),
        ("\\H\\bold\\N\\", "bold"),
        ("\\X4D6FC3A9\\", "Mo\u00c3\u00a9"),
        ("\\XZZ\\", "\\XZZ\\"),
        ("\\Zcustom\\", "\\Zcustom\\"),
        ("\\C2842\\", "\\C2842\\"),
        ("dangling \\F", "dangling \\F"),
        ("\\P\\", "\\P\\"),
    ],
)
def test_unescape(text: str, value: str) -> None:
    """Known sequences decode; unknown, malformed and unterminated ones stay as written."""
    assert unescape(text, D) == value


def test_hex_uses_the_message_codec() -> None:
    """\\Xhh\\ data is decoded in the message's own character set."""
    assert unescape("\\XC3A9\\", D, "utf-8") == "é"


def test_truncation_sequence_with_v27_delimiters() -> None:
    """\\P\\ decodes to the truncation character when MSH-2 declares one."""
    assert unescape("a\\P\\b", Delimiters(truncation="#")) == "a#b"


def test_escape_covers_every_delimiter_and_line_breaks() -> None:
    """escape() leaves no delimiter, CR or LF in the output."""
    encoded = escape("|^~\\&\r\n#", Delimiters(truncation="#"))
    assert encoded == "\\F\\\\S\\\\R\\\\E\\\\T\\\\X0D\\\\X0A\\\\P\\"


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_escape_then_unescape_round_trips(text: str) -> None:
    """Anything escaped decodes back to itself and never contains a structural delimiter."""
    encoded = escape(text, D)
    assert not set(encoded) & set("|^~&\r\n")
    assert unescape(encoded, D, "utf-8") == text
