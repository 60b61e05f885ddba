"""A pipeline worker process: `python -m engine.workers.child`, started by the engine.

It says `("ready",)` once its imports are done, then reads requests from and writes
answers to the socket the engine gave it as fd 3, one frame each
(`engine.workers.framing`), strictly in order:

- `("paths", [...])`: the engine's import path, so hooks import here as they do there;
- `("configure", {channel: ChannelConfig})`: the deployed channels, compiled here once;
- `("decide", [(message_id, channel, raw), ...])`: answered with
  `("decided", [Decision | None | Defect, ...])`, one entry per message: the pipeline's
  decision, None when this worker has no pipeline for the channel (the engine then routes
  the message itself), or a `Defect` naming the exception type when a pipeline raised.

The worker holds no state but the compiled pipelines and touches no store, socket or
file: everything it decides goes back to the engine, which records it. It exits when the
socket closes. Anything printed by hooks goes to stderr (the engine maps its stdout there),
never into the frames.
"""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from typing import Any, BinaryIO

from engine.workers.framing import FrameReader, encode

FRAME_FD = 3
"""The engine's socket, as `engine.workers.pool` passes it."""


@dataclass(frozen=True, slots=True)
class Defect:
    """A pipeline raised (a defect in a step, not in the message): the exception's type."""

    kind: str


class Worker:
    """Compiled pipelines by channel, and the answers to the engine's requests."""

    def __init__(self) -> None:
        self._pipelines: dict[str, Any] = {}

    def handle(self, request: tuple[Any, ...]) -> tuple[Any, ...] | None:
        kind = request[0]
        if kind == "paths":
            sys.path[:] = [*request[1], *(p for p in sys.path if p not in request[1])]
            return None
        if kind == "configure":
            self._pipelines = self._compile(request[1])
            return None
        if kind == "decide":
            return ("decided", [self._decide(channel, raw) for _, channel, raw in request[1]])
        raise ValueError(f"unknown request {kind!r}")

    @staticmethod
    def _compile(configs: dict[str, Any]) -> dict[str, Any]:
        from channels.hooks import HookLoader
        from channels.pipeline import ChannelPipeline

        hooks = HookLoader()
        pipelines = {}
        for name, config in configs.items():
            try:
                pipelines[name] = ChannelPipeline(config, hooks)
            except Exception as error:  # the engine routes this channel's messages itself
                print(f"pipeline worker: channel {name} not compiled here "
                      f"({type(error).__name__})", file=sys.stderr)
        return pipelines

    def _decide(self, channel: str, raw: bytes) -> Any:
        pipeline = self._pipelines.get(channel)
        if pipeline is None:
            return None
        try:
            return pipeline.run(raw)
        except Exception as error:  # a defect must not stop the worker
            return Defect(type(error).__name__)


def serve(requests: BinaryIO, answers: BinaryIO) -> None:
    """Answer requests until the input ends."""
    import channels.pipeline  # noqa: F401  (the slow imports, before saying ready)

    answers.write(encode(("ready",)))
    answers.flush()
    worker = Worker()
    reader = FrameReader()
    while chunk := requests.read1(1 << 20):
        for request in reader.feed(chunk):
            answer = worker.handle(request)
            if answer is not None:
                answers.write(encode(answer))
                answers.flush()


def main() -> int:
    with socket.socket(fileno=FRAME_FD) as frames, frames.makefile("rb") as requests, \
            frames.makefile("wb") as answers:
        serve(requests, answers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
