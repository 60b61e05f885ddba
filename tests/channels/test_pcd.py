"""PCD filters in channel files: expressions and structured forms over corpus messages,
unit conversion for glucose, located config errors, and one extraction per pipeline run."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from channels import pcd
from channels.configfile import ConfigError, load_model
from channels.hooks import HookLoader
from channels.model import ChannelConfig
from channels.pipeline import ChannelPipeline, Verdict
from channels.rules import compile_condition, parse_condition
from profiles.hl7.message import Message
from tests.profiles.corpus import read

PHILIPS = read("pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7")
PUMP = read("pcd01-pump/bbraun-spaceplus-perfusor-pcd01-infusing-dobutamine.hl7")
GLUCOSE = read("phd-glucose/continua-wan-glucose-meter.hl7")
LOW_SPO2_ALARM = read("pcd04-alarm/ihe-tf-mindray-low-spo2-alarm-start.hl7")
SYRINGE_ALARM = read("pcd04-alarm/bbraun-syringe-holder-open-1-start.hl7")
CO2_ALARM = read("pcd04-alarm/draeger-acm-pcd04-co2-sensor-unplugged.hl7")


def holds(condition: object, raw: bytes) -> bool:
    """Compile a condition from plain data and evaluate it on an editable message."""
    message = pcd.DeviceMessage.read(raw)
    return compile_condition(parse_condition(condition), HookLoader())(message)


@pytest.mark.parametrize(("condition", "raw", "expected"), [
    # the Philips monitor reports SpO2 99 %, heart rate 80, NIBP 117/82
    ({"pcd": "metric(MDC_PULS_OXIM_SAT_O2).value < 90"}, PHILIPS, False),
    ({"pcd": "metric(MDC_PULS_OXIM_SAT_O2).value > 98"}, PHILIPS, True),
    ({"pcd": "pcd.metric(150456) >= 99"}, PHILIPS, True),
    ({"pcd_metric": "MDC_PULS_OXIM_SAT_O2", "lt": 90}, PHILIPS, False),
    ({"pcd_metric": 147842, "le": 80}, PHILIPS, True),
    ({"pcd_metric": 147842, "lt": 80}, PHILIPS, False),
    ({"pcd": "metric(MDC_PRESS_BLD_NONINV_SYS) > 110 mm[Hg]"}, PHILIPS, True),
    ({"pcd": "metric(MDC_PRESS_BLD_NONINV_SYS) > 110 MDC_DIM_MMHG"}, PHILIPS, True),
    ({"pcd": "metric(MDC_PRESS_BLD_NONINV_SYS) > 110 %"}, PHILIPS, False),  # other unit
    ({"pcd": "metric(MDC_ECG_STAT_RHY) == MDC_ECG_SINUS_RHY"}, PHILIPS, True),
    ({"pcd": "metric(MDC_PULS_OXIM_SAT_O2) exists"}, PHILIPS, True),
    ({"pcd": "metric(MDC_PULS_OXIM_SAT_O2) not exists"}, PUMP, True),
    ({"pcd_metric": "MDC_PULS_OXIM_SAT_O2", "exists": False}, PHILIPS, False),
    # the glucose meter reports 37.5 mg/dL = 2.08 mmol/L
    ({"pcd": "metric(MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD) < 40 mg/dL"}, GLUCOSE, True),
    ({"pcd": "metric(MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD) < 2.5 mmol/L"}, GLUCOSE, True),
    ({"pcd": "metric(MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD) < 2 mmol/L"}, GLUCOSE, False),
    ({"pcd_metric": 160184, "gt": 2.0, "unit": "MDC_DIM_MILLI_MOLE_PER_L"}, GLUCOSE, True),
    # device kinds
    ({"pcd_device": "infusion_pump"}, PUMP, True),
    ({"pcd_device": "infusion_pump"}, PHILIPS, False),
    ({"pcd": "device == monitor"}, PHILIPS, True),
    ({"pcd": "device in [infusion_pump, personal_health_device]"}, GLUCOSE, True),
    ({"pcd_device": "MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS"}, PHILIPS, True),
    # alarm priorities: the Mindray low SpO2 is PM, the B. Braun syringe alarm PH
    ({"pcd_alarm_priority": "high"}, LOW_SPO2_ALARM, False),
    ({"pcd_alarm_priority": "medium"}, LOW_SPO2_ALARM, True),
    ({"pcd_alarm_priority": "PH"}, SYRINGE_ALARM, True),
    ({"pcd": "alarm.priority in [high, medium]"}, CO2_ALARM, False),
    ({"pcd": "alarm.priority == low"}, CO2_ALARM, True),
    ({"pcd_alarm_priority": ["high"]}, PHILIPS, False),
    # profiles
    ({"pcd_profile": "PCD-04"}, LOW_SPO2_ALARM, True),
    ({"pcd": "profile == pcd-01"}, PHILIPS, True),
    ({"pcd": "profile == PCD-01"}, LOW_SPO2_ALARM, False),
])
def test_pcd_conditions_on_corpus_messages(condition: object, raw: bytes,
                                           expected: bool) -> None:
    """Each form reads the values the corpus message states and compares as documented."""
    assert holds(condition, raw) is expected


def test_conditions_combine_with_field_tests() -> None:
    """PCD forms sit inside all/any/not beside ordinary field tests."""
    condition = {"all": ["MSH-9.1 == ORU", {"pcd_device": "monitor"},
                         {"not": {"pcd": "metric(MDC_PULS_OXIM_SAT_O2) < 90"}}]}
    assert holds(condition, PHILIPS)
    assert not holds(condition, PUMP)


def test_a_lazy_message_works_too() -> None:
    """A PCD predicate also takes the read-only message view (no cache, same answer)."""
    predicate = compile_condition(parse_condition({"pcd_device": "infusion_pump"}),
                                  HookLoader())
    assert predicate(Message.parse(PUMP))


BAD = """\
name: devices
filter:
  all:
    - {pcd: "SpO2 < 90"}
    - {pcd: "metric(SPO2) < 90"}
    - {pcd_metric: MDC_PULS_OXIM_SAT_O2, lt: 90, unit: furlongs}
    - {pcd_device: toaster}
    - {pcd_alarm_priority: urgent}
    - {pcd_metric: MDC_PULS_OXIM_SAT_O2}
    - {pcd_metric: MDC_PULS_OXIM_SAT_O2, equals: x, unit: "%"}
    - {pcd: "profile == PCD-99"}
pcd:
  conformance: sometimes
  plausibility:
    - {metric: MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD, unit: mg/dL}
    - {metric: MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD, below: 600, above: 20}
    - {metric: glucose, below: 20}
  default_timezone: Mars/Olympus
"""


def test_every_mistake_is_reported_where_it_was_written(tmp_path: Path) -> None:
    """Bad expressions, metric names, units, kinds and rules are located config errors."""
    path = tmp_path / "devices.yaml"
    path.write_text(BAD)
    with pytest.raises(ConfigError) as caught:
        load_model(ChannelConfig, path)
    issues = {i.line: (i.where, i.message) for i in caught.value.issues}
    expected = {
        4: "expected a PCD expression",
        5: "'SPO2' is not a metric name",
        6: "'furlongs' is not a unit",
        7: "'toaster' is not a known device",
        8: "'urgent' is not a known alarm priority",
        9: "exactly one of gt, ge, lt, le, equals, exists (found: none)",
        10: "'unit' goes with a numeric test",
        11: "'PCD-99' is not a known profile",
        13: "Input should be 'reject', 'flag' or 'off'",
        15: "needs 'below', 'above' or both",
        16: "'below' must be less than 'above'",
        17: "'glucose' is not a metric name",
        18: "is not an IANA time zone",
    }
    for line, text in expected.items():
        assert line in issues, (line, issues)
        assert text in issues[line][1], (line, issues[line])
    assert len(caught.value.issues) == len(expected)


def channel(**extra: Any) -> ChannelPipeline:
    """A pipeline with one file destination and the given channel-file keys."""
    data = {"name": "devices",
            "destinations": [{"name": "ehr", "to": {"type": "file", "directory": "/tmp/x"}}],
            **extra}
    return ChannelPipeline(ChannelConfig.model_validate(data))


def test_a_channel_without_pcd_rules_never_extracts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Extraction stays off the path of channels that use no PCD condition or section."""
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("extracted")

    monkeypatch.setattr(pcd, "extract", refuse)
    decision = channel(filter="MSH-9.1 == ORU").run(PHILIPS)
    assert decision.verdict is Verdict.QUEUED


def test_extraction_happens_once_per_run(monkeypatch: pytest.MonkeyPatch) -> None:
    """Channel and destination filters share one report per run; a transform re-reads."""
    calls: list[object] = []
    real = pcd.extract

    def counting(message: object, **kwargs: Any) -> Any:
        calls.append(message)
        return real(message, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(pcd, "extract", counting)
    pipeline = channel(
        filter={"all": [{"pcd_device": "monitor"}, {"pcd": "metric(150456) > 90"},
                        {"pcd_metric": 147842, "gt": 10}]},
        pcd={"plausibility": [{"metric": 150456, "below": 50}]},
        destinations=[{"name": "ehr", "to": {"type": "file", "directory": "/tmp/x"},
                       "filter": {"pcd_profile": "PCD-01"}},
                      {"name": "alarms", "to": {"type": "file", "directory": "/tmp/x"},
                       "filter": {"pcd_profile": "PCD-04"}}])
    decision = pipeline.run(PHILIPS)
    assert decision.verdict is Verdict.QUEUED
    assert [o.verdict for o in decision.outputs] == [Verdict.QUEUED, Verdict.FILTERED]
    assert len(calls) == 1
    calls.clear()
    transformed = channel(filter={"pcd_device": "monitor"},
                          transformer=[{"set": "MSH-5", "value": "EHR"}],
                          destinations=[{"name": "ehr",
                                         "to": {"type": "file", "directory": "/tmp/x"},
                                         "filter": {"pcd_device": "monitor"}}])
    assert transformed.run(PHILIPS).verdict is Verdict.QUEUED
    assert len(calls) == 2


def test_destination_filters_read_the_transformed_message() -> None:
    """After the channel transformer edits a reading, destination PCD filters see the edit."""
    pipeline = channel(
        transformer=[{"set": "OBX[16]-5", "value": "85"}],
        destinations=[{"name": "low", "to": {"type": "file", "directory": "/tmp/x"},
                       "filter": {"pcd": "metric(MDC_PULS_OXIM_SAT_O2) < 90"}}])
    decision = pipeline.run(PHILIPS)
    assert decision.verdict is Verdict.QUEUED
    assert b"|85|" in (decision.outputs[0].payload or b"")
