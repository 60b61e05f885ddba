"""A channel's pipeline as one pure function: raw message in, routing decision out.

preprocess → parse → channel filter → channel transformer → for each destination: its
filter (on the channel's output) → its transformer (on a copy) → render. No I/O and no
store, so the engine routes with it and `interlink test` runs a channel's tests with it.
A step that raises sends the message to ERROR with the traceback for its record; the
traceback is never logged (promise 6).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from channels.hooks import HookLoader, StepFailed
from channels.model import ChannelConfig, DestinationSpec
from channels.preprocess import compile_preprocessor
from channels.rules import Predicate, compile_condition
from channels.transforms import OutputFormat, Transformer, compile_transformer, render
from profiles.hl7.edit import EditableMessage, EditError
from profiles.hl7.header import HeaderError
from profiles.hl7.path import Path

CHANNEL_FILTERED = "channel filter did not match"
DESTINATION_FILTERED = "destination filter did not match"
ALL_FILTERED = "every destination's filter declined it"
NO_DESTINATIONS = "channel has no destinations"


class Verdict(StrEnum):
    """What becomes of a message (or of its share for one destination)."""

    QUEUED = "QUEUED"
    FILTERED = "FILTERED"
    ERROR = "ERROR"


@dataclass(frozen=True, slots=True)
class Output:
    """One destination's share: its payload and lane, or why it gets nothing."""

    destination: str
    verdict: Verdict
    payload: bytes | None = None
    lane_key: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decision:
    """The pipeline's answer for one message."""

    verdict: Verdict
    reason: str = ""
    error: str | None = None
    outputs: list[Output] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Destination:
    name: str
    accepts: Predicate | None
    transform: Transformer | None
    output: OutputFormat
    lanes: Path | None


def _always(_: object) -> bool:
    return True


class ChannelPipeline:
    """A channel file compiled once (at deploy); `run` is called for every message."""

    def __init__(self, config: ChannelConfig, hooks: HookLoader | None = None) -> None:
        hooks = hooks or HookLoader()
        self.config = config
        self.name = config.name
        self._preprocess = (compile_preprocessor(config.preprocessor, hooks)
                            if config.preprocessor else None)
        self._accepts = (compile_condition(config.filter, hooks)
                         if config.filter is not None else _always)
        self._transform = (compile_transformer(config.transformer, config.tables, hooks)
                           if config.transformer else None)
        self._destinations = [self._compile(spec, hooks) for spec in config.destinations
                              if spec.enabled]

    def _compile(self, spec: DestinationSpec, hooks: HookLoader) -> _Destination:
        c = self.config
        return _Destination(
            spec.name,
            compile_condition(spec.filter, hooks) if spec.filter is not None else None,
            compile_transformer(spec.transformer, c.tables, hooks) if spec.transformer
            else None,
            spec.output,
            Path.parse(spec.lanes) if spec.lanes else None,
        )

    @property
    def destination_names(self) -> list[str]:
        """The destinations this pipeline routes to (enabled ones)."""
        return [d.name for d in self._destinations]

    def run(self, raw: bytes) -> Decision:
        """Route one message; never raises for what a message or a step does."""
        try:
            return self._run(raw)
        except StepFailed as failed:
            return Decision(Verdict.ERROR, str(failed), f"{failed}\n{failed.traceback}")
        except HeaderError as error:
            return Decision(Verdict.ERROR, f"unreadable after preprocessing: {error.reason}",
                            f"unreadable after preprocessing: {error.reason}")
        except EditError as error:
            return Decision(Verdict.ERROR, "output cannot be encoded",
                            f"output cannot be encoded: {error}")

    def _run(self, raw: bytes) -> Decision:
        if self._preprocess is not None:
            raw = self._preprocess(raw)
        message = EditableMessage.parse(raw)
        if not self._accepts(message):
            return Decision(Verdict.FILTERED, CHANNEL_FILTERED)
        if not self._destinations:
            return Decision(Verdict.FILTERED, NO_DESTINATIONS)
        if self._transform is not None:
            message = self._transform(message)
        outputs = [self._output(message, d) for d in self._destinations]
        if all(o.verdict is Verdict.FILTERED for o in outputs):
            return Decision(Verdict.FILTERED, ALL_FILTERED, outputs=outputs)
        return Decision(Verdict.QUEUED, outputs=outputs)

    def _output(self, message: EditableMessage, d: _Destination) -> Output:
        if d.accepts is not None and not d.accepts(message):
            return Output(d.name, Verdict.FILTERED, reason=DESTINATION_FILTERED)
        lane = message.get(d.lanes) if d.lanes is not None else ""
        if d.transform is not None:
            message = d.transform(message.copy())
        return Output(d.name, Verdict.QUEUED, render(message, d.output), lane)

