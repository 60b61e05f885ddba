"""The `interlink` command as a shell pipeline sees it."""

from __future__ import annotations

import os
import subprocess

from tests.support import INTERLINK, REPO


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    """Output into a pipe nobody reads (`… | head` after head left): no traceback."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        result = subprocess.run([*INTERLINK, "schema"], cwd=REPO, stdout=write_end,
                                stderr=subprocess.PIPE, text=True, timeout=120)
    finally:
        os.close(write_end)
    assert "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 1
