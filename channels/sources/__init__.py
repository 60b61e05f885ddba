"""Source connectors besides MLLP: files in a directory and HTTP POST.

Each hands the raw bytes it got to a `Receive` callable. In the engine that is
`MLLPSource(...).frame_received`, so every source stores, checks and acknowledges a
message the same way, and answers only after the commit (promise 1).
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred

Receive = Callable[[bytes, str], "Deferred[bytes | None]"]
"""Store one message or batch, given its raw bytes and a peer label; fires with the ACK."""

__all__ = ["Receive"]
