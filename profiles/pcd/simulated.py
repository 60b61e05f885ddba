"""Simulated bedside devices: monitors and infusion pumps reporting IHE PCD-01 and PCD-04.

Analysts try a channel with them, demos and benchmarks load the engine with them. The
module is pure: every random draw comes from a ``random.Random`` seeded from the unit's
seed and the device's place, and every time is an argument (seconds since the epoch), so
one seed and one list of report times give the same messages byte for byte. Devices keep
their state between reports: values drift as bounded random walks around each patient's
baselines, NIBP is measured on its own cycle, pumps deliver, finish and start again, and
a low SpO2 or an occluded line raises a PCD-04 alarm with start and end phases.

The messages follow the IHE PCD Technical Framework examples: v2.6, enhanced mode
(MSH-15 AL, MSH-16 NE), MSH-21 naming the profile, the MDS.VMD.CHAN.METRIC containment
in OBX-4, the device's EUI-64 in OBX-18, OBX-14 per observation and MDC codes and units
(with their UCUM form as the alternate coding).
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum

PCD01_PROFILE = "IHE_PCD_001^IHE PCD^1.3.6.1.4.1.19376.1.6.1.1.1^ISO"
PCD04_PROFILE = "IHE_PCD_ACM_001^IHE PCD^1.3.6.1.4.1.19376.1.6.4.4.1^ISO"
FACILITY = "INTERLINK_SIM"
PATIENT_AUTHORITY = "SIMHOSP"
CARE_UNIT = "SIM ICU"
MONITORING = "182777000^monitoring of patient^SCT"
_RUN_ID = re.compile(r"[A-Z0-9]{0,6}")


class DeviceKind(Enum):
    """What a simulated device is; the value is its MSH-3 namespace."""

    MONITOR = "SIM_MONITOR"
    PUMP = "SIM_PUMP"


class MessageKind(Enum):
    """The IHE transaction a simulated message belongs to."""

    PCD01 = "PCD-01"
    PCD04 = "PCD-04"


@dataclass(frozen=True, slots=True)
class MdcUnit:
    """An MDC unit of measure with its UCUM spelling (OBX-6 carries both)."""

    code: int
    refid: str
    ucum: str

    def field(self) -> str:
        """OBX-6: the MDC coding, then UCUM as the alternate."""
        return f"{self.code}^{self.refid}^MDC^{self.ucum}^{self.ucum}^UCUM"


BEAT_PER_MIN = MdcUnit(264864, "MDC_DIM_BEAT_PER_MIN", "/min")
PERCENT = MdcUnit(262688, "MDC_DIM_PERCENT", "%")
MMHG = MdcUnit(266016, "MDC_DIM_MMHG", "mm[Hg]")
RESP_PER_MIN = MdcUnit(264928, "MDC_DIM_RESP_PER_MIN", "{breath}/min")
DEGC = MdcUnit(268192, "MDC_DIM_DEGC", "Cel")
ML_PER_HR = MdcUnit(265266, "MDC_DIM_MILLI_L_PER_HR", "mL/h")
ML = MdcUnit(263762, "MDC_DIM_MILLI_L", "mL")
MINUTES = MdcUnit(264352, "MDC_DIM_MIN", "min")
MG_PER_ML = MdcUnit(264306, "MDC_DIM_MILLI_G_PER_ML", "mg/mL")


@dataclass(frozen=True, slots=True)
class Obx:
    """One OBX row: a device node (no value, status X) or an observation."""

    path: str
    code: int
    refid: str
    value_type: str = ""
    value: str = ""
    unit: MdcUnit | None = None
    reference_range: str = ""
    flags: str = ""
    status: str = "X"
    observed_at: str = ""
    equipment: str = ""

    def segment(self, set_id: int) -> str:
        """The OBX segment text with its set id."""
        return _segment(
            "OBX",
            {
                1: str(set_id),
                2: self.value_type,
                3: f"{self.code}^{self.refid}^MDC",
                4: self.path,
                5: self.value,
                6: self.unit.field() if self.unit else "",
                7: self.reference_range,
                8: self.flags,
                11: self.status,
                14: self.observed_at,
                18: self.equipment,
            },
        )


@dataclass(frozen=True, slots=True)
class Patient:
    """A simulated patient in a simulated bed (stable for a seed and bed number)."""

    mrn: str
    family: str
    given: str
    birth_date: str
    sex: str
    room: str
    bed: str

    def segments(self) -> list[str]:
        """PID and PV1."""
        return [
            f"PID|||{self.mrn}^^^{PATIENT_AUTHORITY}^MR||{self.family}^{self.given}^^^^^L||"
            f"{self.birth_date}|{self.sex}",
            f"PV1||I|{CARE_UNIT}^{self.room}^{self.bed}",
        ]


@dataclass(frozen=True, slots=True)
class DeviceIdentity:
    """A simulated device: kind, place in the unit, EUI-64 and the patient it serves."""

    kind: DeviceKind
    index: int
    eui64: str
    patient: Patient

    @property
    def tag(self) -> str:
        """Short name inside the unit, ``M0001`` or ``P0002`` (1-based)."""
        return f"{self.kind.name[0]}{self.index + 1:04d}"

    @property
    def sender(self) -> str:
        """MSH-3: the device application with its EUI-64."""
        return f"{self.kind.value}^{self.eui64}^EUI-64"

    @property
    def equipment(self) -> str:
        """OBX-18: the EUI-64 as entity and universal id."""
        return f"{self.eui64}^^{self.eui64}^EUI-64"


@dataclass(frozen=True, slots=True)
class SimulatedMessage:
    """One message a device sent, with the rows it carries for checking against."""

    kind: MessageKind
    device: DeviceIdentity
    control_id: str
    sent_at: float
    observations: tuple[Obx, ...]
    raw: bytes

    def value(self, code: int) -> str | None:
        """OBX-5 of the first row with this observation code (None if absent)."""
        return next((o.value for o in self.observations if o.code == code), None)


def hl7_time(seconds: float) -> str:
    """An HL7 DTM in UTC with its offset: ``20261125083000+0000``."""
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y%m%d%H%M%S") + "+0000"


def device_eui64(seed: int, kind: DeviceKind, index: int) -> str:
    """A locally administered EUI-64: ``02``, four hex digits of the seed, kind, index."""
    seed_part = hashlib.sha256(str(seed).encode()).hexdigest()[:4].upper()
    kind_part = "01" if kind is DeviceKind.MONITOR else "02"
    return f"02{seed_part}{kind_part}{index + 1:08X}"


_FAMILY = (
    "ALDEN",
    "BRANDT",
    "CASTILLO",
    "DUARTE",
    "EKSTROM",
    "FONTAINE",
    "GARRIDO",
    "HALVORSEN",
    "IBARRA",
    "JANSEN",
    "KOWALCZYK",
    "LINDQVIST",
    "MORETTI",
    "NAKAMURA",
    "OKAFOR",
    "PELLETIER",
    "QUINTERO",
    "ROSSETTI",
    "SANTORO",
    "TREMBLAY",
)
_GIVEN = (
    "ADA",
    "BRUNO",
    "CLARA",
    "DARIO",
    "ELENA",
    "FELIX",
    "GRETA",
    "HUGO",
    "INES",
    "JONAS",
    "KAIA",
    "LEON",
    "MILA",
    "NOAH",
    "OLGA",
    "PAUL",
    "ROSA",
    "SVEN",
    "TOVE",
    "VIKTOR",
)


def simulated_patient(seed: int, bed: int) -> Patient:
    """The patient in bed ``bed`` (0-based) of the unit simulated with ``seed``."""
    rng = random.Random(f"{seed}:patient:{bed}")
    seed_part = hashlib.sha256(str(seed).encode()).hexdigest()[:4].upper()
    year, month, day = rng.randint(1935, 2004), rng.randint(1, 12), rng.randint(1, 28)
    return Patient(
        mrn=f"SIM{seed_part}{bed + 1:04d}",
        family=rng.choice(_FAMILY),
        given=rng.choice(_GIVEN),
        birth_date=f"{year:04d}{month:02d}{day:02d}",
        sex=rng.choice("FM"),
        room=f"{bed // 2 + 1:02d}",
        bed=str(bed % 2 + 1),
    )


@dataclass(slots=True)
class BoundedWalk:
    """A value that drifts: a random step plus a pull back to its target, kept in bounds."""

    value: float
    target: float
    low: float
    high: float
    step: float
    pull: float = 0.15

    def advance(
        self, rng: random.Random, target: float | None = None, pull: float | None = None
    ) -> float:
        """One step toward ``target`` (the baseline unless given); returns the new value."""
        aim = self.target if target is None else target
        force = self.pull if pull is None else pull
        moved = self.value + rng.gauss(0.0, self.step) + force * (aim - self.value)
        self.value = min(self.high, max(self.low, moved))
        return self.value


def _walk(
    rng: random.Random, baseline: tuple[float, float], bounds: tuple[float, float], step: float
) -> BoundedWalk:
    target = rng.uniform(*baseline)
    return BoundedWalk(target, target, bounds[0], bounds[1], step)


@dataclass(frozen=True, slots=True)
class AlarmReport:
    """A PCD-04 to send: the alarm's identifier (OBR-3, OBR-29) and its OBX rows."""

    identifier: str
    rows: list[Obx]


@dataclass(frozen=True, slots=True)
class Observed:
    """What one report of a device says: its PCD-01 rows and an alarm change, if any."""

    rows: list[Obx]
    alarm: AlarmReport | None = None


SPO2_LOW_LIMIT = 90
"""Below this SpO2 (percent) a monitor raises its low-SpO2 alarm."""


@dataclass(slots=True)
class _Alarm:
    """An alarm in progress: its identifier links the start and end messages."""

    identifier: str
    started_at: float


class Monitor:
    """A multi-parameter monitor: NIBP, ECG heart and respiration rate, SpO2, temperature.

    Each report carries every value; NIBP is measured once per ``nibp_cycle_seconds`` and
    keeps its measurement time in OBX-14. Now and then the SpO2 target drops for a few
    reports (a desaturation), which raises a low-SpO2 alarm if it crosses the limit.
    """

    DESATURATION_CHANCE = 0.015
    """Per report, the chance that a desaturation episode starts."""

    def __init__(
        self,
        identity: DeviceIdentity,
        rng: random.Random,
        start: float,
        nibp_cycle_seconds: float,
        alarms: bool,
    ) -> None:
        self.identity = identity
        self._rng = rng
        self._alarms = alarms
        self._heart = _walk(rng, (62, 92), (38, 165), 1.5)
        self._resp = _walk(rng, (12, 20), (6, 40), 0.8)
        self._spo2 = _walk(rng, (95, 99), (75, 100), 0.6)
        self._temp = _walk(rng, (36.5, 37.3), (35.0, 40.5), 0.03)
        self._systolic = _walk(rng, (105, 138), (70, 210), 3.0)
        self._diastolic = _walk(rng, (62, 84), (40, 125), 2.0)
        self._nibp_cycle = nibp_cycle_seconds
        self._nibp_at = start - rng.uniform(0, nibp_cycle_seconds)
        self._desaturation: tuple[int, float] | None = None
        self._alarm: _Alarm | None = None
        self._alarm_count = 0

    def observe(self, now: float) -> Observed:
        """Advance the walks to ``now``: the PCD-01 rows and the alarm's, if one."""
        rng = self._rng
        heart = round(self._heart.advance(rng))
        pulse = max(0, round(heart + rng.gauss(0.0, 1.2)))
        resp = round(self._resp.advance(rng))
        spo2 = round(self._advance_spo2())
        temp = round(self._temp.advance(rng), 1)
        if now - self._nibp_at >= self._nibp_cycle:
            self._nibp_at += self._nibp_cycle * ((now - self._nibp_at) // self._nibp_cycle)
            self._systolic.advance(rng)
            self._diastolic.advance(rng)
            self._diastolic.value = min(self._diastolic.value, self._systolic.value - 25)
        systolic, diastolic = round(self._systolic.value), round(self._diastolic.value)
        mean = round(diastolic + (systolic - diastolic) / 3)
        at, cuff_at, eq = hl7_time(now), hl7_time(self._nibp_at), self.identity.equipment

        def metric(
            path: str,
            code: int,
            refid: str,
            value: float,
            unit: MdcUnit,
            limits: str,
            when: str = at,
        ) -> Obx:
            return Obx(
                path, code, refid, "NM", _number(value), unit, limits, status="R", observed_at=when
            )

        rows = [
            Obx("1.0.0.0", 69965, "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS", equipment=eq),
            Obx("1.1.0.0", 70686, "MDC_DEV_PRESS_BLD_NONINV_VMD", equipment=eq),
            Obx("1.1.1.0", 70687, "MDC_DEV_PRESS_BLD_NONINV_CHAN"),
            metric(
                "1.1.1.1", 150021, "MDC_PRESS_BLD_NONINV_SYS", systolic, MMHG, "90-160", cuff_at
            ),
            metric(
                "1.1.1.2", 150022, "MDC_PRESS_BLD_NONINV_DIA", diastolic, MMHG, "50-90", cuff_at
            ),
            metric("1.1.1.3", 150023, "MDC_PRESS_BLD_NONINV_MEAN", mean, MMHG, "65-110", cuff_at),
            Obx("1.2.0.0", 69798, "MDC_DEV_ECG_VMD", equipment=eq),
            Obx("1.2.1.0", 69799, "MDC_DEV_ECG_CHAN"),
            metric("1.2.1.1", 147842, "MDC_ECG_HEART_RATE", heart, BEAT_PER_MIN, "50-120"),
            metric("1.2.1.2", 151562, "MDC_RESP_RATE", resp, RESP_PER_MIN, "8-30"),
            Obx("1.3.0.0", 69642, "MDC_DEV_ANALY_SAT_O2_VMD", equipment=eq),
            Obx("1.3.1.0", 69643, "MDC_DEV_ANALY_SAT_O2_CHAN"),
            metric(
                "1.3.1.1", 150456, "MDC_PULS_OXIM_SAT_O2", spo2, PERCENT, f"{SPO2_LOW_LIMIT}-100"
            ),
            metric("1.3.1.2", 149530, "MDC_PULS_OXIM_PULS_RATE", pulse, BEAT_PER_MIN, "50-120"),
            Obx("1.4.0.0", 69902, "MDC_DEV_METER_TEMP_VMD", equipment=eq),
            Obx("1.4.1.0", 69903, "MDC_DEV_METER_TEMP_CHAN"),
            metric("1.4.1.1", 150364, "MDC_TEMP_BODY", temp, DEGC, "36.0-38.0"),
        ]
        return Observed(rows, self._alarm_change(spo2, now))

    def _advance_spo2(self) -> float:
        rng = self._rng
        if self._desaturation is None and rng.random() < self.DESATURATION_CHANCE:
            self._desaturation = (rng.randint(4, 12), rng.uniform(83, 89))
        if self._desaturation is None:
            return self._spo2.advance(rng)
        left, target = self._desaturation
        self._desaturation = (left - 1, target) if left > 1 else None
        return self._spo2.advance(rng, target=target, pull=0.35)

    def _alarm_change(self, spo2: int, now: float) -> AlarmReport | None:
        """The alarm starts when SpO2 falls below the limit and ends when it is back."""
        if not self._alarms:
            return None
        if self._alarm is None and spo2 < SPO2_LOW_LIMIT:
            self._alarm_count += 1
            self._alarm = _Alarm(f"{self.identity.tag}-AL{self._alarm_count:04d}", now)
            return self._alarm_report(self._alarm, "start", spo2, now)
        if self._alarm is not None and spo2 >= SPO2_LOW_LIMIT:
            alarm, self._alarm = self._alarm, None
            return self._alarm_report(alarm, "end", spo2, now)
        return None

    def _alarm_report(self, alarm: _Alarm, phase: str, spo2: int, now: float) -> AlarmReport:
        """The PCD-04 rows of the low-SpO2 alarm (after the TF's Mindray example)."""
        at, base = hl7_time(now), "1.3.1.150456"
        return AlarmReport(
            alarm.identifier,
            [
                Obx(
                    f"{base}.1",
                    196670,
                    "MDC_EVT_LO",
                    "ST",
                    "Low SpO2",
                    flags="L~PM~SP",
                    status="F",
                    observed_at=at,
                    equipment=self.identity.equipment,
                ),
                Obx(
                    f"{base}.2",
                    150456,
                    "MDC_PULS_OXIM_SAT_O2",
                    "NM",
                    str(spo2),
                    PERCENT,
                    f"{SPO2_LOW_LIMIT}-100",
                    status="F",
                    observed_at=at,
                ),
                *alarm_state_facets(base, phase),
            ],
        )


def alarm_state_facets(base: str, phase: str) -> list[Obx]:
    """The facets every PCD-04 alarm ends with: event phase, alarm state, inactivation."""
    active = "active" if phase == "start" else "inactive"
    return [
        Obx(f"{base}.3", 68481, "MDC_ATTR_EVENT_PHASE", "ST", phase, status="F"),
        Obx(f"{base}.4", 68482, "MDC_ATTR_ALARM_STATE", "ST", active, status="F"),
        Obx(f"{base}.5", 68483, "MDC_ATTR_ALARM_INACTIVATION_STATE", "ST", "enabled",
            status="F"),
    ]


@dataclass(frozen=True, slots=True)
class Drug:
    """An infusion a simulated pump may run: label, concentration, rates and volumes."""

    label: str
    mg_per_ml: float
    rates: tuple[float, float]
    volumes: tuple[float, ...]


DRUGS = (
    Drug("Dopamine", 1.6, (5.0, 30.0), (250.0,)),
    Drug("Norepinephrine", 0.064, (3.0, 25.0), (50.0, 100.0, 250.0)),
    Drug("Propofol", 10.0, (5.0, 40.0), (50.0, 100.0)),
    Drug("Vancomycin", 5.0, (100.0, 250.0), (200.0, 250.0)),
    Drug("Cefazolin", 20.0, (100.0, 200.0), (50.0, 100.0)),
    Drug("Morphine", 1.0, (1.0, 10.0), (50.0, 100.0)),
    Drug("Dobutamine", 5.0, (2.0, 20.0), (50.0,)),
)


class PumpState(Enum):
    """Where a simulated pump is in its infusion."""

    INFUSING = "infusing"
    OCCLUDED = "occluded"
    COMPLETE = "complete"


@dataclass(slots=True)
class _Infusion:
    drug: Drug
    rate: float
    volume: float
    delivered: float


class Pump:
    """A large-volume infusion pump with one primary source.

    Volume delivered grows with the time between reports at the programmed rate; at the
    programmed volume the pump stops, waits a few minutes and starts a new infusion. Now
    and then (with alarms on) the line occludes for a few reports: delivery stops and a
    PCD-04 technical alarm starts, then ends when the line clears.
    """

    OCCLUSION_CHANCE = 0.01
    """Per report while infusing, the chance that the line occludes (alarms on only)."""

    def __init__(
        self, identity: DeviceIdentity, rng: random.Random, start: float, alarms: bool
    ) -> None:
        self.identity = identity
        self._rng = rng
        self._alarms = alarms
        self._infusion = self._new_infusion()
        self._infusion.delivered = round(self._infusion.volume * rng.uniform(0.0, 0.9), 1)
        self.state = PumpState.INFUSING
        self._last = start
        self._restart_at = 0.0
        self._occluded_reports = 0
        self._alarm: _Alarm | None = None
        self._alarm_count = 0

    @property
    def delivered(self) -> float:
        """Volume delivered so far in the current infusion, mL."""
        return self._infusion.delivered

    def _new_infusion(self) -> _Infusion:
        rng = self._rng
        drug = rng.choice(DRUGS)
        rate = round(rng.uniform(*drug.rates), 1)
        return _Infusion(drug, rate, rng.choice(drug.volumes), 0.0)

    def observe(self, now: float) -> Observed:
        """Deliver up to ``now``: the PCD-01 rows and the occlusion alarm's, if one."""
        rng = self._rng
        elapsed, self._last = max(0.0, now - self._last), now
        infusion = self._infusion
        if self.state is PumpState.INFUSING:
            infusion.delivered = min(
                infusion.volume, infusion.delivered + infusion.rate * elapsed / 3600
            )
            if infusion.delivered >= infusion.volume:
                self.state = PumpState.COMPLETE
                self._restart_at = now + rng.uniform(60, 600)
        elif self.state is PumpState.COMPLETE and now >= self._restart_at:
            self._infusion = infusion = self._new_infusion()
            self.state = PumpState.INFUSING
        alarm = self._occlusion(rng.random(), now)
        return Observed(self._rows(now), alarm)

    def _occlusion(self, draw: float, now: float) -> AlarmReport | None:
        """A line occludes now and then while infusing, and clears a few reports later."""
        if self.state is PumpState.OCCLUDED:
            self._occluded_reports -= 1
            if self._occluded_reports <= 0 and self._alarm is not None:
                self.state = PumpState.INFUSING
                alarm, self._alarm = self._alarm, None
                return self._alarm_report(alarm, "end", now)
        elif self.state is PumpState.INFUSING and self._alarms and draw < self.OCCLUSION_CHANCE:
            self.state = PumpState.OCCLUDED
            self._occluded_reports = self._rng.randint(1, 4)
            self._alarm_count += 1
            self._alarm = _Alarm(f"{self.identity.tag}-AL{self._alarm_count:04d}", now)
            return self._alarm_report(self._alarm, "start", now)
        return None

    def _rows(self, now: float) -> list[Obx]:
        infusion, at, eq = self._infusion, hl7_time(now), self.identity.equipment
        infusing = self.state is PumpState.INFUSING
        remaining = round(infusion.volume - infusion.delivered, 1)
        minutes = (
            round(remaining / infusion.rate * 60) if self.state is not PumpState.COMPLETE else 0
        )
        delivering = "delivering" if infusing else "not-delivering"

        def value(
            path: str, code: int, refid: str, kind: str, text: str, unit: MdcUnit | None = None
        ) -> Obx:
            return Obx(path, code, refid, kind, text, unit, status="R", observed_at=at)

        return [
            Obx("1.0.0.0", 70049, "MDC_DEV_PUMP_INFUS_LVP_MDS", equipment=eq),
            Obx("1.1.0.0", 70050, "MDC_DEV_PUMP_INFUS_LVP_VMD", equipment=eq),
            Obx("1.1.1.0", 70067, "MDC_DEV_PUMP_DELIVERY_INFO"),
            value(
                "1.1.1.1",
                184519,
                "MDC_PUMP_INFUSING_STATUS",
                "CWE",
                "^pump-status-infusing" if infusing else "^pump-status-not-infusing",
            ),
            value(
                "1.1.1.2",
                158014,
                "MDC_FLOW_FLUID_PUMP_CURRENT",
                "NM",
                _number(infusion.rate if infusing else 0.0),
                ML_PER_HR,
            ),
            Obx("1.1.2.0", 70071, "MDC_DEV_PUMP_INFUSATE_SOURCE_PRIMARY"),
            value(
                "1.1.2.1",
                158005,
                "MDC_PUMP_CURRENT_DELIVERY_STATUS",
                "CWE",
                f"^pump-delivery-status-{delivering}",
            ),
            value("1.1.2.2", 184514, "MDC_DRUG_NAME_LABEL", "ST", infusion.drug.label),
            value(
                "1.1.2.3", 157784, "MDC_FLOW_FLUID_PUMP", "NM", _number(infusion.rate), ML_PER_HR
            ),
            value(
                "1.1.2.4",
                157760,
                "MDC_CONC_DRUG",
                "NM",
                _number(infusion.drug.mg_per_ml),
                MG_PER_ML,
            ),
            value("1.1.2.5", 157884, "MDC_VOL_FLUID_TBI", "NM", _number(infusion.volume), ML),
            value(
                "1.1.2.6",
                157993,
                "MDC_VOL_FLUID_DELIV_TOTAL",
                "NM",
                _number(round(infusion.delivered, 1)),
                ML,
            ),
            value("1.1.2.7", 157872, "MDC_VOL_FLUID_TBI_REMAIN", "NM", _number(remaining), ML),
            value("1.1.2.8", 157916, "MDC_TIME_PD_REMAIN", "NM", str(minutes), MINUTES),
        ]

    def _alarm_report(self, alarm: _Alarm, phase: str, now: float) -> AlarmReport:
        """The PCD-04 rows of the occlusion alarm (after the TF's B. Braun example)."""
        at, base = hl7_time(now), "1.0.0.0"
        return AlarmReport(
            alarm.identifier,
            [
                Obx(
                    f"{base}.1",
                    196616,
                    "MDC_EVT_ALARM",
                    "CWE",
                    "196940^MDC_EVT_FLUID_LINE_OCCL^MDC^^^^^^Occlusion",
                    flags="PH~ST",
                    status="F",
                    observed_at=at,
                    equipment=self.identity.equipment,
                ),
                Obx(
                    f"{base}.2",
                    68480,
                    "MDC_ATTR_ALERT_SOURCE",
                    "CWE",
                    "70049^MDC_DEV_PUMP_INFUS_LVP_MDS^MDC",
                    status="F",
                    observed_at=at,
                ),
                *alarm_state_facets(base, phase),
            ],
        )


@dataclass
class SimulatedUnit:
    """A care unit of monitors and pumps; ``report(i, now)`` is device i's next report.

    Monitor i watches the patient in bed i; pump j runs at bed ``j % beds`` (its own beds
    when there are no monitors). ``run_id`` (up to six of A-Z, 0-9) starts every MSH-10,
    so two runs against one engine are not taken for duplicates; within a run a control
    id is the device's tag and its message count. ``start`` is when the unit comes up.
    """

    seed: int
    monitors: int
    pumps: int
    start: float
    run_id: str = ""
    alarms: bool = True
    nibp_cycle_seconds: float = 300.0
    devices: tuple[DeviceIdentity, ...] = field(init=False)
    _simulated: list[Monitor | Pump] = field(init=False, repr=False)
    _counts: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.monitors < 0 or self.pumps < 0:
            raise ValueError("device counts cannot be negative")
        if not _RUN_ID.fullmatch(self.run_id):
            raise ValueError("run_id is up to six characters of A-Z and 0-9")
        beds = self.monitors or self.pumps
        simulated: list[Monitor | Pump] = []
        for i in range(self.monitors):
            simulated.append(
                Monitor(
                    self._identity(DeviceKind.MONITOR, i, i),
                    self._rng(DeviceKind.MONITOR, i),
                    self.start,
                    self.nibp_cycle_seconds,
                    self.alarms,
                )
            )
        for j in range(self.pumps):
            simulated.append(
                Pump(
                    self._identity(DeviceKind.PUMP, j, j % beds),
                    self._rng(DeviceKind.PUMP, j),
                    self.start,
                    self.alarms,
                )
            )
        self._simulated = simulated
        self.devices = tuple(d.identity for d in simulated)
        self._counts = [0] * len(simulated)

    def _identity(self, kind: DeviceKind, index: int, bed: int) -> DeviceIdentity:
        return DeviceIdentity(
            kind, index, device_eui64(self.seed, kind, index), simulated_patient(self.seed, bed)
        )

    def _rng(self, kind: DeviceKind, index: int) -> random.Random:
        return random.Random(f"{self.seed}:{kind.name}:{index}")

    def _control_id(self, position: int) -> str:
        self._counts[position] += 1
        prefix = f"{self.run_id}-" if self.run_id else ""
        return f"{prefix}{self.devices[position].tag}-{self._counts[position]:07d}"

    def report(self, device: int, now: float) -> list[SimulatedMessage]:
        """Device ``device`` (its position in ``devices``) reports at ``now``: its PCD-01,
        then a PCD-04 if an alarm starts or ends. One device's reports go in time order."""
        observed = self._simulated[device].observe(now)
        out = [self._pcd01(device, observed.rows, now)]
        if observed.alarm is not None:
            out.append(self._pcd04(device, observed.alarm, now))
        return out

    def _pcd01(self, position: int, rows: list[Obx], now: float) -> SimulatedMessage:
        device, control_id = self.devices[position], self._control_id(position)
        at, app, eui = hl7_time(now), device.kind.value, device.eui64
        obr = _segment(
            "OBR",
            {
                1: "1",
                2: f"{control_id}^{app}^{eui}^EUI-64",
                3: f"{control_id}^{app}^{eui}^EUI-64",
                4: MONITORING,
                7: at,
            },
        )
        raw = _message(device, control_id, at, "ORU^R01^ORU_R01", PCD01_PROFILE, obr, rows)
        return SimulatedMessage(MessageKind.PCD01, device, control_id, now, tuple(rows), raw)

    def _pcd04(self, position: int, alarm: AlarmReport, now: float) -> SimulatedMessage:
        device, control_id = self.devices[position], self._control_id(position)
        at, app, eui = hl7_time(now), device.kind.value, device.eui64
        obr = _segment(
            "OBR",
            {
                1: "1",
                2: f"{control_id}^{app}^{eui}^EUI-64",
                3: f"{alarm.identifier}^{app}^{eui}^EUI-64",
                4: "196616^MDC_EVT_ALARM^MDC",
                7: at,
                29: f"^{alarm.identifier}&{app}&{eui}&EUI-64",
            },
        )
        rows = alarm.rows
        raw = _message(device, control_id, at, "ORU^R40^ORU_R40", PCD04_PROFILE, obr, rows)
        return SimulatedMessage(MessageKind.PCD04, device, control_id, now, tuple(rows), raw)


def _message(
    device: DeviceIdentity,
    control_id: str,
    at: str,
    message_type: str,
    profile: str,
    obr: str,
    rows: list[Obx],
) -> bytes:
    msh = (
        f"MSH|^~\\&|{device.sender}|{FACILITY}|||{at}||{message_type}|{control_id}|P|2.6"
        f"|||AL|NE||UNICODE UTF-8|||{profile}"
    )
    segments = [msh, *device.patient.segments(), obr]
    segments += [row.segment(n) for n, row in enumerate(rows, 1)]
    return ("\r".join(segments) + "\r").encode("utf-8")


def _segment(name: str, fields: dict[int, str]) -> str:
    """A segment from its non-empty fields by number (empty ones in between)."""
    last = max((n for n, text in fields.items() if text), default=0)
    return "|".join([name, *(fields.get(n, "") for n in range(1, last + 1))])


def _number(value: float) -> str:
    """A number as HL7 NM text: no exponent, no trailing ``.0`` on whole numbers."""
    if float(value).is_integer():
        return str(int(value))
    return f"{round(value, 4):f}".rstrip("0").rstrip(".")
