"""The simulated unit: deterministic for a seed, stable devices, plausible drifting values,
pumps that deliver, finish and restart, alarms with start and end, and messages that two
independent HL7 parsers (python-hl7, hl7apy) read. Fields are read back with python-hl7,
never with the simulator's own rows, so a wrong pipe count shows up as a wrong value.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from collections.abc import Iterator
from itertools import pairwise

import hl7
import pytest
from hl7apy.parser import parse_message

from profiles.pcd import check, extract
from profiles.pcd.simulated import (
    SPO2_LOW_LIMIT,
    DeviceKind,
    MessageKind,
    SimulatedMessage,
    SimulatedUnit,
    device_eui64,
    hl7_time,
)
from tests.profiles.corpus import CORPUS

START = 1_795_000_000.0  # 2026-11-18, a fixed instant: nothing here reads the clock


def run(unit: SimulatedUnit, reports: int, interval: float) -> Iterator[SimulatedMessage]:
    """Every device reports ``reports`` times, ``interval`` seconds apart, staggered."""
    count = len(unit.devices)
    for k in range(reports):
        for device in range(count):
            yield from unit.report(device, START + k * interval + interval * device / count)


def obx_rows(message: hl7.Message) -> dict[str, hl7.Segment]:
    """OBX segments by OBX-3.1 (the first of each code)."""
    rows: dict[str, hl7.Segment] = {}
    for segment in message.segments("OBX"):
        rows.setdefault(str(segment[3][0][0]), segment)
    return rows


def value(message: hl7.Message, code: int) -> str:
    return str(obx_rows(message)[str(code)][5])


def parsed(m: SimulatedMessage) -> hl7.Message:
    return hl7.parse(m.raw.decode("utf-8"))


def test_same_seed_same_messages_byte_for_byte() -> None:
    """A seed and a list of report times fix every message; another seed changes them."""
    first = [m.raw for m in run(SimulatedUnit(7, 3, 2, START, run_id="R1"), 40, 1.0)]
    again = [m.raw for m in run(SimulatedUnit(7, 3, 2, START, run_id="R1"), 40, 1.0)]
    other = [m.raw for m in run(SimulatedUnit(8, 3, 2, START, run_id="R1"), 40, 1.0)]
    assert first == again
    assert len(first) >= 200
    assert first[0] != other[0]


TYPES = {MessageKind.PCD01: "ORU^R01^ORU_R01", MessageKind.PCD04: "ORU^R40^ORU_R40"}
PROFILES = {MessageKind.PCD01: "IHE_PCD_001", MessageKind.PCD04: "IHE_PCD_ACM_001"}


def test_every_message_parses_with_python_hl7_and_hl7apy_and_ids_are_unique() -> None:
    """python-hl7 reads every message as a v2.6 ORU in enhanced mode with the IHE profile
    in MSH-21; hl7apy (slow: every alarm, and each device's first reports) agrees."""
    messages = list(run(SimulatedUnit(3, 4, 4, START, run_id="ABC123"), 150, 5.0))
    assert {m.kind for m in messages} == {MessageKind.PCD01, MessageKind.PCD04}
    control_ids = []
    strict_checked: dict[str, int] = defaultdict(int)
    for m in messages:
        text = m.raw.decode("utf-8")
        msg = hl7.parse(text)
        msh = msg.segment("MSH")
        control_ids.append(str(msh[10]))
        assert str(msh[10]) == m.control_id and len(m.control_id) <= 20
        assert (str(msh[12]), str(msh[15]), str(msh[16])) == ("2.6", "AL", "NE")
        assert str(msh[9]) == TYPES[m.kind]
        assert str(msh[21]).split("^")[0] == PROFILES[m.kind]
        assert len(msg.segments("OBX")) == len(m.observations)
        if m.kind is MessageKind.PCD04 or strict_checked[m.device.tag] < 3:
            strict_checked[m.device.tag] += 1
            strict = parse_message(text, find_groups=False)
            assert strict.msh.msh_10.value == m.control_id
            assert strict.msh.msh_21.value == str(msh[21])
            assert [c.name for c in strict.children] == [str(seg[0]) for seg in msg]
            assert strict.obx[0].obx_18.value == str(msg.segments("OBX")[0][18])
    assert len(set(control_ids)) == len(control_ids)
    assert all(c.startswith("ABC123-") for c in control_ids)


def test_device_ids_are_stable_distinct_eui64s_and_name_the_device_everywhere() -> None:
    """MSH-3, OBR-2 and the MDS OBX-18 carry one EUI-64 per device, in every report."""
    unit = SimulatedUnit(11, 3, 3, START)
    seen: dict[int, set[str]] = defaultdict(set)
    for m in run(unit, 30, 2.0):
        msg = parsed(m)
        position = unit.devices.index(m.device)
        sender = str(msg.segment("MSH")[3])
        assert sender.endswith("^EUI-64")
        eui = sender.split("^")[1]
        first_obx = msg.segments("OBX")[0]
        assert str(first_obx[18]) == f"{eui}^^{eui}^EUI-64"
        assert f"^{eui}^EUI-64" in str(msg.segment("OBR")[2])
        seen[position].add(eui)
    euis = [next(iter(ids)) for ids in seen.values()]
    assert all(len(ids) == 1 for ids in seen.values())
    assert len(set(euis)) == 6
    assert all(len(e) == 16 and int(e, 16) >= 0 and e == e.upper() for e in euis)
    assert euis[0] == device_eui64(11, DeviceKind.MONITOR, 0) == "02" + euis[0][2:6] + "0100000001"
    assert SimulatedUnit(11, 3, 3, START + 999).devices == unit.devices


def test_pumps_run_at_the_monitored_patients_beds() -> None:
    """Pump j is bound to the patient in bed j % monitors: same PID-3 and PV1-3."""
    unit = SimulatedUnit(5, 2, 3, START)
    first = {m.device.tag: parsed(m) for m in run(unit, 1, 1.0)}
    for pump, monitor in (("P0001", "M0001"), ("P0002", "M0002"), ("P0003", "M0001")):
        for seg, index in (("PID", 3), ("PV1", 3)):
            assert str(first[pump].segment(seg)[index]) == str(first[monitor].segment(seg)[index])
    assert str(first["M0001"].segment("PID")[3]) != str(first["M0002"].segment("PID")[3])


VITALS = {  # code: (lowest, highest) a report may say
    147842: (38, 165),
    149530: (30, 175),
    151562: (6, 40),
    150456: (75, 100),
    150364: (35.0, 40.5),
    150021: (70, 210),
    150022: (40, 125),
    150023: (50, 160),
}


NIBP = (150021, 150022, 150023)


def test_monitor_values_drift_within_plausible_bounds() -> None:
    """Values change from report to report, in small steps, and never leave their bounds."""
    unit = SimulatedUnit(21, 3, 0, START, alarms=False)
    series: dict[tuple[str, int], list[float]] = defaultdict(list)
    for m in run(unit, 300, 4.0):
        msg = parsed(m)
        for code, (low, high) in VITALS.items():
            number = float(value(msg, code))
            assert low <= number <= high, (code, number)
            series[(m.device.tag, code)].append(number)
        sys_, dia, mean = (float(value(msg, c)) for c in (150021, 150022, 150023))
        assert dia < mean < sys_
    for (_, code), values in series.items():
        assert len(set(values)) > (1 if code in NIBP else 3), code  # it drifts
        steps = [abs(b - a) for a, b in pairwise(values)]
        assert max(steps) <= (VITALS[code][1] - VITALS[code][0]) / 4, code  # no jumps


def test_nibp_is_measured_on_its_cycle_and_keeps_its_time_in_obx14() -> None:
    """NIBP values and OBX-14 change once per cycle; HR's OBX-14 is the report time."""
    unit = SimulatedUnit(2, 1, 0, START, nibp_cycle_seconds=300)
    cuff_times, systolics = [], []
    for m in run(unit, 100, 30.0):  # 50 minutes: ten cycles
        if m.kind is MessageKind.PCD04:
            continue
        msg = parsed(m)
        rows = obx_rows(msg)
        assert str(rows["147842"][14]) == str(msg.segment("MSH")[7])
        cuff = str(rows["150021"][14])
        assert cuff <= str(msg.segment("MSH")[7])
        cuff_times.append(cuff)
        systolics.append(str(rows["150021"][5]))
    assert 9 <= len(set(cuff_times)) <= 11
    for earlier, later, a, b in zip(
        cuff_times, cuff_times[1:], systolics, systolics[1:], strict=False
    ):
        assert earlier <= later
        if earlier == later:
            assert a == b


def pump_series(unit: SimulatedUnit, reports: int, interval: float) -> list[hl7.Message]:
    return [parsed(m) for m in run(unit, reports, interval) if m.kind is MessageKind.PCD01]


def test_volume_delivered_grows_with_time_at_the_programmed_rate() -> None:
    """Between reports a minute apart, volume delivered grows by rate x time, remaining
    volume shrinks by as much, and the remaining time follows."""
    messages = pump_series(SimulatedUnit(4, 0, 1, START, alarms=False), 30, 60.0)
    growing = 0
    for a, b in pairwise(messages):
        if value(a, 184519) != "^pump-status-infusing" or value(b, 184519) != value(a, 184519):
            continue
        if value(a, 184514) != value(b, 184514) or value(b, 157993) == value(b, 157884):
            continue
        rate = float(value(a, 157784))
        grown = float(value(b, 157993)) - float(value(a, 157993))
        assert grown == pytest.approx(rate / 60, abs=0.11)
        assert float(value(b, 157872)) == pytest.approx(
            float(value(b, 157884)) - float(value(b, 157993)), abs=0.11
        )
        minutes = float(value(b, 157872)) / rate * 60
        assert float(value(b, 157916)) == pytest.approx(minutes, abs=1)
        growing += 1
    assert growing >= 10


def test_pumps_finish_then_start_a_new_infusion() -> None:
    """At the programmed volume a pump stops (not infusing, no flow), then restarts at 0."""
    messages = pump_series(SimulatedUnit(9, 0, 3, START, alarms=False), 24 * 12, 300.0)
    finished = restarted = 0
    by_device: dict[str, list[hl7.Message]] = defaultdict(list)
    for msg in messages:
        by_device[str(msg.segment("MSH")[3])].append(msg)
    for series in by_device.values():
        for a, b in pairwise(series):
            if value(a, 184519) == "^pump-status-infusing" and value(b, 184519) != value(a, 184519):
                assert value(b, 157993) == value(b, 157884)
                assert (value(b, 158014), value(b, 157916)) == ("0", "0")
                assert value(b, 158005) == "^pump-delivery-status-not-delivering"
                finished += 1
            if (
                value(a, 184519) == "^pump-status-not-infusing"
                and value(b, 184519) == "^pump-status-infusing"
            ):
                assert float(value(b, 157993)) < float(value(a, 157993))
                restarted += 1
    assert finished >= 3 and restarted >= 3


def alarm_facts(m: SimulatedMessage) -> dict[str, str]:
    msg = parsed(m)
    phase = next(s for s in msg.segments("OBX") if str(s[3][0][1]) == "MDC_ATTR_EVENT_PHASE")
    state = next(s for s in msg.segments("OBX") if str(s[3][0][1]) == "MDC_ATTR_ALARM_STATE")
    first = msg.segments("OBX")[0]
    return {
        "id": str(msg.segment("OBR")[3]).split("^")[0],
        "phase": str(phase[5]),
        "state": str(state[5]),
        "flags": str(first[8]),
        "event": str(first[3]),
        "parent": str(msg.segment("OBR")[29]),
        "device": m.device.tag,
        "value": str(first[5]),
    }


def test_alarms_start_and_end_in_pairs_linked_by_their_identifier() -> None:
    """Each alarm has a start (active) and then an end (inactive) with one OBR-3 id, which
    OBR-29 repeats; low SpO2 carries the SpO2 value that raised it, below the limit."""
    unit = SimulatedUnit(1, 3, 3, START)
    messages = list(run(unit, 400, 5.0))
    alarms = [m for m in messages if m.kind is MessageKind.PCD04]
    by_id: dict[str, list[dict[str, str]]] = defaultdict(list)
    for m in alarms:
        facts = alarm_facts(m)
        by_id[facts["id"]].append(facts)
        assert facts["id"] in facts["parent"]
        if m.device.kind is DeviceKind.MONITOR:
            assert facts["event"] == "196670^MDC_EVT_LO^MDC"
            assert facts["flags"] == "L~PM~SP"
            spo2 = parsed(m).segments("OBX")[1]
            assert str(spo2[3]) == "150456^MDC_PULS_OXIM_SAT_O2^MDC"
            assert (int(str(spo2[5])) < SPO2_LOW_LIMIT) == (facts["phase"] == "start")
        else:
            assert facts["event"] == "196616^MDC_EVT_ALARM^MDC"
            assert facts["value"].startswith("196940^MDC_EVT_FLUID_LINE_OCCL^MDC")
    kinds = {m.device.kind for m in alarms}
    assert kinds == {DeviceKind.MONITOR, DeviceKind.PUMP}
    for events in by_id.values():
        assert len({e["device"] for e in events}) == 1
        assert [e["phase"] for e in events] in (["start"], ["start", "end"])
        assert [e["state"] for e in events] == ["active", "inactive"][: len(events)]


def test_an_alarm_follows_the_report_that_raised_it() -> None:
    """The PCD-04 comes right after its device's PCD-01 of the same instant and value."""
    messages = list(run(SimulatedUnit(1, 2, 0, START), 400, 5.0))
    starts = 0
    for before, m in pairwise(messages):
        if m.kind is MessageKind.PCD04:
            assert before.kind is MessageKind.PCD01 and before.device == m.device
            assert before.sent_at == m.sent_at
            assert value(parsed(before), 150456) == str(parsed(m).segments("OBX")[1][5])
            starts += alarm_facts(m)["phase"] == "start"
    assert starts >= 2


def test_an_occluded_pump_stops_delivering_until_the_alarm_ends() -> None:
    """From the report whose PCD-04 starts an occlusion until the one whose PCD-04 ends
    it, the pump reports no flow and delivers nothing; then it infuses again."""
    unit = SimulatedUnit(1, 0, 4, START)
    occluded: set[str] = set()
    last_delivered: dict[str, str] = {}
    checked = resumed = 0
    for k in range(300):
        for device in range(4):
            report = unit.report(device, START + k * 10.0 + device)
            tag, msg = report[0].device.tag, parsed(report[0])
            phase = alarm_facts(report[1])["phase"] if len(report) > 1 else None
            if phase == "start" or (tag in occluded and phase != "end"):
                assert value(msg, 184519) == "^pump-status-not-infusing"
                assert value(msg, 158014) == "0"
                checked += 1
            if tag in occluded:
                assert value(msg, 157993) == last_delivered[tag]
            if phase == "end":
                assert value(msg, 184519) == "^pump-status-infusing"
                resumed += 1
            (occluded.add if phase == "start" else occluded.discard)(tag)
            last_delivered[tag] = value(msg, 157993)
    assert checked >= 3 and resumed >= 1


def test_without_alarms_no_pcd04_and_monitor_values_are_the_same() -> None:
    """--no-alarms sends PCD-01 only; monitors report the very same values as with alarms."""
    with_alarms = [m for m in run(SimulatedUnit(1, 3, 2, START), 400, 5.0)]
    without = list(run(SimulatedUnit(1, 3, 2, START, alarms=False), 400, 5.0))
    assert all(m.kind is MessageKind.PCD01 for m in without)
    assert any(m.kind is MessageKind.PCD04 for m in with_alarms)

    def monitor_values(messages: list[SimulatedMessage]) -> list[tuple[str, ...]]:
        return [
            tuple(o.value for o in m.observations)
            for m in messages
            if m.kind is MessageKind.PCD01 and m.device.kind is DeviceKind.MONITOR
        ]

    assert monitor_values(with_alarms) == monitor_values(without)


def test_codes_and_units_agree_with_the_corpus_table() -> None:
    """Every MDC code the simulator writes that `mdc-codes.csv` lists has the same refid,
    and the unit it sends with a measurement is the table's typical unit."""
    with (CORPUS / "mdc-codes.csv").open(newline="") as f:
        table = {row["mdc_code"]: row for row in csv.DictReader(f)}
    written: dict[str, tuple[str, str]] = {}
    for m in run(SimulatedUnit(1, 2, 2, START), 100, 5.0):
        for obx in parsed(m).segments("OBX"):
            code, refid = str(obx[3][0][0]), str(obx[3][0][1])
            unit = " ".join(str(obx[6]).split("^")[:2]) if str(obx[6]) else ""
            written[code] = (refid, unit)
    listed = [code for code in written if code in table]
    assert len(listed) >= 20
    for code in listed:
        refid, unit = written[code]
        assert refid == table[code]["mdc_refid"], code
        typical = table[code]["typical_unit_mdc"]
        if unit and typical:
            assert unit in typical, (code, unit, typical)
    assert {"147842", "150456", "149530", "150021", "150022", "150023", "151562"} <= set(listed)


def test_bad_arguments_are_refused() -> None:
    """A run id outside A-Z0-9 or longer than six, or a negative count, is a ValueError."""
    for kwargs in ({"run_id": "abc"}, {"run_id": "TOOLONG"}, {"monitors": -1}):
        args = {"seed": 1, "monitors": 1, "pumps": 1, "start": START, **kwargs}
        with pytest.raises(ValueError):
            SimulatedUnit(**args)  # type: ignore[arg-type]


def test_extraction_reads_back_what_the_simulator_generated_and_conformance_finds_nothing() -> None:
    """`profiles.pcd.extract` gives each generated value, device, patient, pump channel and
    alarm back, and `profiles.pcd.check` (and extraction) report no finding at all."""
    unit = SimulatedUnit(1, 2, 2, START)
    alarms = pumps = 0
    for m in run(unit, 150, 5.0):
        report = extract(m.raw)
        assert check(m.raw) == [] and report.findings == ()
        assert report.profile == m.kind.value and report.control_id == m.control_id
        # A PCD-04 declares no device tree: its device is the alarm's OBX-18.
        identity = report.alarms[0].device if report.alarms else report.device_identity
        assert identity is not None and identity.eui64 == m.device.eui64
        assert report.patient is not None
        assert report.patient.primary_id == m.device.patient.mrn
        for obx in m.observations:
            if m.kind is MessageKind.PCD01 and obx.value_type == "NM":
                metric = report.metric(obx.code)
                assert metric is not None and metric.value == float(obx.value), obx.refid
                assert metric.unit is not None and metric.unit.ucum == obx.unit.ucum
                assert metric.observed_at is not None
                assert hl7_time(metric.observed_at.timestamp()) == obx.observed_at
        if m.kind is MessageKind.PCD04:
            (alarm,) = report.alarms
            phase = m.value(68481)
            assert (alarm.phase, alarm.state) == (phase, {"start": "active"}.get(phase, "inactive"))
            if m.device.kind is DeviceKind.MONITOR:
                assert (alarm.code.refid, alarm.priority, alarm.kind) == (
                    "MDC_EVT_LO",
                    "medium",
                    "physiological",
                )
                assert alarm.source_metric is not None
                assert alarm.source_metric.value == float(m.value(150456) or "nan")
            else:
                assert (alarm.priority, alarm.kind) == ("high", "technical")
            alarms += 1
        elif m.device.kind is DeviceKind.PUMP:
            (channel,) = report.pumps
            assert report.is_infusion_pump and not report.is_monitor
            assert channel.drug_name == m.value(184514)
            assert channel.is_infusing == (m.value(184519) == "^pump-status-infusing")
            for quantity, code in (
                (channel.volume_delivered, 157993),
                (channel.volume_to_be_infused, 157884),
                (channel.programmed_rate, 157784),
                (channel.current_rate, 158014),
                (channel.time_remaining, 157916),
            ):
                assert quantity is not None and quantity.value == float(m.value(code) or "nan")
            pumps += 1
        else:
            assert report.is_monitor
    assert alarms >= 2 and pumps == 300
