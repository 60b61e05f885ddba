"""The channel pipeline as a pure function: filters, transformers, outputs, lanes, failures."""

from __future__ import annotations

import json
import pickle
from typing import Any

from channels.model import ChannelConfig
from channels.pcd import Sighting
from channels.pipeline import (
    ALL_FILTERED,
    CHANNEL_FILTERED,
    DESTINATION_FILTERED,
    NO_DESTINATIONS,
    ChannelPipeline,
    Decision,
    Output,
    Verdict,
)
from profiles.hl7.message import Message

ORU = (
    b"MSH|^~\\&|GATEWAY|ICU|||20261125083000||ORU^R01^ORU_R01|GW-1|P|2.6\r"
    b"PID|||MRN-1^^^GH^MR||TESTPATIENT^ALEX||19580312|F\r"
    b"PV1||I|3 WEST ICU^12^1\r"
    b"OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|%\r"
)
ADT = (
    b"MSH|^~\\&|PAS|GH|||20261125081500||ADT^A01^ADT_A01|PAS-1|P|2.5\r"
    b"PID|1||MRN-2^^^GH^MR||SAMPLE^JORDAN||19471102|M\r"
)
FILE_OUT = {"type": "file", "directory": "out"}


def pipeline(**channel: Any) -> ChannelPipeline:
    """A compiled pipeline for a channel given as the data a YAML file would hold."""
    channel.setdefault("name", "test")
    return ChannelPipeline(ChannelConfig.model_validate(channel))


def dest(name: str, **spec: Any) -> dict[str, Any]:
    return {"name": name, "to": FILE_OUT, **spec}


def test_channel_filter_declines_with_its_reason() -> None:
    """A message the channel filter rejects is FILTERED with a reason, and goes nowhere."""
    p = pipeline(filter="MSH-9.1 == ORU", destinations=[dest("out")])
    decision = p.run(ADT)
    assert decision.verdict is Verdict.FILTERED
    assert decision.reason == CHANNEL_FILTERED
    assert decision.outputs == []
    assert p.run(ORU).verdict is Verdict.QUEUED


def test_channel_without_destinations_filters_everything() -> None:
    """No destinations: FILTERED, saying so (nothing silently dropped)."""
    decision = pipeline().run(ORU)
    assert (decision.verdict, decision.reason) == (Verdict.FILTERED, NO_DESTINATIONS)


def test_destination_filter_decides_per_destination() -> None:
    """Each destination's filter sees the channel's output; declined ones are FILTERED."""
    p = pipeline(destinations=[dest("vitals", filter="MSH-9.1 == ORU"),
                               dest("admissions", filter="MSH-9.2 == A01")])
    oru = {o.destination: o for o in p.run(ORU).outputs}
    assert oru["vitals"].verdict is Verdict.QUEUED
    assert oru["admissions"].verdict is Verdict.FILTERED
    assert oru["admissions"].reason == DESTINATION_FILTERED
    assert oru["admissions"].payload is None


def test_every_destination_declining_filters_the_message() -> None:
    """When no destination takes it, the message itself is FILTERED, outputs kept."""
    p = pipeline(destinations=[dest("a", filter="PID-8 == X"), dest("b", filter="PID-8 == Y")])
    decision = p.run(ORU)
    assert (decision.verdict, decision.reason) == (Verdict.FILTERED, ALL_FILTERED)
    assert [o.verdict for o in decision.outputs] == [Verdict.FILTERED, Verdict.FILTERED]


def test_destination_filter_sees_the_channel_transformer_output() -> None:
    """The channel transformer runs before destination filters."""
    p = pipeline(transformer=[{"set": "PV1-3.1", "value": "ICU3W"}],
                 destinations=[dest("icu", filter="PV1-3.1 == ICU3W")])
    assert p.run(ORU).verdict is Verdict.QUEUED


def test_transformer_output_is_encoded_with_the_message_delimiters() -> None:
    """A message with its own delimiters keeps them, and set values are escaped with them."""
    raw = (b"MSH*$~\\&*GATEWAY*ICU***20261125083000**ORU$R01*GW-2*P*2.6\r"
           b"PID***MRN-3$$$GH$MR**DOE$JANE\r")
    p = pipeline(transformer=[{"set": "PID-5.1", "value": "O*BRIEN$JR"}],
                 destinations=[dest("out")])
    [out] = p.run(raw).outputs
    assert out.payload is not None
    assert out.payload.startswith(b"MSH*$~\\&*GATEWAY*ICU*")
    assert b"PID***MRN-3$$$GH$MR**O\\F\\BRIEN\\S\\JR$JANE\r" in out.payload
    assert Message.parse(out.payload).get("PID-5.1") == "O*BRIEN$JR"


def test_destination_transformer_works_on_its_own_copy() -> None:
    """One destination's edits never reach another destination's output."""
    p = pipeline(destinations=[
        dest("ehr", transformer=[{"rename_code": "OBX-3", "from": "150456^^MDC",
                                  "to": "59408-5^Oxygen saturation^LN"}]),
        dest("archive")])
    outputs = {o.destination: o.payload for o in p.run(ORU).outputs}
    assert Message.parse(outputs["ehr"] or b"").get("OBX-3.1") == "59408-5"
    assert Message.parse(outputs["archive"] or b"").get("OBX-3.1") == "150456"


def test_json_output_renders_the_documented_shape() -> None:
    """`output: json` gives the hl7v2+json document with header facts and decoded fields."""
    p = pipeline(destinations=[dest("archive", output="json")])
    [out] = p.run(ORU).outputs
    document = json.loads(out.payload or b"")
    assert document["format"] == "hl7v2+json/1"
    assert document["header"]["message_type"] == "ORU"
    assert document["header"]["control_id"] == "GW-1"
    pid = next(s for s in document["segments"] if s["name"] == "PID")
    assert pid["fields"][2][0][0] == "MRN-1"


def test_lane_key_comes_from_the_configured_field() -> None:
    """`lanes: PID-3.1` puts each patient in a lane of their own; no lanes, one lane."""
    p = pipeline(destinations=[dest("ehr", lanes="PID-3.1"), dest("archive")])
    lanes = {o.destination: o.lane_key for o in p.run(ORU).outputs}
    assert lanes == {"ehr": "MRN-1", "archive": ""}


def test_disabled_destination_gets_nothing() -> None:
    """An `enabled: false` destination is left out of routing altogether."""
    p = pipeline(destinations=[dest("ehr"), dest("old", enabled=False)])
    assert p.destination_names == ["ehr"]
    assert [o.destination for o in p.run(ORU).outputs] == ["ehr"]


def test_failing_hook_is_an_error_whose_reason_names_only_the_step() -> None:
    """A hook that raises: ERROR, traceback kept in `error`, no content in `reason`."""
    p = pipeline(filter={"python": "tests.channels.hook_samples:leaky_failure",
                         "id": "leaky check"},
                 destinations=[dest("out")])
    decision = p.run(ORU)
    assert decision.verdict is Verdict.ERROR
    assert "leaky check" in decision.reason and "ValueError" in decision.reason
    assert "TESTPATIENT" not in decision.reason
    assert decision.error is not None
    assert "Traceback" in decision.error and "TESTPATIENT" in decision.error
    assert decision.outputs == []


def test_failing_transformer_hook_is_an_error_too() -> None:
    """The same holds for a destination's transformer step."""
    p = pipeline(destinations=[dest("out", transformer=[
        {"python": "tests.channels.hook_samples:returns_number"}])])
    decision = p.run(ORU)
    assert decision.verdict is Verdict.ERROR
    assert decision.reason.startswith("step ")
    assert decision.error and "Traceback" in decision.error


def test_unreadable_message_after_preprocessing_is_an_error() -> None:
    """A preprocessor that breaks the MSH makes the message ERROR, not an exception."""
    p = pipeline(preprocessor=[{"replace": "^MSH", "with": "XXX"}], destinations=[dest("out")])
    decision = p.run(ORU)
    assert decision.verdict is Verdict.ERROR
    assert decision.reason.startswith("unreadable after preprocessing")


def test_decisions_pickle_as_their_constructor_arguments() -> None:
    """What a pipeline worker sends back comes out equal, built by the constructors."""
    decision = Decision(Verdict.QUEUED, "why", None,
                        [Output("ehr", Verdict.QUEUED, b"MSH|^~\\&|A\r", "MRN1"),
                         Output("archive", Verdict.FILTERED, None, "", "not for it")],
                        (Sighting("0123456789ABCDEF", "ICU3W"),))
    assert Decision.__reduce__(decision)[0] is Decision
    assert pickle.loads(pickle.dumps(decision, pickle.HIGHEST_PROTOCOL)) == decision
