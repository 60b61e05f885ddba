"""A progress bar for long commands (export, bulk reprocess, prune), on a terminal only.

Written to stderr and redrawn in place; when stderr is not a terminal (a pipe, a log
file, a test) it stays silent, so output that is redirected holds data only.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

WIDTH = 30


class Progress:
    """Counts done units against an optional total and redraws at most ten times a second."""

    def __init__(self, label: str, total: int | None = None, *, stream: TextIO | None = None,
                 enabled: bool | None = None) -> None:
        self.label = label
        self.total = total
        self.done = 0
        self._stream = stream or sys.stderr
        self._enabled = self._stream.isatty() if enabled is None else enabled
        self._drawn = 0.0

    def advance(self, units: int = 1) -> None:
        """Count units as done and redraw if it is time."""
        self.done += units
        now = time.monotonic()
        if now - self._drawn >= 0.1:
            self._draw()
            self._drawn = now

    def line(self) -> str:
        """The bar as text: `label [#####-----] 50/100` or `label 123` without a total."""
        if not self.total:
            return f"{self.label} {self.done}"
        filled = min(WIDTH, WIDTH * self.done // self.total)
        return (f"{self.label} [{'#' * filled}{'-' * (WIDTH - filled)}] "
                f"{self.done}/{self.total}")

    def _draw(self) -> None:
        if self._enabled:
            self._stream.write("\r" + self.line())
            self._stream.flush()

    def close(self) -> None:
        """Draw the final state and end the line."""
        if self._enabled:
            self._draw()
            self._stream.write("\n")
            self._stream.flush()
