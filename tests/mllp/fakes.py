"""Honest fakes for MLLP tests: a frame handler whose answers the test controls."""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet.defer import Deferred, succeed

Answer = Deferred[bytes | None] | bytes | None


def ack_for(payload: bytes) -> bytes:
    """A recognisable answer for a payload: ``ACK:`` plus the payload."""
    return b"ACK:" + payload


class RecordingHandler:
    """Records every call; answers with ``answer(payload)`` (default: ack_for at once)."""

    def __init__(
        self,
        answer: Callable[[bytes], Answer] | None = None,
        refusal: bytes | None = b"NAK",
    ) -> None:
        self.frames: list[tuple[bytes, str]] = []
        self.refused: list[tuple[bytes, str, str]] = []
        self._answer = answer or (lambda payload: succeed(ack_for(payload)))
        self._refusal = refusal

    def frame_received(self, payload: bytes, peer: str) -> Answer:
        self.frames.append((payload, peer))
        return self._answer(payload)

    def frame_refused(self, head: bytes, peer: str, reason: str) -> bytes | None:
        self.refused.append((head, peer, reason))
        return self._refusal


class DeferringHandler(RecordingHandler):
    """Answers with Deferreds the test fires itself, in any order."""

    def __init__(self) -> None:
        self.pending: list[Deferred[bytes | None]] = []
        super().__init__(self._defer)

    def _defer(self, payload: bytes) -> Deferred[bytes | None]:
        d: Deferred[bytes | None] = Deferred()
        self.pending.append(d)
        return d
