"""Metrics, health and JSON logs of a real engine process, from traffic sent in the test.

A channel with an MLLP source takes four ORU messages (one a duplicate) and one ADT its
filter declines; it delivers to a file (succeeds), to an MLLP peer nobody runs (fails and
queues) and to another dead peer with one attempt (dead-letters). `/metrics` is parsed
with prometheus-client's own parser, the channels list read through `interlink channels
list --json`, and every log line parsed as JSON. Waits poll for a state with a deadline;
nothing asserts on time.
"""

from __future__ import annotations

import json
import re
import signal
import socket
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import (
    REPO,
    EngineProcess,
    free_port,
    msa,
    send_and_receive,
    start_engine,
    wait_for_port,
    wait_until,
)

pytestmark = pytest.mark.integration

DEADLINE = 60.0
PATIENT_NAME = "ZZSECRET^PATIENTNAME"
PATIENT_ID = "MRN7731904"


def oru(control_id: str) -> bytes:
    return (
        "MSH|^~\\&|MONITOR|WARD3|||20261125083000||ORU^R01^ORU_R01|"
        f"{control_id}|P|2.6\r"
        f"PID|||{PATIENT_ID}^^^GH^MR||{PATIENT_NAME}\r"
        f"OBR|1|{control_id}|{control_id}|182777000^monitoring of patient^SCT\r"
        "OBX|1|NM|150456^MDC_PULS_OXIM_SAT_O2^MDC|1.2.1.1|97|262688^MDC_DIM_PERCENT^MDC"
        "|||||R\r").encode()


def adt(control_id: str) -> bytes:
    return ("MSH|^~\\&|ADT|HOSP|||20261125083000||ADT^A01^ADT_A01|"
            f"{control_id}|P|2.6\rEVN|A01|20261125083000\r"
            f"PID|||{PATIENT_ID}^^^GH^MR||{PATIENT_NAME}\rPV1|1|I\r").encode()


def get(engine: EngineProcess, path: str) -> tuple[int, bytes]:
    url = f"http://127.0.0.1:{engine.admin_port}/{path}"
    try:
        with urllib.request.urlopen(url, timeout=10) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def samples(engine: EngineProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics by (name, sorted labels)."""
    status, body = get(engine, "metrics")
    assert status == 200
    out = {}
    for family in text_string_to_metric_families(body.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def channel_file(directory: Path, source_port: int, archive: Path) -> None:
    config = {
        "name": "vitals",
        "source": {"type": "mllp", "port": source_port},
        "filter": "MSH-9.1 == ORU",
        "destinations": [
            {"name": "archive", "to": {"type": "file", "directory": str(archive)}},
            {"name": "dead", "to": {"type": "mllp", "host": "127.0.0.1", "port": free_port(),
                                    "connect_timeout_seconds": 1, "reconnect_max_seconds": 1},
             "retry": {"initial_seconds": 0.2, "max_seconds": 1, "jitter": 0,
                       "max_attempts": None}},
            {"name": "bounce", "to": {"type": "mllp", "host": "127.0.0.1",
                                      "port": free_port(), "connect_timeout_seconds": 1},
             "retry": {"initial_seconds": 0.1, "max_attempts": 1}, "on_exhausted": "skip"},
        ],
    }
    (directory / "vitals.yaml").write_text(json.dumps(config))


def test_metrics_health_and_json_logs_follow_the_traffic(tmp_path: Path) -> None:
    """Counters, queue depth and age, latencies and connections move with what was sent;
    /readyz turns ready once a channel is deployed; logs are JSON with ids, no content."""
    channels, archive = tmp_path / "channels", tmp_path / "archive"
    channels.mkdir()
    engine_file = tmp_path / "interlink.yaml"
    engine_file.write_text(json.dumps({
        "log_format": "json",
        "alerts": {"check_seconds": 1, "rules": [
            {"name": "dead-backlog", "type": "queue_depth", "destination": "dead",
             "threshold": 3}]},
    }))
    engine = start_engine(tmp_path / "data", config=engine_file, channels=channels)
    try:
        assert get(engine, "healthz")[0] == 200
        status, body = get(engine, "readyz")
        assert (status, json.loads(body)["reason"]) == (503, "no channels deployed")

        source = free_port()
        channel_file(channels, source, archive)
        engine.proc.send_signal(signal.SIGHUP)
        wait_for_port(source, engine.proc)
        wait_until(lambda: get(engine, "readyz")[0] == 200, "/readyz to turn ready")

        vitals = (("channel", "vitals"),)
        with socket.create_connection(("127.0.0.1", source)) as sock:
            answers = [send_and_receive(sock, m) for m in
                       (oru("M-1"), oru("M-2"), adt("A-1"), oru("M-3"), oru("M-1"))]
            assert [msa(a)[1] for a in answers] == [b"AA"] * 5
            assert samples(engine)[("interlink_mllp_connections_open", vitals)] == 1
        wait_until(lambda: samples(engine)[("interlink_mllp_connections_open", vitals)] == 0,
                   "the connection to be counted closed")

        dead = (("channel", "vitals"), ("destination", "dead"))
        archived = (("channel", "vitals"), ("destination", "archive"))
        bounced = (("channel", "vitals"), ("destination", "bounce"))

        def settled() -> dict[Any, float] | None:
            s = samples(engine)
            ready = (s.get(("interlink_deliveries_sent_total", archived)) == 3
                     and s.get(("interlink_queue_depth", dead)) == 3
                     and s.get(("interlink_deliveries_errored_total", bounced)) == 3
                     and s.get(("interlink_queue_depth", bounced)) == 0
                     and s.get(("interlink_delivery_attempts_failed_total", dead), 0) >= 2)
            return s if ready else None

        s = wait_until(settled, "deliveries and the queue snapshot")
        assert s[("interlink_messages_received_total", vitals)] == 5
        assert s[("interlink_messages_filtered_total", vitals)] == 1
        assert s[("interlink_messages_duplicates_total", vitals)] == 1
        assert s[("interlink_messages_errored_total", vitals)] == 3
        assert s[("interlink_deliveries_sent_total", dead)] == 0
        assert s[("interlink_queue_depth", archived)] == 0
        assert s[("interlink_queue_oldest_age_seconds", dead)] > 0
        assert s[("interlink_destination_consecutive_failures", dead)] >= 2
        assert s[("interlink_ack_latency_seconds_count", vitals)] == 5
        assert s[("interlink_delivery_latency_seconds_count", archived)] == 3

        listing = engine.run_cli("channels", "list", "--json")
        assert listing.returncode == 0, listing.stderr
        answer = json.loads(listing.stdout)
        assert "since" in answer
        (channel,) = [c for c in answer["channels"] if c["name"] == "vitals"]
        assert channel["counters"] == {"received": 5, "filtered": 1, "sent": 3,
                                       "errored": 3, "duplicates": 1}
        by_name = {d["name"]: d for d in channel["destinations"]}
        assert (by_name["dead"]["queued"], by_name["dead"]["sent"]) == (3, 0)
        assert by_name["dead"]["oldest_queued_age_seconds"] > 0
        assert (by_name["archive"]["queued"], by_name["archive"]["sent"]) == (0, 3)
        assert (by_name["bounce"]["queued"], by_name["bounce"]["errored"]) == (0, 3)

        def alert_logged() -> bool:
            return any(r.get("rule") == "dead-backlog" and r.get("alert_state") == "firing"
                       for r in log_records(engine))

        wait_until(alert_logged, "the queue alert in the log")

        exposed = {name for name, _ in samples(engine)}
        queried = dashboard_metric_names()
        assert len(queried) >= 10
        assert queried <= exposed, f"the dashboard queries unknown metrics: {queried - exposed}"
    finally:
        assert engine.stop() == 0

    records = log_records(engine)
    assert records and all({"time", "level", "namespace", "event"} <= set(r) for r in records)
    assert any(r.get("channel") == "vitals" for r in records)
    assert any(r.get("destination") == "bounce" and "message_id" in r for r in records)
    text = engine.log.read_text()
    for secret in (PATIENT_NAME, PATIENT_ID, "OBX", "MDC_PULS_OXIM_SAT_O2"):
        assert secret not in text


def log_records(engine: EngineProcess) -> list[dict[str, Any]]:
    """Every line of the engine's output, each of which must be one JSON object."""
    return [json.loads(line) for line in engine.log.read_text().splitlines() if line.strip()]


def dashboard_metric_names() -> set[str]:
    """Every metric name the Grafana dashboard's queries and variables mention."""
    dashboard = json.loads((REPO / "conf" / "grafana" / "interlink.json").read_text())
    queries: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key in ("expr", "definition") and isinstance(value, str):
                    queries.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(dashboard)
    return {name for q in queries for name in re.findall(r"\binterlink_[a-z_]+\b", q)}


def test_metrics_can_require_an_api_token(tmp_path: Path) -> None:
    """With access.metrics_require_token, /metrics answers 401 without a token or with a
    wrong one, and the registry to a token of any role; the health checks stay open."""
    config = tmp_path / "interlink.yaml"
    config.write_text("access: {metrics_require_token: true}\n")
    engine = start_engine(tmp_path / "data", config=config)
    try:
        assert engine.api("POST", "users", {"name": "scraper", "role": "viewer",
                                            "password": "scraper-pass-1"})[0] == 201
        status, created = engine.api("POST", "tokens", {"name": "prometheus",
                                                        "user": "scraper"})
        assert status == 201, created
        url = f"http://127.0.0.1:{engine.admin_port}/metrics"
        for headers in ({}, {"authorization": "Bearer il_not-a-token"}):
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(urllib.request.Request(url, headers=headers),
                                       timeout=10)
            assert refused.value.code == 401
            assert refused.value.headers["www-authenticate"].startswith("Bearer")
        scrape = urllib.request.Request(
            url, headers={"authorization": f"Bearer {created['token']}"})
        with urllib.request.urlopen(scrape, timeout=10) as answer:
            names = {f.name for f in text_string_to_metric_families(answer.read().decode())}
        assert "interlink_messages_received" in names
        assert get(engine, "healthz")[0] == 200
    finally:
        assert engine.stop() == 0
