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
from channels.pcd import (
    DeviceMessage,
    DevicePolicy,
    Observation,
    Sighting,
    describe,
    device_report,
    forget_report,
    owners_text,
    without_observations,
)
from channels.preprocess import compile_preprocessor
from channels.records import PickledByArguments
from channels.rules import Predicate, compile_condition
from channels.transforms import OutputFormat, Transformer, compile_transformer, render
from profiles.hl7.ack import ErrorDetail
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
class Output(PickledByArguments):
    """One destination's share: its payload and lane, or why it gets nothing."""

    destination: str
    verdict: Verdict
    payload: bytes | None = None
    lane_key: str = ""
    reason: str = ""


@dataclass(frozen=True, slots=True)
class Decision(PickledByArguments):
    """The pipeline's answer for one message."""

    verdict: Verdict
    reason: str = ""
    error: str | None = None
    outputs: list[Output] = field(default_factory=list)
    sightings: tuple[Sighting, ...] = ()
    """Devices heard from (channels that track devices; not for re-sent readings)."""


@dataclass(slots=True)
class Prepared:
    """A message read and judged, before its readings are matched against earlier ones.

    ``decision`` is set when preparing already decided (an error, a device data reject);
    ``observations`` are the de-duplication keys of its readings.
    """

    message: EditableMessage | None = None
    decision: Decision | None = None
    observations: tuple[Observation, ...] = ()
    note: str = ""
    sightings: tuple[Sighting, ...] = ()


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
        hooks = (hooks or HookLoader()).scoped()
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
        self._pcd = DevicePolicy(config.name, config.pcd) if config.pcd is not None else None
        self.hooks: dict[str, str] = dict(hooks.used)
        """The Python hooks this pipeline calls, with their module files' SHA-256."""

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

    @property
    def deduplicates(self) -> bool:
        """Readings are matched against earlier messages' (``pcd.deduplicate``)."""
        return self._pcd is not None and self._pcd.deduplicates

    @property
    def dedupe_window_seconds(self) -> float | None:
        """How long readings are remembered for de-duplication; None when not enabled."""
        if self._pcd is None or self._pcd.config.deduplicate is None:
            return None
        return self._pcd.config.deduplicate.window_seconds

    def screen(self, raw: bytes) -> list[ErrorDetail]:
        """ERR entries that reject a message before its ACK ([] unless a pcd rule rejects)."""
        if self._pcd is None or not self._pcd.rejects:
            return []
        try:
            if self._preprocess is not None:
                raw = self._preprocess(raw)
        except Exception:  # the pipeline meets the same failure and records it
            return []
        return self._pcd.screen(raw)

    def run(self, raw: bytes, seen: dict[str, int] | None = None) -> Decision:
        """Route one message; never raises for what a message or a step does.

        ``seen`` maps de-duplication keys of readings already received to the message
        that carried them first (see ``prepare``); those readings are not delivered again.
        """
        return self.finish(self.prepare(raw), seen)

    def prepare(self, raw: bytes) -> Prepared:
        """Preprocess, read and judge one message: the part before de-duplication."""
        try:
            return self._prepare(raw)
        except (StepFailed, HeaderError, EditError) as error:
            return Prepared(decision=_failed(error))

    def finish(self, prepared: Prepared, seen: dict[str, int] | None = None) -> Decision:
        """Filter, transform and render a prepared message; never raises for its content."""
        if prepared.decision is not None:
            return prepared.decision
        try:
            return self._finish(prepared, seen or {})
        except (StepFailed, HeaderError, EditError) as error:
            return _failed(error)

    def _prepare(self, raw: bytes) -> Prepared:
        if self._preprocess is not None:
            raw = self._preprocess(raw)
        pcd = self._pcd
        message = DeviceMessage.read(raw, pcd.default_tz if pcd is not None else None)
        if pcd is None:
            return Prepared(message)
        report = device_report(message)
        assessment = pcd.assess(message, report)
        if assessment.rejected:
            reason = f"rejected by device data rules: {describe(assessment.rejected)}"
            everything = describe(assessment.rejected + assessment.flagged, limit=4000)
            return Prepared(decision=Decision(
                Verdict.ERROR, reason, f"rejected by device data rules: {everything}"))
        note = (f"flagged by device data rules: {describe(assessment.flagged)}"
                if assessment.flagged else "")
        return Prepared(message, None, pcd.observations(report), note,
                        pcd.sightings(message, report))

    def _finish(self, prepared: Prepared, seen: dict[str, int]) -> Decision:
        message = prepared.message
        assert message is not None
        notes = [prepared.note] if prepared.note else []
        sightings = prepared.sightings
        repeated = ({o.obx: seen[o.key] for o in prepared.observations if o.key in seen}
                    if seen else {})
        if repeated:
            owners = {str(obx): owner for obx, owner in repeated.items()}
            if len(repeated) == len({o.obx for o in prepared.observations}):
                reason = (f"every reading was already received in {owners_text(owners)} "
                          "(re-sent)")
                return Decision(Verdict.FILTERED, "; ".join([reason, *notes]))
            notes.append(f"{len(repeated)} of {len(prepared.observations)} readings already "
                         f"received in {owners_text(owners)}; delivered the others")
            message = without_observations(message, repeated)
        if not self._accepts(message):
            return Decision(Verdict.FILTERED, "; ".join([CHANNEL_FILTERED, *notes]),
                            sightings=sightings)
        if not self._destinations:
            return Decision(Verdict.FILTERED, "; ".join([NO_DESTINATIONS, *notes]),
                            sightings=sightings)
        if self._transform is not None:
            message = self._transform(message)
            forget_report(message)
        outputs = [self._output(message, d) for d in self._destinations]
        if all(o.verdict is Verdict.FILTERED for o in outputs):
            return Decision(Verdict.FILTERED, "; ".join([ALL_FILTERED, *notes]),
                            outputs=outputs, sightings=sightings)
        return Decision(Verdict.QUEUED, "; ".join(notes), outputs=outputs, sightings=sightings)

    def _output(self, message: EditableMessage, d: _Destination) -> Output:
        if d.accepts is not None and not d.accepts(message):
            return Output(d.name, Verdict.FILTERED, reason=DESTINATION_FILTERED)
        lane = message.get(d.lanes) if d.lanes is not None else ""
        if d.transform is not None:
            message = d.transform(message.copy())
        return Output(d.name, Verdict.QUEUED, render(message, d.output), lane)


def _failed(error: Exception) -> Decision:
    """The ERROR decision for a failing step, an unreadable message or unencodable output."""
    if isinstance(error, StepFailed):
        return Decision(Verdict.ERROR, str(error), f"{error}\n{error.traceback}")
    if isinstance(error, HeaderError):
        return Decision(Verdict.ERROR, f"unreadable after preprocessing: {error.reason}",
                        f"unreadable after preprocessing: {error.reason}")
    return Decision(Verdict.ERROR, "output cannot be encoded",
                    f"output cannot be encoded: {error}")
