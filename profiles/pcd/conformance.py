"""IHE PCD-01 / PCD-04 conformance: a list of findings, each with a field and an HL7 code.

``check`` reads MSH, the segment layout and every OBX once and says what departs from the
IHE PCD Technical Framework: MSH-9, MSH-12, MSH-21 profile ids, OBX-2/3/4/5/6/11/14/18 and
the alarm facets of PCD-04. Each ``Finding`` names its location (``OBX[3]-4``) and an HL7
table 0357 code, so a channel can answer with ERR segments (``Finding.to_error_detail``) or
accept the message and keep the findings on its record. Texts never quote message content.
"""

from __future__ import annotations

import itertools
import re

from profiles.hl7.header import HeaderError
from profiles.hl7.message import Message, Segment
from profiles.pcd import hl7read
from profiles.pcd.codes import ucum_for_unit
from profiles.pcd.extract import extract
from profiles.pcd.records import ALERT_TYPES, PRIORITY_CODES, ContainmentPath, Finding, Severity

# Message types the checked transactions use: (MSH-9.1, MSH-9.2) → expected MSH-9.3.
_STRUCTURES = {("ORU", "R01"): "ORU_R01", ("ORU", "R40"): "ORU_R40", ("ORU", "R42"): "ORU_R01"}

# MSH-21 EI-1 → OIDs (EI-3) seen for it in the IHE PCD TF and in vendors' messages.
_PROFILES: dict[str, tuple[str, frozenset[str]]] = {
    "IHE_PCD_001": (
        "R01",
        frozenset({"1.3.6.1.4.1.19376.1.6.1.1.1", "1.3.6.1.4.1.19376.1.6.4.1"}),
    ),
    "PCD_DEC_001": ("R01", frozenset({"1.3.6.1.4.1.19376.1.6.1.1.1"})),
    "IHE_PCD_DEC_001": ("R01", frozenset({"1.3.6.1.4.1.19376.1.6.1.1.1"})),
    "IHE_PCD_015": ("R01", frozenset({"1.3.6.1.4.1.19376.1.6.4.15"})),
    "IHE_PCD_ACM_001": (
        "R40",
        frozenset(
            {
                "1.3.6.1.4.1.19376.1.6.4.4",
                "1.3.6.1.4.1.19376.1.6.4.4.1",
                "1.3.6.1.4.1.19376.1.6.1.4.1",
            }
        ),
    ),
    "IHE_PCD_010": ("R42", frozenset({"1.3.6.1.4.1.19376.1.6.4.10"})),
}
# Pre-2008 text forms of the PCD-01 profile id (IPF, Continua WAN samples).
_OLD_PROFILE = re.compile(r"IHE PCD ORU-R01 ?2006", re.IGNORECASE)

# HL7 table 0125 value types an OBX can carry.
_VALUE_TYPES = frozenset(
    {"AD", "CE", "CF", "CK", "CN", "CNE", "CP", "CWE", "CX", "DR", "DT", "DTM", "ED", "FT"}
    | {"ID", "IS", "MA", "MO", "NA", "NM", "PN", "RP", "SN", "ST", "TM", "TN", "TS", "TX"}
    | {"XAD", "XCN", "XON", "XPN", "XTN"}
)
# HL7 table 0085, observation result status.
_RESULT_STATUS = frozenset("CDFINOPRSUWX")
# HL7 table 0078 abnormal flags plus IHE PCD ACM priority and alert type codes.
_FLAGS = frozenset(
    {"L", "H", "LL", "HH", "<", ">", "N", "A", "AA", "U", "D", "B", "W", "S", "R", "I", "MS"}
    | {"VS", "NEG", "POS", "NR", "RR", "QCF", "TOX", "LU", "HU"}
    | set(PRIORITY_CODES)
    | set(ALERT_TYPES)
)
# MDC reference ids whose codes are fixed: a different number beside them is a misprint.
_KNOWN_CODES = {
    "MDC_ATTR_ALERT_SOURCE": "68480",
    "MDC_ATTR_EVENT_PHASE": "68481",
    "MDC_ATTR_ALARM_STATE": "68482",
    "MDC_ATTR_ALARM_INACTIVATION_STATE": "68483",
    "MDC_ATTR_ALARM_PRIORITY": "68484",
    "MDC_ATTR_ALERT_TYPE": "68485",
    "MDC_EVT_ALARM": "196616",
    "MDC_PRESS_BLD_NONINV": "150020",
    "MDC_PRESS_BLD_NONINV_SYS": "150021",
    "MDC_PRESS_BLD_NONINV_DIA": "150022",
    "MDC_PRESS_BLD_NONINV_MEAN": "150023",
    "MDC_PULS_OXIM_SAT_O2": "150456",
    "MDC_ECG_HEART_RATE": "147842",
    "MDC_RESP_RATE": "151562",
    "MDC_FLOW_FLUID_PUMP": "157784",
    "MDC_FLOW_FLUID_PUMP_CURRENT": "158014",
    "MDC_DEV_SPEC_PROFILE_BP": "528391",
}
_MAX_MSH_FIELDS = 25  # MSH-25 is the last field of HL7 v2.8
_SEGMENT_NAME = re.compile(r"[A-Z][A-Z0-9]{2}")


def check(message: Message | bytes | str) -> list[Finding]:
    """Every departure from IHE PCD-01 / PCD-04 this module knows of; [] when none."""
    try:
        view = message if isinstance(message, Message) else Message.parse(message)
    except HeaderError as error:
        location = f"MSH-{error.field}" if error.field else "MSH"
        code = error.code if error.code in (100, 101, 102, 103, 203) else 100
        return [Finding("error", location, code, error.reason)]
    return _Check(view).run()


def has_errors(findings: list[Finding]) -> bool:
    """True when any finding is an error (a channel that rejects would answer AE/CE)."""
    return any(f.severity == "error" for f in findings)


class _Check:
    def __init__(self, message: Message) -> None:
        self.message = message
        self.d = message.delimiters
        self.codec = message.codec
        self.findings: list[Finding] = []

    def add(self, severity: Severity, location: str, code: int, text: str) -> None:
        self.findings.append(Finding(severity, location, code, text))

    def run(self) -> list[Finding]:
        msh = self.message.segments("MSH")[0]
        trigger = self._msh9(msh)
        self._msh12(msh)
        self._msh21(msh, trigger)
        self._layout(msh)
        self._obx_rows()
        if trigger == "R40":
            self._alarms()
        return self.findings

    # -- MSH ---------------------------------------------------------------------------

    def _msh9(self, msh: Segment) -> str:
        """Check MSH-9; the trigger event when it is one of the checked transactions."""
        parts = [p.strip() for p in hl7read.components(msh.field(9), self.d)] + ["", "", ""]
        kind, trigger, structure = parts[:3]
        if not kind:
            self.add("error", "MSH-9", 101, "MSH-9 message type is missing")
            return ""
        if kind != "ORU":
            self.add("error", "MSH-9.1", 200, f"message type {kind[:8]} is not a PCD report (ORU)")
            return ""
        expected = _STRUCTURES.get((kind, trigger))
        if expected is None:
            self.add(
                "error",
                "MSH-9.2",
                201,
                "trigger event must be R01 (PCD-01), R40 (PCD-04) or R42 (PCD-10)",
            )
            return ""
        if not structure:
            self.add("warning", "MSH-9.3", 101, f"message structure missing; {expected} expected")
        elif structure != expected:
            self.add("warning", "MSH-9.3", 103, f"message structure is not {expected}")
        return trigger

    def _msh12(self, msh: Segment) -> None:
        version = msh.field(12).split(self.d.component, 1)[0].strip()
        if not version:
            self.add("error", "MSH-12", 101, "MSH-12 version is missing; IHE PCD uses 2.6")
        elif version != "2.6":
            later = version.startswith(("2.7", "2.8", "2.9"))
            self.add(
                "warning" if later else "error",
                "MSH-12",
                203,
                f"version {version[:8]}; IHE PCD uses 2.6",
            )

    def _msh21(self, msh: Segment, trigger: str) -> None:
        reps = [r for r in msh.repetitions(21) if r.strip()]
        if not reps:
            self.add("error", "MSH-21", 101, "MSH-21 message profile id is missing")
            return
        known = False
        for number, rep in enumerate(reps, 1):
            location = "MSH-21" if len(reps) == 1 else f"MSH-21[{number}]"
            parts = [p.strip() for p in hl7read.components(rep, self.d)] + ["", "", "", ""]
            entity, _, oid, oid_type = parts[:4]
            if _OLD_PROFILE.fullmatch(entity):
                known = True
                self.add(
                    "warning",
                    f"{location}.1",
                    103,
                    "pre-2008 profile id text; use IHE_PCD_001 (PCD-01)",
                )
                continue
            spec = _PROFILES.get(entity.upper())
            if spec is None:
                continue
            known = True
            profile_trigger, oids = spec
            if trigger and trigger != profile_trigger:
                self.add(
                    "warning",
                    f"{location}.1",
                    103,
                    f"profile id {entity} is for {profile_trigger} messages, not {trigger[:4]}",
                )
            if not oid:
                self.add("warning", f"{location}.3", 101, f"profile id {entity} has no OID")
            elif oid not in oids:
                self.add("warning", f"{location}.3", 103, f"OID is not the one of {entity}")
            if oid and oid_type != "ISO":
                self.add("warning", f"{location}.4", 103, "profile OID type is not ISO")
        if not known:
            self.add("warning", "MSH-21", 103, "no IHE PCD message profile id in MSH-21")

    # -- segments ----------------------------------------------------------------------

    def _layout(self, msh: Segment) -> None:
        segments = self.message.segments()
        if msh.field_count() > _MAX_MSH_FIELDS:
            self.add(
                "error",
                "MSH",
                100,
                f"MSH has {msh.field_count()} fields (at most {_MAX_MSH_FIELDS}):"
                " another segment seems run into it",
            )
        for previous, segment in itertools.pairwise(segments):
            if not _SEGMENT_NAME.fullmatch(segment.name):
                self.add(
                    "error",
                    previous.name if _SEGMENT_NAME.fullmatch(previous.name) else "MSH",
                    100,
                    f"the line after {previous.name[:3]} does not start with a segment name:"
                    " a segment was broken across lines",
                )
        names = {segment.name for segment in segments}
        for required in ("PID", "OBR", "OBX"):
            if required not in names:
                self.add("error", required, 100, f"required segment {required} is missing")
        for number, obr in enumerate(self.message.segments("OBR"), 1):
            location = "OBR-7" if number == 1 else f"OBR[{number}]-7"
            text = obr.field(7).split(self.d.component, 1)[0].strip()
            if not text:
                self.add("warning", location, 101, "OBR-7 observation time is missing")
            elif hl7read.parse_dtm(text)[0] is None:
                self.add("error", location, 102, "OBR-7 is not an HL7 date/time")
        pids = self.message.segments("PID")
        if pids and not pids[0].field(3).strip():
            self.add("warning", "PID-3", 101, "PID-3 patient identifier is missing")

    # -- OBX ---------------------------------------------------------------------------

    def _obx_rows(self) -> None:
        obxs = self.message.segments("OBX")
        any_equipment = False
        for index, obx in enumerate(obxs, 1):
            where = f"OBX[{index}]"
            self._obx2_obx5(obx, where)
            self._obx3(obx, where)
            self._obx4(obx, where)
            self._obx6(obx, where)
            self._obx11(obx, where)
            self._obx14(obx, where)
            any_equipment |= self._obx18(obx, where)
        if obxs and not any_equipment:
            self.add(
                "warning",
                "OBX[1]-18",
                101,
                "no OBX-18 equipment identifier in the message: the device is unknown",
            )

    def _obx2_obx5(self, obx: Segment, where: str) -> None:
        kind = obx.field(2).strip().upper()
        value = obx.field(5)
        if value.strip() and not kind:
            self.add("error", f"{where}-2", 101, "OBX-5 has a value but OBX-2 no value type")
        elif kind and kind not in _VALUE_TYPES:
            self.add("error", f"{where}-2", 103, "OBX-2 is not an HL7 value type")
        elif kind == "NM" and value.strip():
            first = value.split(self.d.repetition, 1)[0]
            if hl7read.parse_number(first) is None:
                self.add("error", f"{where}-5", 102, "OBX-5 is not a number though OBX-2 is NM")

    def _obx3(self, obx: Segment, where: str) -> None:
        text = obx.field(3)
        if not text.strip():
            self.add("error", f"{where}-3", 101, "OBX-3 observation identifier is missing")
            return
        code = hl7read.parse_code(text, self.d, self.codec)
        if not code.system:
            self.add("warning", f"{where}-3.3", 101, "OBX-3 has no coding system; MDC expected")
        elif code.system.upper() != "MDC":
            self.add("warning", f"{where}-3.3", 103, "OBX-3 is not coded in MDC")
        if not code.code.isdigit():
            self.add("error", f"{where}-3.1", 102, "OBX-3.1 is not a numeric MDC code")
        elif code.code == "0":
            self.add("warning", f"{where}-3.1", 103, "OBX-3.1 is 0 (code pending)")
        elif code.refid in _KNOWN_CODES and code.code != _KNOWN_CODES[code.refid]:
            self.add(
                "warning",
                f"{where}-3.1",
                103,
                f"code {code.code[:10]} does not match {code.refid} ({_KNOWN_CODES[code.refid]})",
            )
        if not code.refid:
            self.add("warning", f"{where}-3.2", 101, "OBX-3.2 MDC reference id is missing")
        elif code.system.upper() == "MDC" and not code.refid.startswith(("MDC_", "MDCX_")):
            self.add("warning", f"{where}-3.2", 102, "OBX-3.2 is not an MDC reference id")

    def _obx4(self, obx: Segment, where: str) -> None:
        text = obx.field(4).strip()
        if not text:
            self.add("error", f"{where}-4", 101, "OBX-4 containment path is missing")
            return
        path = ContainmentPath.parse(text)
        if path is None:
            self.add(
                "error", f"{where}-4", 102, "OBX-4 is not a containment path (MDS.VMD.CHAN.METRIC)"
            )
        elif path.depth < 4:
            self.add(
                "warning",
                f"{where}-4",
                102,
                f"OBX-4 has {path.depth} level(s); MDS.VMD.CHAN.METRIC expected",
            )
        if path is not None and path.level in ("MDS", "VMD", "CHAN"):
            refid = hl7read.parse_code(obx.field(3), self.d, self.codec).refid
            named = next((lv for lv in ("MDS", "VMD", "CHAN") if refid.endswith("_" + lv)), None)
            if named is not None and named != path.level:
                text = f"OBX-4 is at {path.level} level but OBX-3 names a {named}"
                self.add("warning", f"{where}-4", 102, text)

    def _obx6(self, obx: Segment, where: str) -> None:
        kind = obx.field(2).strip().upper()
        text = obx.field(6)
        if not text.strip():
            if kind == "NM" and obx.field(5).strip():
                self.add("warning", f"{where}-6", 101, "numeric value without a unit in OBX-6")
            return
        parts = [p.strip() for p in hl7read.components(text, self.d)] + [""] * 6
        code, refid, system, alt_code, _, alt_system = parts[:6]
        system = system.upper()
        if system == "UCUM":
            return
        if system != "MDC":
            self.add("warning", f"{where}-6.3", 103, "OBX-6 unit is neither MDC nor UCUM")
            return
        if alt_system.upper() == "UCUM" and alt_code:
            return
        by_code, by_refid = ucum_for_unit(code), ucum_for_unit(refid)
        if by_code is None and by_refid is None:
            self.add("info", f"{where}-6", 103, "MDC unit not in the shipped MDC→UCUM map")
        elif by_code is not None and by_refid is not None and by_code != by_refid:
            self.add("warning", f"{where}-6.1", 103, f"unit code does not match {refid[:40]}")

    def _obx11(self, obx: Segment, where: str) -> None:
        status = obx.field(11).strip()
        if not status and obx.field(10).strip() in _RESULT_STATUS:
            text = "OBX-11 result status is missing; OBX-10 holds one (a field separator short)"
            self.add("error", f"{where}-11", 101, text)
        elif not status:
            self.add("error", f"{where}-11", 101, "OBX-11 result status is missing")
        elif status not in _RESULT_STATUS:
            self.add("error", f"{where}-11", 103, "OBX-11 is not in HL7 table 0085")

    def _obx14(self, obx: Segment, where: str) -> None:
        text = obx.field(14).split(self.d.component, 1)[0].strip()
        if text:
            if hl7read.parse_dtm(text)[0] is None:
                self.add("error", f"{where}-14", 102, "OBX-14 is not an HL7 date/time")
            return
        misplaced = obx.field(13).strip()
        if len(misplaced) >= 8 and hl7read.parse_dtm(misplaced)[0] is not None:
            self.add("warning", f"{where}-13", 102, "a date/time in OBX-13; OBX-14 expected")

    def _obx18(self, obx: Segment, where: str) -> bool:
        found = False
        for number, rep in enumerate(obx.repetitions(18), 1):
            if not rep.strip(self.d.component + " "):
                continue
            found = True
            location = f"{where}-18" if number == 1 else f"{where}-18[{number}]"
            parts = [p.strip() for p in hl7read.components(rep, self.d)] + ["", "", "", ""]
            entity, namespace, universal, kind = parts[:4]
            if not kind:
                if namespace.upper() in ("EUI-64", "EUI64") and not universal:
                    self.add(
                        "warning",
                        f"{location}.2",
                        102,
                        "OBX-18 gives its id type in EI-2; IHE puts it in EI-4",
                    )
                else:
                    self.add("warning", f"{location}.4", 101, "OBX-18 has no universal id type")
                continue
            if kind.upper() in ("EUI-64", "EUI64"):
                candidates = (universal, entity)
                if not any(_is_eui64(c) for c in candidates):
                    self.add("warning", location, 102, "OBX-18 says EUI-64 but has no EUI-64 id")
        return found

    # -- PCD-04 ------------------------------------------------------------------------

    def _alarms(self) -> None:
        report = extract(self.message)
        if not report.alarms:
            self.add("error", "OBX", 101, "ORU^R40 without an alarm (no MDC_EVT_ row)")
        for alarm in report.alarms:
            where = alarm.location
            if alarm.phase is None:
                self.add("warning", where, 101, "alarm without MDC_ATTR_EVENT_PHASE")
            if alarm.state is None:
                self.add("warning", where, 101, "alarm without MDC_ATTR_ALARM_STATE")
            if alarm.priority_code is None:
                self.add("warning", where, 101, "alarm without a priority (PH/PM/PL/PN)")
            if alarm.alert_type is None:
                self.add("warning", where, 101, "alarm without an alert type (SP/ST/SA)")
        for segment_index, obx in enumerate(self.message.segments("OBX"), 1):
            for flag in obx.repetitions(8):
                if flag.strip() and flag.strip().upper() not in _FLAGS:
                    self.add(
                        "warning", f"OBX[{segment_index}]-8", 103, "OBX-8 flag not in table 0078"
                    )


def _is_eui64(text: str) -> bool:
    text = text.replace("-", "").replace(":", "")
    return len(text) == 16 and all(c in "0123456789abcdefABCDEF" for c in text)
