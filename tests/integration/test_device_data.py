"""Device data through a real engine over MLLP: the glucose rule, de-duplication, devices.

Each test writes channel files, starts `interlink run`, sends corpus PCD messages over
loopback sockets, and reads outcomes from the answers (MSA/ERR), the files a file
destination wrote, the admin API, and the store opened from the test. Waits poll for a
state with a deadline; nothing sleeps for logic.
"""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import pytest

from tests.profiles.corpus import read
from tests.support import (
    EngineProcess,
    free_port,
    msa,
    running,
    send_and_receive,
    start_with_channels,
    store_of,
    wait_until,
    write_mllp_channel,
)

pytestmark = pytest.mark.integration

DEADLINE = 60.0
GLUCOSE = read("phd-glucose/continua-wan-glucose-meter.hl7")
PHILIPS = read("pcd01-monitor/ihe-tf-philips-multiparam-monitor.hl7")
GLUCOSE_RULE = {"metric": "MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD", "below": 20, "above": 600,
                "unit": "mg/dL"}


# -- messages: corpus files with one thing changed ---------------------------------------------


def segments(raw: bytes) -> list[bytes]:
    return [s for s in re.split(rb"\r\n|\r|\n", raw) if s]


def edited(raw: bytes, control_id: str, changes: dict[tuple[int, int], str] | None = None
           ) -> bytes:
    """``raw`` with MSH-10 replaced and OBX[n]-field values set (a naive edit of our own)."""
    out, obx = [], 0
    for seg in segments(raw):
        fields = seg.split(b"|")
        if fields[0] == b"MSH":
            fields[9] = control_id.encode()
        elif fields[0] == b"OBX":
            obx += 1
            for (number, field_no), value in (changes or {}).items():
                if number == obx:
                    while len(fields) <= field_no:
                        fields.append(b"")
                    fields[field_no] = value.encode()
        out.append(b"|".join(fields))
    return b"\r".join(out) + b"\r"


def glucose(control_id: str, value: str, unit: str) -> bytes:
    """The Continua glucose meter's message with its reading set to ``value`` ``unit``."""
    units = {"mg/dL": "264274^MDC_DIM_MILLI_G_PER_DL^MDC",
             "mmol/L": "266866^MDC_DIM_MILLI_MOLE_PER_L^MDC"}
    return edited(GLUCOSE, control_id, {(2, 5): value, (2, 6): units[unit]})


# -- the engine ------------------------------------------------------------------------------


def channel_file(directory: Path, name: str, port: int, out: Path, **channel: Any) -> None:
    """A channel delivering to files in `out`, so a test can read what was delivered."""
    write_mllp_channel(directory, name, port,
                       [{"name": "ehr", "to": {"type": "file", "directory": str(out)}}],
                       **channel)


def send(port: int, payload: bytes) -> bytes:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        return send_and_receive(sock, payload, timeout=DEADLINE)


def message(engine: EngineProcess, control_id: str, settled: bool = True) -> dict[str, Any]:
    """The stored row of the message with this MSH-10, once routed (not RECEIVED)."""
    def row() -> dict[str, Any] | None:
        with store_of(engine) as store:
            rows = store.list_messages(control_id=control_id)
        if rows and (not settled or rows[0]["status"] != "RECEIVED"):
            return rows[0]
        return None

    return wait_until(row, f"message {control_id} stored and routed")


def audit_text(engine: EngineProcess, message_id: int) -> str:
    with store_of(engine) as store:
        return json.dumps([(e["action"], json.loads(e["detail"]))
                           for e in store.audit_trail(message_id)])


def err_segments(answer: bytes) -> list[bytes]:
    return [s for s in segments(answer) if s.startswith(b"ERR")]


# -- the glucose rule --------------------------------------------------------------------------


def test_glucose_rule_rejects_and_flags_in_either_unit(tmp_path: Path) -> None:
    """Implausible glucose (mg/dL or mmol/L) is answered CE with ERR on the rejecting
    channel and stored as ERROR with the rule; the flagging channel accepts and records."""
    channels, out = tmp_path / "channels", tmp_path / "out"
    reject_port, flag_port = free_port(), free_port()
    channel_file(channels, "glucose-reject", reject_port, out / "reject",
                 pcd={"plausibility": [{**GLUCOSE_RULE, "action": "reject"}]})
    channel_file(channels, "glucose-flag", flag_port, out / "flag",
                 pcd={"plausibility": [{**GLUCOSE_RULE, "action": "flag"}]})
    engine = start_with_channels(tmp_path / "data", channels, [reject_port, flag_port])
    with running(engine):
        # (value, unit, plausible?): 0.8 mmol/L = 14.4 mg/dL, 35 mmol/L = 630.5 mg/dL
        cases = [("37.5", "mg/dL", True), ("15", "mg/dL", False), ("650", "mg/dL", False),
                 ("5.5", "mmol/L", True), ("0.8", "mmol/L", False), ("35", "mmol/L", False),
                 ("1.2", "mmol/L", True)]
        for n, (value, unit, plausible) in enumerate(cases):
            answer = send(reject_port, glucose(f"R{n}", value, unit))
            fields = msa(answer)
            if plausible:
                assert fields[1] == b"CA", (value, unit, answer)
                assert message(engine, f"R{n}")["status"] in ("QUEUED", "SENT")
                continue
            assert fields[1] == b"CE", (value, unit, answer)
            errs = err_segments(answer)
            assert len(errs) == 1, answer
            assert b"207" in errs[0] and b"OBX^2^5" in errs[0], errs
            assert b"MDC_CONC_GLU_CAPILLARY_WHOLEBLOOD" in errs[0]
            row = message(engine, f"R{n}")
            assert row["status"] == "ERROR"
            assert row["ack_code"] == "CE"
            assert "plausibility rule 1, reject" in row["error"]
            limit = "below the plausible limit 20" if float(value) < 100 and (
                unit == "mg/dL" or float(value) < 5) else "above the plausible limit 600"
            assert limit in row["error"], row["error"]
            assert value not in row["error"]  # the reading itself is not in the record
            assert "plausibility rule 1" in audit_text(engine, row["id"])

        answer = send(flag_port, glucose("F1", "15", "mg/dL"))
        assert msa(answer)[1] == b"CA" and not err_segments(answer)
        flagged = message(engine, "F1")
        assert flagged["status"] in ("QUEUED", "SENT")
        trail = audit_text(engine, flagged["id"])
        assert "flagged by device data rules" in trail and "below the plausible limit" in trail
        wait_until(lambda: list((out / "flag").glob("*.hl7")), "the flagged message delivered")
        assert msa(send(flag_port, glucose("F2", "120", "mg/dL")))[1] == b"CA"
        assert "flagged" not in audit_text(engine, message(engine, "F2")["id"])
    rejected_files = list((out / "reject").glob("*.hl7"))
    assert len(rejected_files) == 3  # only the plausible ones were delivered


# -- de-duplication and devices ----------------------------------------------------------------


def delivered(out: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(out.glob("*.hl7"))}


def test_resent_readings_are_delivered_once_also_across_a_restart(tmp_path: Path) -> None:
    """The same readings under new control ids are FILTERED naming the first message; a
    message with one new reading delivers only that one; a restart remembers; the device
    shows in /devices with its unit."""
    channels, out, data = tmp_path / "channels", tmp_path / "out", tmp_path / "data"
    port = free_port()
    channel_file(channels, "monitors", port, out, pcd={
        "deduplicate": True,
        "devices": {"expected_interval_seconds": 60, "silent_after": 3}})
    with running(start_with_channels(data, channels, [port])) as engine:
        assert msa(send(port, edited(PHILIPS, "GW-1")))[1] == b"CA"
        first = message(engine, "GW-1")
        wait_until(lambda: len(delivered(out)) == 1, "the first message delivered")
        assert msa(send(port, edited(PHILIPS, "GW-2")))[1] == b"CA"
        again = message(engine, "GW-2")
        assert again["status"] == "FILTERED"
        trail = audit_text(engine, again["id"])
        assert f"already received in message {first['id']}" in trail
        # a new systolic pressure time: only that reading is new
        newer = edited(PHILIPS, "GW-3", {(4, 14): "20150122115500"})
        assert msa(send(port, newer))[1] == b"CA"
        partial = message(engine, "GW-3")
        assert partial["status"] in ("QUEUED", "SENT")
        assert "1 of 10 readings already" not in audit_text(engine, partial["id"])
        assert f"9 of 10 readings already received in message {first['id']}" in audit_text(
            engine, partial["id"])
        files = wait_until(lambda: len(delivered(out)) == 2 and delivered(out),
                           "the partly new message delivered")
        body = next(v for k, v in files.items() if "GW-3" in k)
        assert b"150021^MDC_PRESS_BLD_NONINV_SYS" in body
        assert b"150456^MDC_PULS_OXIM_SAT_O2" not in body
        assert b"150022^MDC_PRESS_BLD_NONINV_DIA" not in body
        assert b"69965^MDC_DEV_MON_PHYSIO_MULTI_PARAM_MDS" in body  # the device tree stays
        status, answer = engine.api("GET", "devices")
        assert status == 200, answer
        [device] = answer["devices"]
        assert device["device"] == "local:e86c094f-f751-4acf-92b2-38f11c1f6f57-Device"
        assert device["unit"] == "HO Surgery" and device["channel"] == "monitors"
        assert device["state"] == "reporting" and device["received"] == 2
        assert device["expected_interval_seconds"] == 60
        assert answer["units"][0]["unit"] == "HO Surgery"
        assert "Hon" not in json.dumps(answer) and "HO2009001" not in json.dumps(answer)
    with running(start_with_channels(data, channels, [port])) as engine:
        assert msa(send(port, edited(PHILIPS, "GW-4")))[1] == b"CA"
        after = message(engine, "GW-4")
        assert after["status"] == "FILTERED"
        assert f"already received in message {first['id']}" in audit_text(engine, after["id"])
        status, answer = engine.api("GET", "devices")
        assert [d["received"] for d in answer["devices"]] == [2]  # kept; re-sends not counted
    assert len(delivered(out)) == 2
