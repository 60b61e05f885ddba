"""Read one IHE PCD message (PCD-01, PCD-04, PCD-10, PCD-15, Continua PHD) into records.

One pass over the OBX segments of the lazy message view: each row becomes a device node
(MDS/VMD/CHAN by its OBX-4 containment path and its code), part of an alarm, or a metric;
pump channels are then summarised from their metrics. ``extract`` never raises: what it
cannot read becomes a ``Finding`` and the rest of the report is still filled in.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime, tzinfo
from typing import Any

from profiles.hl7.delimiters import Delimiters
from profiles.hl7.header import HeaderError
from profiles.hl7.message import Message, Segment
from profiles.pcd import hl7read
from profiles.pcd.codes import ucum_for_unit
from profiles.pcd.records import (
    ALERT_TYPES,
    PRIORITY_CODES,
    Alarm,
    Code,
    ContainmentPath,
    DeviceIdentity,
    DeviceNode,
    DeviceReport,
    Finding,
    Level,
    Metric,
    PatientIdentifier,
    PatientRef,
    PumpChannel,
    Quantity,
    Severity,
    Unit,
)

# Alarm attribute rows (IHE PCD ACM), by reference id and by code.
_ALARM_ATTRIBUTES = {
    "MDC_ATTR_ALERT_SOURCE": "source",
    "MDC_ATTR_EVENT_PHASE": "phase",
    "MDC_ATTR_ALARM_STATE": "state",
    "MDC_ATTR_ALARM_INACTIVATION_STATE": "inactivation_state",
    "MDC_ATTR_ALARM_PRIORITY": "priority",
    "MDC_ATTR_ALERT_TYPE": "alert_type",
    "MDC_ATTR_ALERT_TEXT": "text",
}
_ALARM_ATTRIBUTE_CODES = {
    "68480": "source",
    "68481": "phase",
    "68482": "state",
    "68483": "inactivation_state",
    "68484": "priority",
    "68485": "alert_type",
    "68546": "text",
}
_ALARM_EVENT = ("MDC_EVT_ALARM", "196616")
_ALERT_CONDITION = ("MDC_ATTR_AL_COND", "68012")
_SYSTEM_ID = ("MDC_ATTR_SYS_ID", "67972")

# Pump channel fields: the metric codes that fill them (refid variants seen in the field).
_PUMP_FIELDS: dict[str, tuple[str, ...]] = {
    "programmed_rate": ("MDC_FLOW_FLUID_PUMP", "157784"),
    "current_rate": ("MDC_FLOW_FLUID_PUMP_CURRENT", "158014"),
    "dose_rate": ("MDC_RATE_DOSE", "157924"),
    "drug_name": ("MDC_DRUG_NAME_LABEL", "184514"),
    "concentration": ("MDC_CONC_DRUG", "157760"),
    "volume_to_be_infused": ("MDC_VOL_FLUID_TBI", "157884"),
    "volume_remaining": ("MDC_VOL_FLUID_TBI_REMAIN", "157872"),
    "volume_delivered": ("MDC_VOL_FLUID_DELIV_TOTAL", "157993"),
    "time_remaining": ("MDC_TIME_PD_REMAIN", "157916"),
    "infusing_status": ("MDC_PUMP_INFUSING_STATUS", "184519"),
    "delivery_status": (
        "MDC_PUMP_CURRENT_DELIVERY_STATUS",
        "MDC_DEV_PUMP_CURRENT_DELIVERY_STATUS",
        "158005",
    ),
    "not_delivering_reason": (
        "MDC_PUMP_NOT_DELIVERING_REASON",
        "MDC_DEV_PUMP_NOT_DELIVERING_REASON",
        "158006",
    ),
    "label": ("MDC_PUMP_SOURCE_CHANNEL_LABEL", "MDC_DEV_PUMP_SOURCE_CHANNEL_LABEL", "158012"),
}
_PUMP_TEXT_FIELDS = frozenset(
    {"drug_name", "infusing_status", "delivery_status", "not_delivering_reason", "label"}
)
_PUMP_LOOKUP = {key: name for name, keys in _PUMP_FIELDS.items() for key in keys}

_CODED_TYPES = frozenset({"CWE", "CE", "CNE", "CF"})


def extract(message: Message | bytes | str, *, default_tz: tzinfo | None = None) -> DeviceReport:
    """The report of ``message``; never raises.

    Times without an offset are read in ``default_tz`` when given, else in the offset
    MSH-7 states (the sender's own), else left None with one warning.
    """
    try:
        view = message if isinstance(message, Message) else Message.parse(message)
    except HeaderError as error:
        field_ref = f"MSH-{error.field}" if error.field else "MSH"
        code = error.code if error.code in (100, 101, 102, 103, 203) else 100
        return DeviceReport("", findings=(Finding("error", field_ref, code, error.reason),))
    except Exception as error:  # defensive: bytes nobody can view still get an answer
        text = f"message could not be read ({type(error).__name__})"
        return DeviceReport("", findings=(Finding("error", "MSH", 100, text),))
    try:
        return _Extraction(view, default_tz).run()
    except Exception as error:  # a bug must not cost the message its answer
        text = f"extraction stopped early ({type(error).__name__})"
        return DeviceReport(
            "",
            control_id=view.header.control_id,
            findings=(Finding("error", "MSH", 207, text),),
        )


@dataclass(slots=True)
class _Row:
    """One OBX, read once."""

    index: int
    set_id: str
    value_type: str
    code: Code
    path: ContainmentPath | None
    raw_value: str
    first_value: str
    unit: Unit | None
    reference_range: str
    flags: tuple[str, ...]
    status: str
    observed_at: datetime | None
    time_source: str
    identity: DeviceIdentity | None

    @property
    def location(self) -> str:
        return f"OBX[{self.index}]"

    def key_in(self, keys: tuple[str, ...]) -> bool:
        return self.code.refid in keys or (self.code.code in keys and self.code.code != "0")


@dataclass(slots=True)
class _AlarmDraft:
    """An alarm being assembled from its head row and the attribute rows after it."""

    head: _Row
    code: Code
    text: str
    values: dict[str, Any] = field(default_factory=dict)
    source_metric: Metric | None = None


class _Extraction:
    """The state of one extraction pass; see ``extract``."""

    def __init__(self, message: Message, default_tz: tzinfo | None) -> None:
        self.message = message
        self.d: Delimiters = message.delimiters
        self.codec = message.codec
        self.default_tz = default_tz
        self.findings: list[Finding] = []
        self.sender_zone: tzinfo | None = None
        self.naive_times = 0
        self.first_naive = ""
        self.unreadable_times = 0

    def warn(self, location: str, code: int, text: str, severity: Severity = "warning") -> None:
        self.findings.append(Finding(severity, location, code, text))

    # -- header and patient ---------------------------------------------------------------

    def run(self) -> DeviceReport:
        header = self.message.header
        msh = self.message.segments("MSH")[0]
        message_time = self._message_time(msh)
        profile_ids = tuple(
            hl7read.leaf(hl7read.components(rep, self.d)[0], self.d, self.codec).strip()
            for rep in msh.repetitions(21)
            if rep
        )
        rows = self._rows(message_time)
        nodes, node_rows = self._nodes(rows)
        identities = self._identities(rows, nodes)
        metrics, alarms = self._metrics_and_alarms(rows, node_rows, identities)
        pumps = self._pumps(metrics, nodes, identities)
        if self.naive_times:
            self.warn(
                self.first_naive,
                102,
                f"{self.naive_times} time(s) without an offset and no default time zone;"
                " left unset",
            )
        profile = _profile(header.message_type, header.trigger_event, profile_ids, rows)
        message_type = header.message_type
        if header.trigger_event:
            message_type += f"^{header.trigger_event}"
        return DeviceReport(
            profile=profile,
            control_id=header.control_id,
            message_type=message_type,
            message_time=message_time,
            patient=self._patient(),
            devices=_tree(nodes, identities),
            metrics=tuple(metrics),
            pumps=tuple(pumps),
            alarms=tuple(alarms),
            findings=tuple(self.findings),
            sender=hl7read.parse_identity(msh.field(3), self.d, self.codec, "MSH-3"),
            profile_ids=profile_ids,
        )

    def _message_time(self, msh: Segment) -> datetime | None:
        text = msh.field(7).split(self.d.component, 1)[0]
        moment, has_offset = hl7read.parse_dtm(text)
        if moment is None:
            if text.strip():
                self.warn("MSH-7", 102, "MSH-7 is not an HL7 date/time")
            return None
        if has_offset:
            self.sender_zone = moment.tzinfo
            return moment
        return self._zone(moment, "MSH-7")

    def _time(self, text: str, location: str) -> datetime | None:
        text = text.split(self.d.component, 1)[0]
        if not text.strip():
            return None
        moment, has_offset = hl7read.parse_dtm(text)
        if moment is None:
            self.warn(location, 102, f"{location} is not an HL7 date/time")
            return None
        return moment if has_offset else self._zone(moment, location)

    def _zone(self, moment: datetime, location: str) -> datetime | None:
        zone = self.default_tz or self.sender_zone
        if zone is None:
            self.naive_times += 1
            self.first_naive = self.first_naive or location
            return None
        return hl7read.localise(moment, zone)

    def _patient(self) -> PatientRef | None:
        pids = self.message.segments("PID")
        if not pids:
            return None
        pid = pids[0]
        ids: list[PatientIdentifier] = []
        for rep in pid.repetitions(3):
            parts = hl7read.components(rep, self.d)
            value = hl7read.leaf(parts[0], self.d, self.codec).strip()
            if not value:
                continue
            authority = parts[3] if len(parts) > 3 else ""
            subs = authority.split(self.d.subcomponent)
            authority = next((s for s in subs if s.strip()), "")
            kind = parts[4] if len(parts) > 4 else ""
            ids.append(
                PatientIdentifier(
                    value,
                    hl7read.leaf(authority, self.d, self.codec).strip(),
                    hl7read.leaf(kind, self.d, self.codec).strip(),
                )
            )
        name_parts = hl7read.components(pid.repetitions(5)[0], self.d)
        family_given = [hl7read.leaf(p, self.d, self.codec) for p in name_parts[:2]]
        name = "^".join(family_given).strip("^") or None
        return PatientRef(tuple(ids), name)

    # -- rows --------------------------------------------------------------------------------

    def _rows(self, message_time: datetime | None) -> list[_Row]:
        rows: list[_Row] = []
        obr_time: datetime | None = None
        index = 0
        for segment in self.message.segments():
            if segment.name == "OBR":
                obr_time = self._time(segment.field(7), "OBR-7")
            elif segment.name == "OBX":
                index += 1
                rows.append(self._row(segment, index, obr_time, message_time))
        return rows

    def _row(
        self, obx: Segment, index: int, obr_time: datetime | None, msh_time: datetime | None
    ) -> _Row:
        d, codec = self.d, self.codec
        fields = obx.text.split(d.field)
        fields += [""] * (19 - len(fields))
        location = f"OBX[{index}]"
        path_text = fields[4].strip()
        path = ContainmentPath.parse(path_text) if path_text else None
        if path_text and path is None:
            self.warn(f"{location}-4", 102, "OBX-4 is not a containment path (MDS.VMD.CHAN.METRIC)")
        observed = self._time(fields[14], f"{location}-14") if fields[14] else None
        source = "OBX-14"
        if observed is None:
            observed, source = (obr_time, "OBR-7") if obr_time else (msh_time, "MSH-7")
            if observed is None:
                source = ""
        identity = None
        if fields[18]:
            for rep in fields[18].split(d.repetition):
                identity = hl7read.parse_identity(rep, d, codec, "OBX-18")
                if identity is not None:
                    break
        raw_value = fields[5]
        flags: tuple[str, ...] = ()
        if fields[8]:
            flags = tuple(f.strip() for f in fields[8].split(d.repetition) if f.strip())
        return _Row(
            index=index,
            set_id=fields[1].strip(),
            value_type=fields[2].strip().upper(),
            code=hl7read.parse_code(fields[3], d, codec),
            path=path,
            raw_value=raw_value,
            first_value=raw_value.split(d.repetition, 1)[0] if d.repetition else raw_value,
            unit=self._unit(fields[6]),
            reference_range=hl7read.leaf(fields[7], d, codec),
            flags=flags,
            status=fields[11].strip(),
            observed_at=observed,
            time_source=source,
            identity=identity,
        )

    def _unit(self, text: str) -> Unit | None:
        if not text.strip():
            return None
        parts = [
            hl7read.leaf(p, self.d, self.codec).strip() for p in hl7read.components(text, self.d)
        ]
        parts += [""] * (6 - len(parts))
        code, name, system, alt_code, _, alt_system = parts[:6]
        if system.upper() == "UCUM":
            return Unit(code, "", system, code or name)
        ucum = alt_code if alt_system.upper() == "UCUM" and alt_code else None
        if ucum is None:
            ucum = ucum_for_unit(name) if name else None
            if ucum is None and code:
                ucum = ucum_for_unit(code)
        refid = name if system.upper() == "MDC" or name.startswith("MDC_") else ""
        return Unit(code, refid, system, ucum)

    # -- device tree ---------------------------------------------------------------------

    def _nodes(
        self, rows: list[_Row]
    ) -> tuple[dict[tuple[int, ...], tuple[DeviceNode, _Row]], set[int]]:
        nodes: dict[tuple[int, ...], tuple[DeviceNode, _Row]] = {}
        used: set[int] = set()
        for row in rows:
            if row.path is None or row.path.level not in ("MDS", "VMD", "CHAN"):
                continue
            if row.raw_value.strip():
                continue
            level = _node_level(row)
            key = row.path.node_key(level)
            if key in nodes:
                if nodes[key][0].code == row.code:
                    continue  # the same node declared again in a later OBR group
                self.warn(
                    f"{row.location}-4",
                    205,
                    f"OBX-4 declares {level} {row.path.dotted()} a second time",
                )
                continue
            node = DeviceNode(level, row.path, row.code, row.identity, location=row.location)
            nodes[key] = (node, row)
            used.add(row.index)
        return nodes, used

    def _identities(
        self, rows: list[_Row], nodes: dict[tuple[int, ...], tuple[DeviceNode, _Row]]
    ) -> dict[tuple[int, ...], DeviceIdentity | None]:
        """Each node's effective identity: its own OBX-18, else its parent's; an MDS without
        OBX-18 takes the MDC_ATTR_SYS_ID reported below it."""
        system_ids: dict[int, DeviceIdentity] = {}
        for row in rows:
            if row.key_in(_SYSTEM_ID) and row.path is not None and row.first_value.strip():
                value = hl7read.leaf(row.first_value, self.d, self.codec).strip()
                ident = DeviceIdentity(value, "MDC_ATTR_SYS_ID", source=row.location)
                system_ids.setdefault(row.path.mds, ident)
        effective: dict[tuple[int, ...], DeviceIdentity | None] = {}
        for key in sorted(nodes, key=len):
            node, _ = nodes[key]
            own = node.identity
            if own is None and len(key) == 1:
                own = system_ids.get(key[0])
            if own is None:
                own = next(
                    (
                        effective[key[:n]]
                        for n in range(len(key) - 1, 0, -1)
                        if key[:n] in effective
                    ),
                    None,
                )
            effective[key] = own
        return effective

    def _inherited(
        self, path: ContainmentPath | None, identities: dict[tuple[int, ...], DeviceIdentity | None]
    ) -> DeviceIdentity | None:
        if path is None:
            return None
        for key in (
            (path.mds, path.vmd, path.channel),
            (path.mds, path.vmd),
            (path.mds,),
        ):
            if key in identities:
                return identities[key]
        return None

    # -- metrics and alarms ------------------------------------------------------------

    def _metrics_and_alarms(
        self,
        rows: list[_Row],
        node_rows: set[int],
        identities: dict[tuple[int, ...], DeviceIdentity | None],
    ) -> tuple[list[Metric], list[Alarm]]:
        alarm_message = self.message.header.trigger_event == "R40"
        metrics: list[Metric] = []
        drafts: list[_AlarmDraft] = []
        current: _AlarmDraft | None = None
        for row in rows:
            if row.index in node_rows:
                continue
            attribute = _ALARM_ATTRIBUTES.get(row.code.refid) or _ALARM_ATTRIBUTE_CODES.get(
                row.code.code
            )
            if attribute and current is not None:
                current.values.setdefault(attribute, row)
                continue
            if _is_alarm_head(row, alarm_message):
                current = self._draft(row)
                drafts.append(current)
                continue
            in_alarm = current is not None and _same_group(current.head.path, row.path)
            metric = self._metric(row, identities)
            if in_alarm and current is not None:
                if metric.device is None:
                    metric = replace(metric, device=current.head.identity)
                if current.source_metric is None:
                    current.source_metric = metric
            metrics.append(metric)
            if attribute:
                self.warn(
                    f"{row.location}-3",
                    100,
                    f"{row.code.refid or row.code.code} comes before any alarm it could belong to",
                )
        alarms = [self._alarm(draft, identities) for draft in drafts]
        return metrics, alarms

    def _value(self, row: _Row) -> tuple[float | str | None, Code | None, tuple[float, ...]]:
        text = row.first_value
        kind = row.value_type
        if not text.strip():
            return None, None, ()
        if kind == "NM":
            number = hl7read.parse_number(text)
            if number is None:
                self.warn(f"{row.location}-5", 102, "OBX-5 is not a number though OBX-2 says NM")
            return number, None, ()
        if kind in _CODED_TYPES:
            code = hl7read.parse_code(text, self.d, self.codec)
            return (code.refid or code.text or code.code or None), code, ()
        if kind == "NA":
            parts = hl7read.components(text, self.d)
            samples = tuple(hl7read.parse_number(p) for p in parts)
            if any(s is None for s in samples):
                self.warn(f"{row.location}-5", 102, "OBX-5 has a non-numeric NA sample")
            return None, None, tuple(s for s in samples if s is not None)
        if kind == "SN":
            parts = hl7read.components(text, self.d)
            if len(parts) >= 2 and not parts[0].strip() and not "".join(parts[2:]).strip():
                number = hl7read.parse_number(parts[1])
                if number is not None:
                    return number, None, ()
        return hl7read.leaf(text, self.d, self.codec), None, ()

    def _metric(
        self, row: _Row, identities: dict[tuple[int, ...], DeviceIdentity | None]
    ) -> Metric:
        value, value_code, samples = self._value(row)
        return Metric(
            set_id=row.set_id,
            path=row.path,
            code=row.code,
            value_type=row.value_type,
            value=value,
            raw_value=row.raw_value,
            unit=row.unit,
            observed_at=row.observed_at,
            status=row.status,
            device=row.identity or self._inherited(row.path, identities),
            reference_range=row.reference_range,
            abnormal_flags=row.flags,
            location=row.location,
            value_code=value_code,
            samples=samples,
            time_source=row.time_source,
        )

    def _draft(self, row: _Row) -> _AlarmDraft:
        text = hl7read.leaf(row.first_value, self.d, self.codec).strip()
        if row.key_in(_ALARM_EVENT) or row.key_in(_ALERT_CONDITION):
            value = hl7read.parse_code(row.first_value, self.d, self.codec)
            if value.code or value.refid:
                return _AlarmDraft(row, value, value.text)
        return _AlarmDraft(row, row.code, text)

    def _alarm(
        self, draft: _AlarmDraft, identities: dict[tuple[int, ...], DeviceIdentity | None]
    ) -> Alarm:
        head = draft.head

        def text_of(name: str) -> str | None:
            row = draft.values.get(name)
            if row is None:
                return None
            value = hl7read.leaf(row.first_value, self.d, self.codec).strip()
            return value or None

        priority_code = text_of("priority")
        alert_type = text_of("alert_type")
        flags: list[str] = []
        for flag in head.flags:
            upper = flag.upper()
            if upper in PRIORITY_CODES and priority_code is None:
                priority_code = upper
            elif upper in ALERT_TYPES and alert_type is None:
                alert_type = upper
            elif upper not in PRIORITY_CODES and upper not in ALERT_TYPES:
                flags.append(flag)
        priority = None
        if priority_code is not None:
            priority = PRIORITY_CODES.get(priority_code.upper())
            if priority is None:
                location = draft.values["priority"].location if "priority" in draft.values else ""
                self.warn(
                    f"{location or head.location}-5", 103, "alarm priority is not PH/PM/PL/PN"
                )
        if alert_type is not None and alert_type.upper() not in ALERT_TYPES:
            self.warn(f"{head.location}-5", 103, "alert type is not SP/ST/SA")
        source = None
        source_row = draft.values.get("source")
        if source_row is not None and source_row.first_value.strip():
            if self.d.component in source_row.first_value:
                source = hl7read.parse_code(source_row.first_value, self.d, self.codec)
            else:
                value = hl7read.leaf(source_row.first_value, self.d, self.codec).strip()
                source = Code(value) if value.isdigit() else Code("", text=value)
        if source is None and draft.source_metric is not None:
            source = draft.source_metric.code
        return Alarm(
            code=draft.code,
            path=head.path,
            text=text_of("text") or draft.text,
            phase=text_of("phase"),
            state=text_of("state"),
            inactivation_state=text_of("inactivation_state"),
            priority=priority,
            priority_code=priority_code.upper() if priority_code else None,
            alert_type=alert_type.upper() if alert_type else None,
            source=source,
            source_metric=draft.source_metric,
            observed_at=head.observed_at,
            device=head.identity or self._inherited(head.path, identities),
            abnormal_flags=tuple(flags),
            location=head.location,
        )

    # -- pumps ---------------------------------------------------------------------------

    def _pumps(
        self,
        metrics: list[Metric],
        nodes: dict[tuple[int, ...], tuple[DeviceNode, _Row]],
        identities: dict[tuple[int, ...], DeviceIdentity | None],
    ) -> list[PumpChannel]:
        groups: dict[tuple[int, int], dict[str, Any]] = {}
        for metric in metrics:
            if metric.path is None:
                continue
            name = _PUMP_LOOKUP.get(metric.code.refid) or _PUMP_LOOKUP.get(
                metric.code.code if metric.code.code != "0" else ""
            )
            if name is None:
                continue
            fields = groups.setdefault((metric.path.mds, metric.path.vmd), {})
            if name in fields:
                continue
            if name in _PUMP_TEXT_FIELDS:
                if isinstance(metric.value, str) and metric.value:
                    fields[name] = metric.value
            elif isinstance(metric.value, float):
                fields[name] = Quantity(metric.value, metric.unit, metric.raw_value.strip())
        pumps: list[PumpChannel] = []
        for (mds, vmd), fields in groups.items():
            node = nodes.get((mds, vmd))
            pumps.append(
                PumpChannel(
                    path=ContainmentPath(mds, vmd),
                    device=identities.get((mds, vmd)) or identities.get((mds,)),
                    code=node[0].code if node else None,
                    **fields,
                )
            )
        return pumps


def _node_level(row: _Row) -> Level:
    """A node's level: its code's suffix (``_MDS``, ``_VMD``, ``_CHAN``) when it has one,
    else what its containment path says."""
    refid = row.code.refid
    for suffix in ("MDS", "VMD", "CHAN"):
        if refid.endswith("_" + suffix):
            return suffix  # type: ignore[return-value]
    assert row.path is not None
    return row.path.level  # type: ignore[return-value]


def _is_alarm_head(row: _Row, alarm_message: bool) -> bool:
    """The row that opens an alarm: an alert condition anywhere; in a PCD-04 report also
    MDC_EVT_* events, facet 1 of an alarm path, or a row whose OBX-8 gives priority/type."""
    if row.key_in(_ALERT_CONDITION):
        return True
    if not alarm_message:
        return False
    if row.key_in(_ALARM_EVENT) or row.code.refid.startswith(("MDC_EVT_", "MDCX_EVT_")):
        return True
    if row.path is not None and row.path.facet == 1:
        return True
    return any(f.upper() in PRIORITY_CODES or f.upper() in ALERT_TYPES for f in row.flags)


def _same_group(head: ContainmentPath | None, other: ContainmentPath | None) -> bool:
    """Both rows are facets of the same alarm (same path but for the facet level)."""
    if head is None or other is None or head.facet is None or other.facet is None:
        return False
    return replace(head, facet=None) == replace(other, facet=None)


def _tree(
    nodes: dict[tuple[int, ...], tuple[DeviceNode, _Row]],
    identities: dict[tuple[int, ...], DeviceIdentity | None],
) -> tuple[DeviceNode, ...]:
    """Nest the declared nodes: each under its nearest declared ancestor."""
    children: dict[tuple[int, ...], list[tuple[int, ...]]] = {}
    roots: list[tuple[int, ...]] = []
    for key in nodes:
        parent = next((key[:n] for n in range(len(key) - 1, 0, -1) if key[:n] in nodes), None)
        if parent is None:
            roots.append(key)
        else:
            children.setdefault(parent, []).append(key)

    def build(key: tuple[int, ...]) -> DeviceNode:
        node = nodes[key][0]
        kids = tuple(build(child) for child in children.get(key, []))
        return replace(node, identity=identities.get(key), children=kids)

    return tuple(build(key) for key in roots)


def _profile(
    message_type: str, trigger: str, profile_ids: tuple[str, ...], rows: list[_Row]
) -> str:
    """PCD-04 / PCD-05 / PCD-10 by trigger, PCD-15 by MSH-21, PHD by its device profile
    codes, PCD-01 for any other ORU^R01; '' otherwise."""
    if message_type == "ORU" and trigger == "R40":
        return "PCD-04"
    if message_type == "ORA" and trigger == "R41":
        return "PCD-05"
    if message_type == "ORU" and trigger == "R42":
        return "PCD-10"
    if any(pid.upper().startswith("IHE_PCD_015") for pid in profile_ids):
        return "PCD-15"
    if any(row.code.refid.startswith("MDC_DEV_SPEC_PROFILE_") for row in rows):
        return "PHD"
    if message_type == "ORU" and trigger == "R01":
        return "PCD-01"
    return ""
