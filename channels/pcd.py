"""Device data in channels: PCD conditions, clinical rules, de-duplication keys, sightings.

Filters (channel or destination) may test what an IHE PCD message says, read once per
pipeline run by ``profiles.pcd.extract`` and cached on the message (``DeviceMessage``).
Channels that use no PCD condition and have no ``pcd:`` section never extract. Forms::

    {pcd: "metric(MDC_PULS_OXIM_SAT_O2).value < 90"}      # the expression form, see below
    {pcd_metric: MDC_PULS_OXIM_SAT_O2, lt: 90}            # gt, ge, lt, le, equals, exists
    {pcd_metric: MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD, gt: 10, unit: mmol/L}
    {pcd_device: infusion_pump}                           # monitor, personal_health_device,
                                                          # or an MDC_DEV_* code; or a list
    {pcd_alarm_priority: high}                            # high/medium/low/none (PH...), or a list
    {pcd_profile: PCD-04}                                 # PCD-01, PCD-04, PCD-10, PCD-15, PHD

Expressions (an optional leading ``pcd.`` is allowed)::

    metric(MDC_PULS_OXIM_SAT_O2).value < 90       metric(150456) exists
    metric(MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD) > 10 mmol/L
    device == infusion_pump                       device in [monitor, infusion_pump]
    alarm.priority == high                        alarm.priority in [high, medium]
    profile == PCD-04

A metric is named by its MDC reference id or numeric code; a test holds when ANY metric of
that code passes it (as field tests hold for any value). When a test names a unit, values
are compared in that unit: the same unit as is, glucose converted between mg/dL and
mmol/L, any other unit never matches. Unknown kinds, malformed metric names and unknown
units are errors at the place they are written.

The channel's ``pcd:`` section (``PcdConfig``) adds plausibility rules per metric, the
conformance policy, observation-level de-duplication and device tracking settings;
``DevicePolicy`` is its compiled form the pipeline uses.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, tzinfo
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from channels.records import PickledByArguments
from profiles.hl7.ack import ErrorDetail
from profiles.hl7.edit import EditableMessage
from profiles.hl7.message import Message
from profiles.pcd.codes import convert_glucose
from profiles.pcd.conformance import check
from profiles.pcd.extract import extract
from profiles.pcd.records import PRIORITY_CODES, DeviceReport, Finding, Metric
from profiles.pcd.units import ucum_of

_Frozen = ConfigDict(extra="forbid", frozen=True)

# -- value types -------------------------------------------------------------------------

_METRIC_NAME = re.compile(r"(?:MDC_[A-Za-z0-9_]+|\d{1,10})")
DEVICE_KINDS = ("infusion_pump", "monitor", "personal_health_device")
PROFILES = ("PCD-01", "PCD-04", "PCD-10", "PCD-15", "PHD")
PRIORITIES = ("high", "medium", "low", "none")


def _metric_name(value: Any) -> str:
    if isinstance(value, bool):
        raise PydanticCustomError("pcd_metric", "a metric is an MDC reference id or code")
    text = str(value).strip()
    if not _METRIC_NAME.fullmatch(text):
        raise PydanticCustomError(
            "pcd_metric",
            "{name} is not a metric name: write its MDC reference id "
            "(MDC_PULS_OXIM_SAT_O2) or its numeric code (150456)",
            {"name": repr(text[:60])})
    return text


def _unit(value: Any) -> str:
    text = str(value).strip()
    if ucum_of(text) is None:
        raise PydanticCustomError(
            "pcd_unit", "{unit} is not a unit Interlink knows (UCUM such as mg/dL, or an "
            "MDC unit such as MDC_DIM_MILLI_G_PER_DL)", {"unit": repr(text[:40])})
    return text


def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise PydanticCustomError("number", "expected a number, not a boolean")
    if isinstance(value, int | float) and not math.isfinite(value):
        raise PydanticCustomError("number", "expected a finite number")
    return value


def _choices(allowed: Sequence[str], noun: str) -> Callable[[Any], tuple[str, ...]]:
    def check(value: Any) -> tuple[str, ...]:
        items = value if isinstance(value, list | tuple) else [value]
        if not items:
            raise PydanticCustomError("pcd_choice", "the list needs at least one entry")
        out = []
        for item in items:
            text = str(item).strip()
            name = _normalise_choice(text, noun)
            if name not in allowed and not (noun == "device" and text.startswith("MDC_DEV_")):
                raise PydanticCustomError(
                    "pcd_choice", "{value} is not a known {noun}; one of {allowed}",
                    {"value": repr(text[:40]), "noun": noun, "allowed": ", ".join(allowed)
                     + (", or an MDC_DEV_* code" if noun == "device" else "")})
            out.append(name if name in allowed else text)
        return tuple(out)

    return check


def _normalise_choice(text: str, noun: str) -> str:
    if noun == "alarm priority":
        return PRIORITY_CODES.get(text.upper(), text.lower())
    if noun == "profile":
        return text.upper()
    return text


MetricName = Annotated[str, BeforeValidator(_metric_name)]
UnitName = Annotated[str, BeforeValidator(_unit)]
Number = Annotated[float, BeforeValidator(_number)]
DeviceKinds = Annotated[tuple[str, ...], BeforeValidator(_choices(DEVICE_KINDS, "device"))]
Priorities = Annotated[tuple[str, ...], BeforeValidator(_choices(PRIORITIES, "alarm priority"))]
Profiles = Annotated[tuple[str, ...], BeforeValidator(_choices(PROFILES, "profile"))]


# -- condition models --------------------------------------------------------------------


class _PcdModel(BaseModel):
    model_config = _Frozen

    def __repr_args__(self) -> Any:
        return [(k, v) for k, v in super().__repr_args__() if v is not None]


_METRIC_OPERATORS = ("gt", "ge", "lt", "le", "equals", "exists")


class MetricTest(_PcdModel):
    """``{pcd_metric: MDC_PULS_OXIM_SAT_O2, lt: 90}``: a test of one metric's values."""

    pcd_metric: MetricName
    gt: Number | None = None
    ge: Number | None = None
    lt: Number | None = None
    le: Number | None = None
    equals: str | None = None
    exists: bool | None = None
    unit: UnitName | None = None

    @model_validator(mode="before")
    @classmethod
    def _one_operator(cls, data: Any) -> Any:
        if isinstance(data, dict):
            given = [k for k in _METRIC_OPERATORS if data.get(k) is not None]
            if len(given) != 1:
                raise PydanticCustomError(
                    "pcd_metric", "a metric test takes exactly one of {ops} (found: {found})",
                    {"ops": ", ".join(_METRIC_OPERATORS), "found": ", ".join(given) or "none"})
            if "unit" in data and given[0] in ("equals", "exists"):
                raise PydanticCustomError(
                    "pcd_metric", "'unit' goes with a numeric test (gt, ge, lt, le)")
            if given[0] == "equals" and isinstance(data["equals"], bool):
                raise PydanticCustomError(
                    "yaml_boolean", "YAML read this as a boolean; quote it to mean the text")
            if given[0] == "equals" and isinstance(data["equals"], int | float):
                data = {**data, "equals": str(data["equals"])}
        return data

    @property
    def operator(self) -> str:
        """The one operator this test uses."""
        return next(k for k in _METRIC_OPERATORS if getattr(self, k) is not None)


class DeviceTest(_PcdModel):
    """``{pcd_device: infusion_pump}``: the message comes from such a device."""

    pcd_device: DeviceKinds


class AlarmPriorityTest(_PcdModel):
    """``{pcd_alarm_priority: high}``: the message carries an alarm of such a priority."""

    pcd_alarm_priority: Priorities


class ProfileTest(_PcdModel):
    """``{pcd_profile: PCD-04}``: the message is of this IHE profile."""

    pcd_profile: Profiles


PcdTest = MetricTest | DeviceTest | AlarmPriorityTest | ProfileTest
PCD_FORMS: dict[str, type[_PcdModel]] = {
    "pcd_metric": MetricTest,
    "pcd_device": DeviceTest,
    "pcd_alarm_priority": AlarmPriorityTest,
    "pcd_profile": ProfileTest,
}
"""The structured forms by their key; ``pcd`` (the expression) parses into one of them."""


def validate_pcd_condition(value: dict[str, Any]) -> PcdTest:
    """A mapping whose key is ``pcd`` or one of ``PCD_FORMS`` as its condition model."""
    if "pcd" in value:
        if len(value) != 1:
            raise PydanticCustomError("condition", "a pcd expression stands alone: "
                                      "{{pcd: \"metric(MDC_PULS_OXIM_SAT_O2) < 90\"}}")
        if not isinstance(value["pcd"], str):
            raise PydanticCustomError("condition", "pcd takes an expression as text")
        return parse_pcd_expression(value["pcd"])
    key = next(k for k in PCD_FORMS if k in value)
    return PCD_FORMS[key].model_validate(value)  # type: ignore[return-value]


# -- the expression language -------------------------------------------------------------

_METRIC_EXPR = re.compile(
    r"metric\(\s*(?P<name>[^)\s]+)\s*\)(?:\.value)?\s*"
    r"(?:(?P<exists>not\s+exists|exists)|(?P<op>==|>=|<=|>|<)\s*(?P<operand>.+?))\s*",
    re.S | re.I)
_THING_EXPR = re.compile(
    r"(?P<what>device|alarm\.priority|profile)\s*(?:(?P<op>==|is)|(?P<in>in))\s*(?P<operand>.+?)\s*",
    re.S | re.I)
_NUMBER_UNIT = re.compile(r"(?P<number>[+-]?(?:\d+(?:\.\d*)?|\.\d+))(?:\s+(?P<unit>\S+))?")
_EXPR_SYNTAX = (
    "expected a PCD expression such as 'metric(MDC_PULS_OXIM_SAT_O2).value < 90', "
    "'metric(150456) exists', 'device == infusion_pump', 'alarm.priority in [high, medium]' "
    "or 'profile == PCD-04'")
_THING_KEYS = {"device": "pcd_device", "alarm.priority": "pcd_alarm_priority",
               "profile": "pcd_profile"}
_SYMBOLS = {">": "gt", ">=": "ge", "<": "lt", "<=": "le"}


def _expression_error(detail: str) -> PydanticCustomError:
    return PydanticCustomError("pcd_syntax", "{detail}", {"detail": detail})


def parse_pcd_expression(text: str) -> PcdTest:
    """Parse ``metric(X).value < 90`` and friends into the structured test they mean."""
    stripped = text.strip()
    if stripped.lower().startswith("pcd."):
        stripped = stripped[4:]
    data: dict[str, Any]
    if match := _METRIC_EXPR.fullmatch(stripped):
        data = {"pcd_metric": match["name"]}
        if match["exists"]:
            data["exists"] = match["exists"].lower() == "exists"
        elif match["op"] == "==":
            data["equals"] = match["operand"].strip().strip("'\"")
        else:
            number = _NUMBER_UNIT.fullmatch(match["operand"].strip())
            if number is None:
                raise _expression_error(
                    f"'{match['op']}' compares numbers, optionally with a unit: "
                    "e.g. metric(MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD) > 10 mmol/L")
            data[_SYMBOLS[match["op"]]] = float(number["number"])
            if number["unit"]:
                data["unit"] = number["unit"]
        model: type[_PcdModel] = MetricTest
    elif match := _THING_EXPR.fullmatch(stripped):
        key = _THING_KEYS[match["what"].lower()]
        operand = match["operand"]
        if match["in"]:
            if not (operand.startswith("[") and operand.endswith("]")):
                raise _expression_error("'in' takes a list in brackets, e.g. [high, medium]")
            try:
                value: Any = yaml.safe_load(operand)
            except yaml.YAMLError:
                raise _expression_error("the list after 'in' cannot be read") from None
        else:
            value = operand.strip("'\"")
        data = {key: value}
        model = PCD_FORMS[key]
    else:
        raise _expression_error(_EXPR_SYNTAX)
    from pydantic import ValidationError

    try:
        return model.model_validate(data)  # type: ignore[return-value]
    except ValidationError as error:
        raise _expression_error("; ".join(e["msg"] for e in error.errors())) from None


# -- the message with its report ---------------------------------------------------------


class DeviceMessage(EditableMessage):
    """An editable message that keeps the device report read from it, read at most once.

    The pipeline builds every message as one; ``forget_report`` drops the cached report
    after an edit (the channel transformer) so later tests read the edited message.
    """

    __slots__ = ("_device_report", "_device_source", "_device_tz")

    @classmethod
    def read(cls, raw: bytes, default_tz: tzinfo | None = None) -> DeviceMessage:
        """Parse ``raw`` (raises HeaderError as ``EditableMessage.parse`` does)."""
        message = Message.parse(raw)
        new = cls.from_message(message)
        assert isinstance(new, DeviceMessage)
        new._device_report = None
        new._device_source = message
        new._device_tz = default_tz
        return new


def device_report(message: Any) -> DeviceReport:
    """The report of a message: cached on a ``DeviceMessage``, else read now."""
    if isinstance(message, DeviceMessage):
        report = message._device_report
        if report is None:
            source = message._device_source
            report = extract(source if source is not None else message.text,
                             default_tz=message._device_tz)
            message._device_report = report
        return report
    if isinstance(message, Message):
        return extract(message)
    text = getattr(message, "text", None)
    return extract(text if isinstance(text, str) else b"")


def forget_report(message: Any) -> None:
    """Drop a cached report: the message was (or may have been) edited."""
    if isinstance(message, DeviceMessage):
        message._device_report = None
        message._device_source = None


# -- compiling conditions ----------------------------------------------------------------


def _in_unit(metric: Metric, wanted: str | None) -> float | None:
    """The metric's numeric value in ``wanted`` (None: as given); None when not comparable."""
    if not isinstance(metric.value, float):
        return None
    if wanted is None:
        return metric.value
    target = ucum_of(wanted)
    unit = metric.unit
    have = None
    if unit is not None:
        have = unit.ucum or ucum_of(unit.refid or unit.code)
    if have is None:
        return None
    if have == target:
        return metric.value
    if have in ("mg/dL", "mmol/L") and target in ("mg/dL", "mmol/L"):
        return convert_glucose(metric.value, have, target)
    return None


_COMPARE: dict[str, Callable[[float, float], bool]] = {
    "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b,
}


def _metric_predicate(test: MetricTest) -> Callable[[DeviceReport], bool]:
    name, op = test.pcd_metric, test.operator
    if op == "exists":
        wanted = bool(test.exists)
        return lambda r: (r.metric(name) is not None) == wanted
    if op == "equals":
        text = test.equals

        def equals(report: DeviceReport) -> bool:
            for m in report.metrics_named(name):
                value = m.value
                shown = f"{value:g}" if isinstance(value, float) else str(value or "")
                if text in (shown, m.raw_value):
                    return True
            return False

        return equals
    compare, limit, unit = _COMPARE[op], float(getattr(test, op)), test.unit

    def numeric(report: DeviceReport) -> bool:
        for m in report.metrics_named(name):
            value = _in_unit(m, unit)
            if value is not None and compare(value, limit):
                return True
        return False

    return numeric


def _device_predicate(test: DeviceTest) -> Callable[[DeviceReport], bool]:
    kinds = test.pcd_device

    def holds(report: DeviceReport) -> bool:
        for kind in kinds:
            if kind == "infusion_pump" and report.is_infusion_pump:
                return True
            if kind == "monitor" and report.is_monitor:
                return True
            if kind == "personal_health_device" and report.is_personal_health_device:
                return True
            if kind.startswith("MDC_DEV_") and any(n.code.refid == kind for n in report.nodes()):
                return True
        return False

    return holds


def compile_pcd_condition(test: PcdTest) -> Callable[[Any], bool]:
    """A predicate over a message (its cached device report) for one PCD test."""
    check: Callable[[DeviceReport], bool]
    if isinstance(test, MetricTest):
        check = _metric_predicate(test)
    elif isinstance(test, DeviceTest):
        check = _device_predicate(test)
    elif isinstance(test, AlarmPriorityTest):
        priorities = test.pcd_alarm_priority
        check = lambda r: bool(r.alarms_with_priority(*priorities))  # noqa: E731
    elif isinstance(test, ProfileTest):
        wanted = frozenset(test.pcd_profile)
        check = lambda r: r.profile.upper() in wanted  # noqa: E731
    else:
        raise TypeError(f"not a PCD condition: {type(test).__name__}")
    return lambda message: check(device_report(message))


# -- the channel's pcd: section ----------------------------------------------------------


class PlausibilityRule(_PcdModel):
    """A plausible range of one metric: outside it the message is flagged or rejected."""

    metric: MetricName
    below: Number | None = Field(None, description="Values below this are implausible.")
    above: Number | None = Field(None, description="Values above this are implausible.")
    unit: UnitName | None = Field(
        None, description="The unit of below/above; values are converted (glucose) or, "
        "in another unit, not judged (recorded as a note).")
    action: Literal["flag", "reject"] = "flag"

    @model_validator(mode="after")
    def _a_limit(self) -> PlausibilityRule:
        if self.below is None and self.above is None:
            raise ValueError("a plausibility rule needs 'below', 'above' or both")
        if self.below is not None and self.above is not None and self.below >= self.above:
            raise ValueError("'below' must be less than 'above'")
        return self


class DeduplicateConfig(_PcdModel):
    """Observation-level de-duplication: how long a reading is remembered."""

    window_seconds: float = Field(86400.0, gt=0, le=90 * 86400)


def _deduplicate(value: Any) -> Any:
    if value is True:
        return {}
    if value is False:
        return None
    return value


class DeviceTrackingConfig(_PcdModel):
    """Device silence and completeness: expected interval, when silent, over what window."""

    expected_interval_seconds: float | None = Field(
        None, gt=0, description="Unset: learned per device (median of recent gaps).")
    silent_after: float = Field(3.0, gt=0, description="Silent after this many intervals.")
    window_seconds: float = Field(3600.0, gt=0, le=7 * 86400,
                                  description="Completeness is counted over this window.")


class PcdConfig(_PcdModel):
    """A channel's device data rules (``pcd:``)."""

    conformance: Literal["reject", "flag", "off"] = "off"
    plausibility: list[PlausibilityRule] = Field(default_factory=list)
    deduplicate: Annotated[DeduplicateConfig | None, BeforeValidator(_deduplicate)] = None
    devices: DeviceTrackingConfig | None = None
    default_timezone: str | None = Field(
        None, description="IANA zone for device times written without an offset.")

    @field_validator("default_timezone")
    @classmethod
    def _zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                ZoneInfo(value)
            except (ZoneInfoNotFoundError, ValueError):
                raise ValueError(f"{value[:60]!r} is not an IANA time zone") from None
        return value


# -- the compiled policy -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Assessment:
    """What the rules make of one report: findings that reject, findings only recorded."""

    rejected: tuple[Finding, ...] = ()
    flagged: tuple[Finding, ...] = ()


@dataclass(frozen=True, slots=True)
class Observation:
    """One reading's de-duplication key and the OBX (1-based among OBX) carrying it."""

    key: str
    obx: int


@dataclass(frozen=True, slots=True)
class Sighting(PickledByArguments):
    """A device heard from: its identity key and its unit (PV1-3 point of care)."""

    device: str
    unit: str = ""


def describe(findings: Iterable[Finding], limit: int = 600) -> str:
    """Findings as one line for the message's record: locations, codes and rule texts."""
    parts = [f"{f.location} {f.code} {f.text}" for f in findings]
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def error_details(findings: Iterable[Finding]) -> list[ErrorDetail]:
    """ERR entries for findings; a code outside table 0357 is reported as 207."""
    out = []
    for finding in findings:
        try:
            out.append(finding.to_error_detail())
        except ValueError:
            out.append(ErrorDetail(code=207, severity=finding.hl7_severity,
                                   segment=finding.segment, sequence=finding.sequence,
                                   field=finding.field, text=finding.text))
    return out


class DevicePolicy:
    """A channel's ``pcd:`` section compiled once: judge, de-duplicate, sight devices."""

    def __init__(self, channel: str, config: PcdConfig,
                 conformance: Callable[[Any, DeviceReport], Sequence[Finding]] | None = None
                 ) -> None:
        self.channel = channel
        self.config = config
        self.default_tz: tzinfo | None = (ZoneInfo(config.default_timezone)
                                          if config.default_timezone else None)
        self._conformance = conformance or conformance_findings
        self.rejects = config.conformance == "reject" or any(
            r.action == "reject" for r in config.plausibility)
        self.deduplicates = config.deduplicate is not None
        self.tracks_devices = config.devices is not None

    # -- rules --------------------------------------------------------------------------

    def assess(self, message: Any, report: DeviceReport) -> Assessment:
        """Conformance findings and plausibility outcomes, split by what they cause."""
        rejected: list[Finding] = []
        flagged: list[Finding] = []
        policy = self.config.conformance
        if policy != "off":
            for finding in self._conformance(message, report):
                if policy == "reject" and finding.severity == "error":
                    rejected.append(finding)
                else:
                    flagged.append(finding)
        for number, rule in enumerate(self.config.plausibility, 1):
            for finding in self._plausibility(number, rule, report):
                if rule.action == "reject" and finding.severity == "error":
                    rejected.append(finding)
                else:
                    flagged.append(finding)
        return Assessment(tuple(rejected), tuple(flagged))

    @staticmethod
    def _plausibility(number: int, rule: PlausibilityRule, report: DeviceReport
                      ) -> list[Finding]:
        out: list[Finding] = []
        unit = f" {rule.unit}" if rule.unit else ""
        for metric in report.metrics_named(rule.metric):
            if not isinstance(metric.value, float):
                continue
            where = f"{metric.location}-5" if metric.location else "OBX"
            value = _in_unit(metric, rule.unit)
            name = metric.code.refid or rule.metric
            if value is None:
                out.append(Finding("info", f"{metric.location}-6", 207,
                                   f"plausibility rule {number} ({name}) not applied: the "
                                   f"unit cannot be compared with{unit}"))
            elif rule.below is not None and value < rule.below:
                out.append(Finding("error", where, 207,
                                   f"{name} at {where} below the plausible limit "
                                   f"{rule.below:g}{unit} (plausibility rule {number}, "
                                   f"{rule.action})"))
            elif rule.above is not None and value > rule.above:
                out.append(Finding("error", where, 207,
                                   f"{name} at {where} above the plausible limit "
                                   f"{rule.above:g}{unit} (plausibility rule {number}, "
                                   f"{rule.action})"))
        return out

    def screen(self, raw: bytes) -> list[ErrorDetail]:
        """What rejects a message before its ACK: ERR entries, [] when it is accepted.

        Only for channels with a rule whose action is reject; never raises (a message this
        cannot read is left to the pipeline, which records why).
        """
        if not self.rejects:
            return []
        try:
            message = Message.parse(raw)
            report = extract(message, default_tz=self.default_tz)
            assessment = self.assess(message, report)
        except Exception:  # the pipeline judges it again and records why
            return []
        return error_details(assessment.rejected)

    # -- de-duplication -----------------------------------------------------------------

    def observations(self, report: DeviceReport) -> tuple[Observation, ...]:
        """A key per reading (patient, device, code, OBX-4 path, time), hashed: no PHI."""
        if not self.deduplicates:
            return ()
        patient = report.patient
        who = ""
        if patient is not None and patient.identifiers:
            first = patient.identifiers[0]
            who = f"{first.value}^{first.authority}"
        fallback = report.device_identity
        out: list[Observation] = []
        for metric in report.metrics:
            if metric.observed_at is None or metric.value is None:
                continue
            obx = _obx_number(metric.location)
            if obx is None:
                continue
            device = metric.device or fallback
            path = metric.path.dotted() if metric.path is not None else ""
            at = metric.observed_at.astimezone(UTC).isoformat()
            material = "\x1f".join((self.channel, who, device.key if device else "",
                                    metric.code.code, metric.code.refid, path, at))
            out.append(Observation(hashlib.sha256(material.encode()).hexdigest(), obx))
        return tuple(out)

    # -- devices ------------------------------------------------------------------------

    def sightings(self, message: Any, report: DeviceReport) -> tuple[Sighting, ...]:
        """The devices a message comes from (MDS identities), with the PV1-3 unit."""
        if not self.tracks_devices:
            return ()
        keys: list[str] = []
        for node in report.nodes():
            identity = node.identity
            if node.level == "MDS" and identity is not None and identity.key not in keys:
                keys.append(identity.key)
        if not keys and report.device_identity is not None:
            keys.append(report.device_identity.key)
        if not keys:
            return ()
        unit = ""
        try:
            unit = message.get("PV1-3.1").strip()[:64]
        except Exception:  # a unit is a nicety, never a reason to fail
            unit = ""
        return tuple(Sighting(key[:250], unit) for key in keys)


def conformance_findings(message: Any, report: DeviceReport) -> list[Finding]:
    """``profiles.pcd.conformance.check`` findings plus what extraction met, once each."""
    view: Any = message
    if isinstance(message, DeviceMessage):
        view = message._device_source if message._device_source is not None else message.text
    elif not isinstance(message, Message):
        view = getattr(message, "text", "")
    found = list(check(view))
    seen = {(f.location, f.code) for f in found}
    found += [f for f in report.findings if (f.location, f.code) not in seen]
    return found


def _obx_number(location: str) -> int | None:
    if location.startswith("OBX[") and "]" in location:
        number = location[4:location.index("]")]
        return int(number) if number.isdigit() else None
    return None


def without_observations(message: EditableMessage, obx_numbers: Iterable[int]
                         ) -> DeviceMessage:
    """A copy of ``message`` without the given OBX segments (and the NTEs after them)."""
    drop = set(obx_numbers)
    kept: list[str] = []
    obx = 0
    dropping = False
    for segment in message.segments():
        if segment.name == "OBX":
            obx += 1
            dropping = obx in drop
        elif segment.name != "NTE":
            dropping = False
        if not dropping:
            kept.append(segment.text)
    new = DeviceMessage(kept, message.delimiters, message.codec, message.get("MSH-18"))
    new._device_report = None
    new._device_source = None
    new._device_tz = getattr(message, "_device_tz", None)
    return new


def owners_text(owners: Mapping[str, int]) -> str:
    """``message 12`` or ``messages 12, 15``: who carried readings first."""
    ids = sorted(set(owners.values()))
    shown = ", ".join(str(i) for i in ids[:5]) + (" …" if len(ids) > 5 else "")
    return f"message{'s' if len(ids) > 1 else ''} {shown}"


__all__ = [
    "Assessment", "DeviceMessage", "DevicePolicy", "Observation", "PcdConfig",
    "PcdTest", "Sighting", "compile_pcd_condition", "device_report", "forget_report",
    "parse_pcd_expression", "validate_pcd_condition", "without_observations",
]
