"""Plain typed records of what an IHE PCD message says: the contract other code builds on.

``extract`` (in ``extract.py``) turns one PCD-01 / PCD-04 / PCD-10 / PCD-15 or Continua
PHD message into a ``DeviceReport``; FHIR mapping, simulators and channel rules read these
records and never the message. Every record is frozen and slotted. This module only ever
grows: new fields come with defaults, nothing is renamed or removed.

Values are kept as the message gives them (a remaining time in seconds stays in seconds);
``raw`` fields keep the text as written so nothing is lost when a value cannot be read.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from profiles.hl7.ack import ErrorDetail

Level = Literal["MDS", "VMD", "CHAN"]
Severity = Literal["error", "warning", "info"]
Priority = Literal["high", "medium", "low", "none"]

# OBX-8 / MDC_ATTR_ALARM_PRIORITY codes of IEC 60601-1-8 priorities as IHE PCD ACM writes them.
PRIORITY_CODES: dict[str, Priority] = {"PH": "high", "PM": "medium", "PL": "low", "PN": "none"}
# OBX-8 / MDC_ATTR_ALERT_TYPE codes: physiological, technical, advisory.
ALERT_TYPES: dict[str, str] = {"SP": "physiological", "ST": "technical", "SA": "advisory"}


@dataclass(frozen=True, slots=True)
class Code:
    """A coded value (OBX-3, a CWE OBX-5, OBR-4): ``150456 / MDC_PULS_OXIM_SAT_O2 / MDC``.

    ``code`` is the numeric MDC code as written ('' or '0' when the sender left it
    pending), ``refid`` the reference id, ``system`` the coding system (``MDC`` normally),
    ``text`` the original or alternate text when one is given.
    """

    code: str
    refid: str = ""
    system: str = ""
    text: str = ""

    def matches(self, key: str | int) -> bool:
        """True when ``key`` is this code's number or reference id (``'150456'`` or
        ``'MDC_PULS_OXIM_SAT_O2'``); a pending code ``0`` matches nothing by number."""
        key = str(key).strip()
        if not key:
            return False
        if key == self.refid:
            return True
        return key == self.code and self.code not in ("", "0")

    @property
    def is_mdc(self) -> bool:
        """Coded in ISO/IEEE 11073-10101 (``MDC``)."""
        return self.system.upper() == "MDC"

    def __str__(self) -> str:
        return self.refid or self.code or self.text


@dataclass(frozen=True, slots=True)
class Unit:
    """OBX-6 as given plus its UCUM form: ``266016 / MDC_DIM_MMHG / MDC``, ucum ``mm[Hg]``.

    ``ucum`` comes from the message when it states UCUM (as the primary or the alternate
    coding) and from the shipped MDC → UCUM map otherwise; None when neither knows it.
    """

    code: str
    refid: str = ""
    system: str = ""
    ucum: str | None = None

    def __str__(self) -> str:
        return self.ucum or self.refid or self.code


@dataclass(frozen=True, slots=True)
class Quantity:
    """A number with the unit the message gave it (never converted)."""

    value: float
    unit: Unit | None = None
    raw: str = ""

    def __str__(self) -> str:
        return f"{self.raw or self.value} {self.unit or ''}".strip()


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """Who a device is, from OBX-18 (an HL7 EI) or, failing that, MDC_ATTR_SYS_ID.

    ``id`` is the entity identifier (EI-1; EI-3 when EI-1 is empty), unique within
    ``authority`` (EI-3, the universal id, e.g. a manufacturer's EUI-64 prefix), ``scheme``
    the identifier type (EI-4: ``EUI-64``, ``URN``, ``DNS``, ``ISO``; ``MDC_ATTR_SYS_ID``
    for a system id; ``local`` when nothing says), ``name`` the namespace (EI-2).
    ``key`` is the one stable string to group, de-duplicate or watch a device by.
    MSH-3 alone never makes a device identity: it is often a shared gateway.
    """

    id: str
    scheme: str = "local"
    name: str = ""
    authority: str = ""
    source: str = "OBX-18"

    @property
    def key(self) -> str:
        """``scheme:authority:id`` (authority left out when empty): stable per device."""
        if self.authority and self.authority != self.id:
            return f"{self.scheme}:{self.authority}:{self.id}"
        return f"{self.scheme}:{self.id}"

    @property
    def eui64(self) -> str | None:
        """The id as an EUI-64 (16 hex digits, upper case) when it is one, else None."""
        text = self.id.replace("-", "").replace(":", "")
        if len(text) == 16 and all(c in "0123456789abcdefABCDEF" for c in text):
            return text.upper()
        return None


@dataclass(frozen=True, slots=True)
class ContainmentPath:
    """OBX-4 as the IEEE 11073 containment tree: MDS.VMD.CHAN.METRIC[.FACET].

    Missing trailing levels count as 0 (``1.0.1`` is channel 1 of VMD 0 of MDS 1);
    ``depth`` is how many levels were written. ``facet`` is the fifth level: the parts of
    a PCD-04 alarm (``1.3.1.150456.1``) or a PHD measurement's attribute (``1.0.0.2.1``).
    """

    mds: int
    vmd: int = 0
    channel: int = 0
    metric: int = 0
    facet: int | None = None
    depth: int = 4

    @staticmethod
    def parse(text: str) -> ContainmentPath | None:
        """``'1.3.1.150456.1'`` → a path; None unless 1 to 5 dot-separated numbers."""
        parts = text.strip().split(".")
        if not 1 <= len(parts) <= 5 or not all(p.isdigit() and len(p) <= 9 for p in parts):
            return None
        numbers = [int(p) for p in parts]
        padded = numbers[:4] + [0] * (4 - min(len(numbers), 4))
        facet = numbers[4] if len(numbers) == 5 else None
        return ContainmentPath(*padded, facet=facet, depth=len(numbers))

    def dotted(self) -> str:
        """The full form, ``1.1.1.0`` or ``1.3.1.150456.1``."""
        levels = [self.mds, self.vmd, self.channel, self.metric]
        if self.facet is not None:
            levels.append(self.facet)
        return ".".join(str(n) for n in levels)

    @property
    def level(self) -> Level | Literal["METRIC", "FACET"]:
        """The tree level the path itself names (trailing zeros mean a containing node)."""
        if self.facet is not None:
            return "FACET"
        if self.metric:
            return "METRIC"
        if self.channel:
            return "CHAN"
        if self.vmd:
            return "VMD"
        return "MDS"

    def ancestors(self) -> tuple[ContainmentPath, ...]:
        """The MDS, VMD and channel paths above this one, outermost first."""
        mds = ContainmentPath(self.mds)
        vmd = ContainmentPath(self.mds, self.vmd)
        chan = ContainmentPath(self.mds, self.vmd, self.channel)
        return {"MDS": (), "VMD": (mds,), "CHAN": (mds, vmd)}.get(self.level, (mds, vmd, chan))

    def node_key(self, level: Level) -> tuple[int, ...]:
        """The part of the path that names the node at ``level`` above (or at) this one."""
        if level == "MDS":
            return (self.mds,)
        if level == "VMD":
            return (self.mds, self.vmd)
        return (self.mds, self.vmd, self.channel)

    def __str__(self) -> str:
        return self.dotted()


@dataclass(frozen=True, slots=True)
class DeviceNode:
    """One MDS, VMD or channel of the device tree, as its OBX row declares it.

    ``identity`` is the node's own OBX-18, or the nearest ancestor's (inherited down from
    the MDS); ``location`` is the declaring row, e.g. ``OBX[1]``.
    """

    level: Level
    path: ContainmentPath
    code: Code
    identity: DeviceIdentity | None = None
    children: tuple[DeviceNode, ...] = ()
    location: str = ""

    def walk(self) -> tuple[DeviceNode, ...]:
        """This node and every node below it, depth first."""
        out: list[DeviceNode] = [self]
        for child in self.children:
            out.extend(child.walk())
        return tuple(out)


@dataclass(frozen=True, slots=True)
class Metric:
    """One observation row (OBX) with a value: a measurement, setting or status.

    ``value`` is a float for NM (and SN/numeric text that reads as one), the text for
    ST/TX, the code's reference id (else its text, else its number) for CWE/CE, and None
    when empty or unreadable; ``raw_value`` keeps OBX-5 as written. ``observed_at`` is
    OBX-14, else OBR-7, else MSH-7 (``time_source`` says which), always timezone-aware or
    None. ``device`` is the row's own OBX-18 or the one inherited from its device node.
    """

    set_id: str
    path: ContainmentPath | None
    code: Code
    value_type: str
    value: float | str | None
    raw_value: str = ""
    unit: Unit | None = None
    observed_at: datetime | None = None
    status: str = ""
    device: DeviceIdentity | None = None
    reference_range: str = ""
    abnormal_flags: tuple[str, ...] = ()
    location: str = ""
    value_code: Code | None = None
    samples: tuple[float, ...] = ()
    time_source: str = ""

    @property
    def quantity(self) -> Quantity | None:
        """The value with its unit when numeric."""
        if isinstance(self.value, float):
            return Quantity(self.value, self.unit, self.raw_value)
        return None

    @property
    def refid(self) -> str:
        """The MDC reference id of what was measured."""
        return self.code.refid


@dataclass(frozen=True, slots=True)
class PumpChannel:
    """One infusion channel (a pump VMD) summarised from its delivery and source rows.

    Rates, volumes and times keep the unit the pump sent (remaining time may be seconds or
    minutes). ``infusing_status`` and ``delivery_status`` are the pump's enumerations as
    written, e.g. ``pump-status-infusing`` and ``pump-delivery-status-delivering``.
    """

    path: ContainmentPath
    device: DeviceIdentity | None = None
    label: str | None = None
    programmed_rate: Quantity | None = None
    current_rate: Quantity | None = None
    dose_rate: Quantity | None = None
    drug_name: str | None = None
    concentration: Quantity | None = None
    volume_to_be_infused: Quantity | None = None
    volume_remaining: Quantity | None = None
    volume_delivered: Quantity | None = None
    time_remaining: Quantity | None = None
    infusing_status: str | None = None
    delivery_status: str | None = None
    not_delivering_reason: str | None = None
    code: Code | None = None

    @property
    def is_infusing(self) -> bool | None:
        """True/False from the infusing status; None when the pump did not say."""
        if self.infusing_status is None:
            return None
        status = self.infusing_status.lower()
        return "infusing" in status and "not" not in status


@dataclass(frozen=True, slots=True)
class Alarm:
    """One alert of a PCD-04 report (or an alert condition a pump reports in PCD-01).

    ``code`` is the alarm condition (``MDC_EVT_LO``, ``MDC_EVT_FLUID_LINE_OCCL``),
    ``text`` the device's alert text. ``priority`` is high/medium/low/none from PH/PM/PL/PN
    (``priority_code``), ``alert_type`` SP/ST/SA. ``source`` is the alert source as coded
    (a metric or device code) and ``source_metric`` the row carrying the value that
    raised it (the SpO2 of 88 behind a low-SpO2 alarm), when the message has one.
    """

    code: Code
    path: ContainmentPath | None = None
    text: str = ""
    phase: str | None = None
    state: str | None = None
    inactivation_state: str | None = None
    priority: Priority | None = None
    priority_code: str | None = None
    alert_type: str | None = None
    source: Code | None = None
    source_metric: Metric | None = None
    observed_at: datetime | None = None
    device: DeviceIdentity | None = None
    abnormal_flags: tuple[str, ...] = ()
    location: str = ""

    @property
    def kind(self) -> str | None:
        """physiological / technical / advisory from ``alert_type``."""
        return ALERT_TYPES.get(self.alert_type or "")

    @property
    def is_active(self) -> bool:
        """The alarm state says active (a phase ``end`` or state ``inactive`` is not)."""
        return (self.state or "").lower() == "active"


@dataclass(frozen=True, slots=True)
class Finding:
    """One conformance or extraction remark, with where it is and what HL7 calls it.

    ``location`` is a field path (``OBX[3]-4``, ``MSH-21``); ``code`` the HL7 table 0357
    error code (101 required field missing, 102 data type error, 103 table value not
    found, 100 segment sequence error, 200/201/203 unsupported type/event/version, 207
    other). ``text`` names codes and rules only, never message content.
    """

    severity: Severity
    location: str
    code: int
    text: str

    @property
    def segment(self) -> str:
        """The segment name of ``location`` (``OBX``)."""
        return self.location[:3]

    @property
    def sequence(self) -> int:
        """Which repetition of the segment (``OBX[3]`` → 3; 1 when not given)."""
        head = self.location.split("-", 1)[0]
        if "[" in head and head.endswith("]"):
            number = head[head.index("[") + 1 : -1]
            if number.isdigit():
                return int(number)
        return 1

    @property
    def field(self) -> int | None:
        """The field number of ``location`` (``OBX[3]-4.1`` → 4), None for a segment."""
        if "-" not in self.location:
            return None
        number = self.location.split("-", 1)[1].split(".", 1)[0].split("[", 1)[0]
        return int(number) if number.isdigit() else None

    @property
    def component(self) -> int | None:
        """The component number of ``location`` (``OBX[3]-4.1`` → 1), if any."""
        if "-" not in self.location:
            return None
        parts = self.location.split("-", 1)[1].split(".")
        return int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None

    @property
    def hl7_severity(self) -> str:
        """HL7 table 0516: E, W or I."""
        return {"error": "E", "warning": "W"}.get(self.severity, "I")

    def to_error_detail(self) -> ErrorDetail:
        """This finding as one ERR segment's content (HL7 table 0357 code, 0516 severity)."""
        return ErrorDetail(
            code=self.code,
            severity=self.hl7_severity,
            segment=self.segment,
            sequence=self.sequence,
            field=self.field,
            component=self.component,
            text=self.text,
        )


@dataclass(frozen=True, slots=True)
class PatientIdentifier:
    """One PID-3 repetition: the id, who assigned it (CX-4) and its type (CX-5, e.g. MR)."""

    value: str
    authority: str = ""
    type_code: str = ""


@dataclass(frozen=True, slots=True)
class PatientRef:
    """The patient a report is about: identifiers for routing; the name only if wanted.

    ``identifiers`` are PID-3 in order; ``name`` is PID-5 formatted 'Family^Given' as
    written, or None. Device-only reports often say "Unknown Patient" here.
    """

    identifiers: tuple[PatientIdentifier, ...] = ()
    name: str | None = None

    @property
    def primary_id(self) -> str:
        """The first PID-3 id ('' when none)."""
        return self.identifiers[0].value if self.identifiers else ""


@dataclass(frozen=True, slots=True)
class DeviceReport:
    """Everything one device message says, read once.

    ``profile`` is ``PCD-01``, ``PCD-04``, ``PCD-10``, ``PCD-15``, ``PHD`` or '' when it is
    none of them. ``devices`` are the roots of the declared device tree. ``sender`` is the
    MSH-3 application (often a gateway) when it carries an id: never the device identity.
    ``findings`` are what extraction met on the way; ``extract`` never raises.
    """

    profile: str
    control_id: str = ""
    message_type: str = ""
    message_time: datetime | None = None
    patient: PatientRef | None = None
    devices: tuple[DeviceNode, ...] = ()
    metrics: tuple[Metric, ...] = ()
    pumps: tuple[PumpChannel, ...] = ()
    alarms: tuple[Alarm, ...] = ()
    findings: tuple[Finding, ...] = ()
    sender: DeviceIdentity | None = None
    profile_ids: tuple[str, ...] = ()

    def metric(self, key: str | int) -> Metric | None:
        """The first metric whose code number or reference id is ``key``."""
        for metric in self.metrics:
            if metric.code.matches(key):
                return metric
        return None

    def metrics_named(self, *keys: str | int) -> tuple[Metric, ...]:
        """Every metric matching any of ``keys`` (numbers or reference ids), in order."""
        return tuple(m for m in self.metrics if any(m.code.matches(k) for k in keys))

    def nodes(self) -> tuple[DeviceNode, ...]:
        """Every declared device node, depth first."""
        out: list[DeviceNode] = []
        for root in self.devices:
            out.extend(root.walk())
        return tuple(out)

    @property
    def device_identity(self) -> DeviceIdentity | None:
        """The MDS's identity (the first MDS with one), else the first one any node has."""
        nodes = self.nodes()
        for node in nodes:
            if node.level == "MDS" and node.identity is not None:
                return node.identity
        for node in nodes:
            if node.identity is not None:
                return node.identity
        for metric in self.metrics:
            if metric.device is not None:
                return metric.device
        return None

    @property
    def is_infusion_pump(self) -> bool:
        """A pump MDS/VMD is declared, or the report has pump channels."""
        if self.pumps:
            return True
        return any(node.code.refid.startswith("MDC_DEV_PUMP") for node in self.nodes())

    @property
    def is_monitor(self) -> bool:
        """A physiological monitor or meter (not a pump): by its MDS or, with no device
        tree, by carrying vital-sign metrics such as pressures, rates or SpO2."""
        if self.is_infusion_pump:
            return False
        for node in self.nodes():
            refid = node.code.refid
            if node.level == "MDS" and refid.startswith(("MDC_DEV_MON", "MDC_DEV_METER")):
                return True
        if any(node.level == "MDS" for node in self.nodes()):
            return False
        vital = ("MDC_PRESS_", "MDC_ECG_", "MDC_PULS_", "MDC_RESP_", "MDC_TEMP", "MDC_BLD_")
        return any(m.code.refid.startswith(vital) for m in self.metrics)

    @property
    def is_personal_health_device(self) -> bool:
        """A Continua / IEEE 11073-20601 personal health device (MDC_DEV_SPEC_PROFILE_*)."""
        return any(n.code.refid.startswith("MDC_DEV_SPEC_PROFILE") for n in self.nodes())

    def alarms_with_priority(self, *priorities: str) -> tuple[Alarm, ...]:
        """Alarms of the given priorities, by name (``high``) or code (``PH``)."""
        wanted = {PRIORITY_CODES.get(p.upper(), p.lower()) for p in priorities}
        return tuple(a for a in self.alarms if a.priority in wanted)

    @property
    def errors(self) -> tuple[Finding, ...]:
        """Findings of severity error."""
        return tuple(f for f in self.findings if f.severity == "error")
