"""Analyst paths: parsing, printing and clear errors."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from profiles.hl7.path import Path, PathError


@pytest.mark.parametrize(
    ("text", "path"),
    [
        ("PID-3", Path("PID", 3)),
        ("PID-3.1", Path("PID", 3, component=1)),
        ("PID-3.1.2", Path("PID", 3, component=1, subcomponent=2)),
        ("PID-3[2].1", Path("PID", 3, repetition=2, component=1)),
        ("OBX[2]-5", Path("OBX", 5, segment_index=2)),
        ("MSH-9.2", Path("MSH", 9, component=2)),
        ("ZB1-1", Path("ZB1", 1)),
    ],
)
def test_parse_and_print(text: str, path: Path) -> None:
    """Each written form parses to its parts and prints back unchanged."""
    assert Path.parse(text) == path
    assert str(path) == text


@pytest.mark.parametrize(
    ("text", "hint"),
    [
        ("", "empty"),
        ("pid-3", "capitals"),
        ("PID.3.1", "'-'"),
        ("PID", "field number"),
        ("PID-0", "between 1"),
        ("OBX[0]-5", "between 1"),
        ("OBX[x]-5", "segment index"),
        ("PID-3.1.2.3", "SEG[n]-F[r].C.S"),
        ("PID-3[]", "SEG[n]-F[r].C.S"),
    ],
)
def test_bad_paths_explain_themselves(text: str, hint: str) -> None:
    """Bad syntax raises PathError whose message points at the mistake."""
    with pytest.raises(PathError, match=None) as caught:
        Path.parse(text)
    assert hint in str(caught.value)


def test_non_string_is_a_path_error() -> None:
    """A non-string path is refused with PathError, not TypeError."""
    with pytest.raises(PathError):
        Path.parse(3)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=20))
def test_random_text_only_raises_path_error(text: str) -> None:
    """Any string either parses to a path that prints back, or raises PathError."""
    try:
        path = Path.parse(text)
    except PathError:
        return
    assert Path.parse(str(path)) == path
