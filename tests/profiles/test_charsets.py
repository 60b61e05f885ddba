"""MSH-18 to codec table and the fallback decision."""

from __future__ import annotations

import codecs

import pytest

from profiles.hl7.charsets import CHARACTER_SETS, codec_for, resolve_codec


def test_every_table_codec_exists() -> None:
    """Each codec named in the table is one Python knows."""
    for codec in CHARACTER_SETS.values():
        codecs.lookup(codec)


@pytest.mark.parametrize(
    ("value", "codec"),
    [("8859/1", "iso8859-1"), ("unicode utf-8", "utf-8"), (" ISO IR192 ", "utf-8"), ("x", None)],
)
def test_lookup_is_case_and_space_tolerant(value: str, codec: str | None) -> None:
    """Table lookups ignore case and surrounding spaces; unknown values give None."""
    assert codec_for(value) == codec


@pytest.mark.parametrize(
    ("raw", "declared", "codec"),
    [
        (b"MSH|plain", "", "ascii"),
        ("MSH|Grüße".encode(), "", "utf-8"),
        ("MSH|Grüße".encode("latin-1"), "", "cp1252"),
        (b"MSH|\x81\xc4", "", "iso8859-1"),
        ("MSH|Grüße".encode(), "ASCII", "utf-8"),
        ("MSH|Grüße".encode("latin-1"), "UNICODE UTF-8", "cp1252"),
        ("MSH|Grüße".encode("latin-1"), "8859/1", "iso8859-1"),
        (b"MSH|plain", "UNICODE", "ascii"),
        (b"MSH|plain", "UNICODE UTF-8", "utf-8"),
    ],
)
def test_resolve_codec(raw: bytes, declared: str, codec: str) -> None:
    """A declaration wins when the bytes agree; otherwise ASCII, UTF-8, cp1252, latin-1."""
    assert resolve_codec(raw, declared) == codec
