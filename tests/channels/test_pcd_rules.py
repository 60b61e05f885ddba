"""Clinical data rules in the pipeline: plausibility (flag/reject, units), conformance
policy, the receive-time screen, de-duplication keys and partial delivery, sightings."""

from __future__ import annotations

from typing import Any

from channels.model import ChannelConfig
from channels.pcd import DeviceMessage, without_observations
from channels.pipeline import ChannelPipeline, Verdict
from tests.profiles.corpus import read

PHILIPS = read("pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7")
GLUCOSE = read("phd-glucose/continua-wan-glucose-meter.hl7")  # 37.5 mg/dL at OBX[2]
RULE = {"metric": "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", "below": 40, "unit": "mg/dL"}


def pipeline(**extra: Any) -> ChannelPipeline:
    data = {"name": "devices",
            "destinations": [{"name": "ehr", "to": {"type": "file", "directory": "/tmp/x"}}],
            **extra}
    return ChannelPipeline(ChannelConfig.model_validate(data))


def test_a_rejecting_rule_sends_the_message_to_error_with_the_rule() -> None:
    """37.5 mg/dL under a 40 mg/dL floor: ERROR, the rule and location on the record."""
    decision = pipeline(pcd={"plausibility": [{**RULE, "action": "reject"}]}).run(GLUCOSE)
    assert decision.verdict is Verdict.ERROR
    assert "OBX[2]-5" in decision.reason and "plausibility rule 1, reject" in decision.reason
    assert "37.5" not in (decision.error or "")


def test_a_flagging_rule_delivers_and_records() -> None:
    """The same reading under a flag rule is QUEUED with the finding as its reason."""
    decision = pipeline(pcd={"plausibility": [{**RULE, "action": "flag"}]}).run(GLUCOSE)
    assert decision.verdict is Verdict.QUEUED
    assert decision.reason.startswith("flagged by device data rules: OBX[2]-5 207")


def test_rules_compare_in_the_rule_unit() -> None:
    """2 mmol/L = 36 mg/dL: 37.5 mg/dL is above it, 2.1 mmol/L (37.8 mg/dL) is not below it."""
    below_2 = {"metric": 160184, "below": 2.0, "unit": "mmol/L", "action": "reject"}
    below_21 = {**below_2, "below": 2.1}
    assert pipeline(pcd={"plausibility": [below_2]}).run(GLUCOSE).verdict is Verdict.QUEUED
    assert pipeline(pcd={"plausibility": [below_21]}).run(GLUCOSE).verdict is Verdict.ERROR


def test_a_rule_in_a_unit_that_cannot_be_compared_is_noted_not_applied() -> None:
    """A glucose rule in % never judges a mg/dL reading: recorded as a note, delivered."""
    rule = {"metric": 160184, "below": 50, "unit": "%", "action": "reject"}
    decision = pipeline(pcd={"plausibility": [rule]}).run(GLUCOSE)
    assert decision.verdict is Verdict.QUEUED
    assert "not applied" in decision.reason


def test_the_screen_answers_only_for_rejecting_rules() -> None:
    """The receive-time screen builds ERR entries from rejecting rules; flags pass."""
    rejecting = pipeline(pcd={"plausibility": [{**RULE, "action": "reject"}]})
    [detail] = rejecting.screen(GLUCOSE)
    assert (detail.code, detail.segment, detail.sequence, detail.field) == (207, "OBX", 2, 5)
    assert pipeline(pcd={"plausibility": [{**RULE, "action": "flag"}]}).screen(GLUCOSE) == []
    assert pipeline().screen(GLUCOSE) == []


def test_conformance_policy_flags_or_rejects_findings() -> None:
    """A time that reads as no HL7 date is an extraction finding: flagged or rejected."""
    broken = PHILIPS.replace(b"|20150122115000", b"|yesterday", 1)
    assert pipeline(pcd={"conformance": "off"}).run(broken).reason == ""
    flagged = pipeline(pcd={"conformance": "flag"}).run(broken)
    assert flagged.verdict is Verdict.QUEUED and "OBX[4]-14 102" in flagged.reason
    rejected = pipeline(pcd={"conformance": "reject"}).run(broken)
    assert rejected.verdict is Verdict.ERROR and "OBX[4]-14 102" in rejected.reason


def test_seen_readings_are_left_out_or_the_message_filtered() -> None:
    """With every key seen the message is FILTERED naming the earlier message; with some
    seen only the others are delivered, the device tree kept."""
    p = pipeline(pcd={"deduplicate": True, "devices": {}})
    prepared = p.prepare(PHILIPS)
    keys = [o.key for o in prepared.observations]
    assert len(keys) == 10 and len(set(keys)) == 10
    assert len(prepared.sightings) == 1 and prepared.sightings[0].unit == "HO Surgery"
    every = p.run(PHILIPS, seen={k: 7 for k in keys})
    assert every.verdict is Verdict.FILTERED and "message 7" in every.reason
    assert every.sightings == ()
    some = p.run(PHILIPS, seen={k: 7 for k in keys[1:]})
    assert some.verdict is Verdict.QUEUED and "9 of 10 readings" in some.reason
    payload = some.outputs[0].payload or b""
    assert b"MDC_PRESS_BLD_NONINV_SYS" in payload and b"MDC_PULS_OXIM_SAT_O2" not in payload
    assert payload.count(b"\rOBX|") == 8  # 7 device rows + the new reading


def test_keys_differ_by_channel_and_time() -> None:
    """Another channel or another observation time gives other keys."""
    a = pipeline(pcd={"deduplicate": True}).prepare(PHILIPS).observations
    b = ChannelPipeline(ChannelConfig.model_validate(
        {"name": "other", "pcd": {"deduplicate": True}})).prepare(PHILIPS).observations
    later = PHILIPS.replace(b"|20150122115000", b"|20150122115500", 1)
    c = pipeline(pcd={"deduplicate": True}).prepare(later).observations
    assert not {o.key for o in a} & {o.key for o in b}
    assert len({o.key for o in a} - {o.key for o in c}) == 1


def test_without_observations_drops_obx_and_its_notes() -> None:
    """Dropping OBX[2] also drops the NTE after it."""
    raw = b"MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.6\rOBX|1|NM|1\rOBX|2|NM|2\rNTE|1||x\rOBX|3\r"
    out = without_observations(DeviceMessage.read(raw), [2])
    assert out.text == "MSH|^~\\&|A|B|||20260101||ORU^R01|1|P|2.6\rOBX|1|NM|1\rOBX|3\r"
